//! `latchkey token sign`: the claims, the signature, the configured secret, and signing in
//! with the result.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_with_a_secret_prints_an_hs256_token_with_the_claims() {
    let out = run(&[
        "token",
        "sign",
        "--email",
        "dev@example.com",
        "--groups",
        "a,b",
        "--claim",
        "dept=eng",
        "--claim",
        "level=3",
        "--claim",
        "tags=[\"x\",\"y\"]",
        "--secret",
        SECRET,
    ])
    .success();
    let token = out.line();
    assert_signed_with(&token, SECRET);
    let (header, payload) = decode_jwt(&token);
    assert_eq!(header["alg"], json!("HS256"));
    assert_eq!(payload["email"], json!("dev@example.com"));
    assert_eq!(payload["groups"], json!(["a", "b"]));
    assert_eq!(payload["dept"], json!("eng"));
    assert_eq!(payload["level"], json!(3), "a JSON claim value");
    assert_eq!(payload["tags"], json!(["x", "y"]));
    let iat = payload["iat"].as_i64().expect("numeric iat");
    assert!((iat - now()).abs() <= 5, "iat {iat} is now");
    let jti = payload["jti"].as_str().expect("string jti");
    assert!(jti.len() >= 16, "a random jti: {jti}");
    assert!(payload.get("exp").is_none_or(|e| e.is_number()));

    let other = run(&[
        "token",
        "sign",
        "--email",
        "dev@example.com",
        "--secret",
        SECRET,
    ])
    .success()
    .line();
    let (_, other) = decode_jwt(&other);
    assert_ne!(other["jti"], json!(jti), "each token has its own jti");
    assert!(other.get("groups").is_none(), "no --groups, no claim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_refuses_bad_arguments() {
    let out = run(&[
        "token",
        "sign",
        "--email",
        "a@b.example",
        "--claim",
        "novalue",
        "--secret",
        SECRET,
    ])
    .failure();
    assert!(out.stderr.contains("key=value"), "{out:#?}");

    let out = run(&[
        "token",
        "sign",
        "--email",
        "a@b.example",
        "--secret",
        "too short",
    ])
    .failure();
    assert!(
        out.stderr.contains("32"),
        "says the secret is too short: {out:#?}"
    );
    assert!(!out.stderr.contains("too short\""), "{out:#?}");

    // No --secret and nothing configured.
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, _) = sqlite_in(dir.path(), "t.db");
    run(&["migrate", "--database-url", &url]).success();
    let out = run(&[
        "token",
        "sign",
        "--email",
        "a@b.example",
        "--database-url",
        &url,
    ])
    .failure();
    assert!(out.stderr.contains("jwt-shared-secret"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_uses_the_configured_claim_names_issuer_and_audience_and_claims_may_replace_any() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, _) = sqlite_in(dir.path(), "t.db");
    for (key, value) in [
        ("jwt-shared-secret", SECRET),
        ("jwt-attribute-email", "mail"),
        ("jwt-attribute-groups", "roles"),
        ("jwt-issuer", "https://idp.example"),
        ("jwt-audience", "latchkey"),
    ] {
        run(&["settings", "set", key, value, "--database-url", &url]).success();
    }
    let token = run(&[
        "token",
        "sign",
        "--email",
        "pat@example.com",
        "--groups",
        "eng",
        "--claim",
        "iat=1700000000",
        "--claim",
        "jti=fixed",
        "--database-url",
        &url,
    ])
    .success()
    .line();
    assert_signed_with(&token, SECRET);
    let (_, payload) = decode_jwt(&token);
    assert_eq!(payload["mail"], json!("pat@example.com"));
    assert_eq!(payload["roles"], json!(["eng"]));
    assert!(
        payload.get("email").is_none() && payload.get("groups").is_none(),
        "{payload}"
    );
    assert_eq!(payload["iss"], json!("https://idp.example"));
    assert_eq!(payload["aud"], json!("latchkey"));
    assert_eq!(payload["iat"], json!(1_700_000_000), "--claim replaces iat");
    assert_eq!(payload["jti"], json!("fixed"), "--claim replaces jti");

    // With --secret, the default names, and no iss or aud.
    let token = run(&[
        "token",
        "sign",
        "--email",
        "pat@example.com",
        "--groups",
        "eng",
        "--secret",
        SECRET,
    ])
    .success()
    .line();
    let (_, payload) = decode_jwt(&token);
    assert_eq!(payload["email"], json!("pat@example.com"));
    assert_eq!(payload["groups"], json!(["eng"]));
    assert!(
        payload.get("iss").is_none() && payload.get("aud").is_none(),
        "{payload}"
    );

    // The secret in LATCHKEY_JWT_SHARED_SECRET is the server's own: the server's shape too.
    let other = "an-env-secret-of-at-least-32-characters!";
    let sign_with_env_secret = |url: &str| {
        let mut cmd = command(&[
            "token",
            "sign",
            "--email",
            "pat@example.com",
            "--database-url",
            url,
        ]);
        cmd.env("LATCHKEY_JWT_SHARED_SECRET", other);
        run_with(cmd, None).success()
    };
    let token = sign_with_env_secret(&url).line();
    assert_signed_with(&token, other);
    let (_, payload) = decode_jwt(&token);
    assert_eq!(payload["mail"], json!("pat@example.com"));
    assert_eq!(payload["iss"], json!("https://idp.example"));
    // With no database there, that secret and the defaults, said so.
    let missing = format!("sqlite://{}", dir.path().join("none.db").display());
    let out = sign_with_env_secret(&missing);
    assert!(out.stderr.contains("default claim names"), "{out:#?}");
    let (_, payload) = decode_jwt(&out.line());
    assert_eq!(payload["email"], json!("pat@example.com"));
    assert!(!dir.path().join("none.db").exists());
}

cli_both_backends! {
    async fn a_token_signed_with_the_configured_secret_signs_in(db) {
        let server = Proc::serve(&db);
        configure_jwt(&db, "https://idp.example/login", SECRET);
        wait_for_property(&server, "jwt_enabled", json!(true), SETTING_PROPAGATION).await;

        let token = run(&[
            "token", "sign", "--email", "Pat@Example.com", "--groups", "eng",
            "--claim", "dept=eng", "--database-url", &db.url,
        ])
        .success()
        .line();
        assert_signed_with(&token, SECRET);

        let res = client()
            .get(server.url("/auth/sso"))
            .query(&[("jwt", token.as_str()), ("return_to", "/welcome")])
            .send()
            .await
            .expect("sso callback");
        assert_redirects_to(&res, &server, "/welcome");
        let cookie = session_cookie(&res).expect("latchkey.session cookie");
        let me = current_user(&server, &cookie).await;
        assert_eq!(me["email"], json!("pat@example.com"));
        assert_eq!(me["sso_source"], json!("jwt"));
        assert_eq!(me["login_attributes"]["dept"], json!("eng"));

        // Single use.
        let res = client()
            .get(server.url("/auth/sso"))
            .header(reqwest::header::ACCEPT, "application/json")
            .query(&[("jwt", token.as_str())])
            .send()
            .await
            .expect("replay");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_json(res).await["error"], json!("token_replayed"));
    }
}
