//! `latchkey example-idp`: the whole SSO flow on one machine, two real processes.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

/// `latchkey example-idp --secret S --site SITE --listen 127.0.0.1:0`.
fn start_idp(secret: &str, site: &str) -> Proc {
    Proc::start(command(&[
        "example-idp",
        "--secret",
        secret,
        "--site",
        site,
        "--listen",
        "127.0.0.1:0",
    ]))
}

/// Creates a group through the API as the admin; returns its id.
async fn create_group(server: &Proc, name: &str) -> i64 {
    let res = password_login(server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let session = body_json(res).await["id"]
        .as_str()
        .expect("session id")
        .to_owned();
    let res = client()
        .post(server.url("/api/permissions/group"))
        .header("X-Latchkey-Session", session)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create group");
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await["id"].as_i64().expect("group id")
}

cli_both_backends! {
    async fn the_whole_flow_through_the_example_idp(db) {
        let server = Proc::serve(&db);
        let idp = start_idp(SECRET, &server.base);
        assert_ne!(idp.addr, server.addr);

        admin_create(&db, ADMIN_EMAIL, ADMIN_PASSWORD).success();
        let eng = create_group(&server, "Engineering").await;
        settings_set(&db, "jwt-group-sync", "true").success();
        settings_set(&db, "jwt-group-mappings", &format!(r#"{{"eng":[{eng}]}}"#)).success();
        // jwt-enabled is written last: once the server sees it, it has the rest too.
        configure_jwt(&db, &idp.url("/login"), SECRET);
        wait_for_property(&server, "jwt_enabled", json!(true), SETTING_PROPAGATION).await;

        // 1. Start: Latchkey sends the browser to the IdP.
        let res = client()
            .get(server.url("/auth/sso?redirect=/"))
            .send()
            .await
            .expect("sso start");
        assert_eq!(res.status(), StatusCode::FOUND);
        let to_idp = location(&res);
        assert_eq!(to_idp, format!("{}?return_to=%2F", idp.url("/login")));

        // 2. The IdP's form keeps return_to.
        let res = client().get(&to_idp).send().await.expect("idp form");
        assert_eq!(res.status(), StatusCode::OK);
        let html = res.text().await.expect("form html");
        for field in ["email", "first_name", "last_name", "groups", "return_to"] {
            assert!(html.contains(&format!("name=\"{field}\"")), "field {field} in {html}");
        }
        assert!(html.contains("action=\"/login\""), "{html}");
        assert!(html.contains("value=\"/\""), "return_to kept: {html}");

        // 3. Submitting it sends the browser back with a token.
        let res = client()
            .post(idp.url("/login"))
            .form(&[
                ("email", "Lin@Example.com"),
                ("first_name", "Lin"),
                ("last_name", "Okafor"),
                ("groups", "eng, other"),
                ("return_to", "/"),
            ])
            .send()
            .await
            .expect("idp submit");
        assert_eq!(res.status(), StatusCode::FOUND);
        let back = location(&res);
        let prefix = format!("{}/auth/sso?jwt=", server.base);
        assert!(back.starts_with(&prefix), "{back}");
        assert!(back.ends_with("&return_to=%2F"), "{back}");
        let token = &back[prefix.len()..back.len() - "&return_to=%2F".len()];
        assert_signed_with(token, SECRET);
        let (_, claims) = decode_jwt(token);
        assert_eq!(claims["groups"], json!(["eng", "other"]));

        // 4. The callback signs Lin in.
        let res = client().get(&back).send().await.expect("sso callback");
        assert_redirects_to(&res, &server, "/");
        let cookie = session_cookie(&res).expect("latchkey.session cookie");

        let me = current_user(&server, &cookie).await;
        assert_eq!(me["email"], json!("lin@example.com"));
        assert_eq!(me["first_name"], json!("Lin"));
        assert_eq!(me["last_name"], json!("Okafor"));
        assert_eq!(me["sso_source"], json!("jwt"));
        assert_eq!(me["is_superuser"], json!(false));
        let groups = me["groups"].as_array().expect("groups");
        assert!(
            groups.iter().any(|g| g["id"] == json!(eng) && g["name"] == json!("Engineering")),
            "mapped group in {me}"
        );
        assert!(me["group_ids"].as_array().expect("group ids").contains(&json!(eng)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idp_form_works_without_return_to_and_needs_an_email() {
    let site = "http://127.0.0.1:9";
    let idp = start_idp(SECRET, site);
    for path in ["/", "/login"] {
        let res = client().get(idp.url(path)).send().await.expect("form");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let html = res.text().await.expect("html");
        assert!(html.contains("name=\"email\""), "{html}");
    }
    let res = client()
        .post(idp.url("/login"))
        .form(&[("email", "x@example.com")])
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), StatusCode::FOUND);
    let back = location(&res);
    assert!(back.starts_with(&format!("{site}/auth/sso?jwt=")), "{back}");
    assert!(!back.contains("return_to"), "{back}");

    let res = client()
        .post(idp.url("/login"))
        .form(&[("email", "  ")])
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idp_refuses_a_short_secret() {
    let out = run(&[
        "example-idp",
        "--secret",
        "short",
        "--listen",
        "127.0.0.1:0",
    ])
    .failure();
    assert!(out.stderr.contains("32"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idp_refuses_a_site_that_is_not_an_http_address() {
    for site in [
        "localhost:3000",
        "ftp://example.com",
        "http://",
        "http://x/?q=1",
        "not a url",
    ] {
        let out = run(&[
            "example-idp",
            "--secret",
            SECRET,
            "--site",
            site,
            "--listen",
            "127.0.0.1:0",
        ])
        .failure();
        assert!(out.stderr.contains("--site"), "{site}: {out:#?}");
    }
}
