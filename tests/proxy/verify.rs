//! `GET /auth/verify` at the API level (SPEC §6), on both backends.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

/// The origin of an app behind the proxy, allowed as a redirect target.
const APP: &str = "http://app.example:8080";

both_backends! {
    async fn verify_without_a_session_is_401_unauthenticated(app) {
        let res = app.client.get(app.url("/auth/verify")).send().await.unwrap();
        assert_eq!(header(&res, "cache-control"), Some("no-store"));
        assert!(res.headers().get("location").is_none());
        assert!(res.headers().get("x-latchkey-email").is_none());
        assert_error(res, 401, "unauthenticated").await;

        // An unknown or malformed token is no better.
        for token in ["nope", &"x".repeat(300)] {
            let res = app.as_user(token, Method::GET, "/auth/verify").send().await.unwrap();
            assert_error(res, 401, "unauthenticated").await;
        }
        let res = app.client.get(app.url("/auth/verify")).header("cookie", "latchkey.session=nope").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
    }

    async fn verify_answers_a_session_with_identity_headers(mut app) {
        app.login_admin().await;
        let (id, token) = named_user(&app, "ada@example.com", "Ada", "Lövelace").await;
        let ops = create_group(&app, "Ops, EU").await;
        let pct = create_group(&app, "100% real").await;
        add_to_group(&app, id, ops).await;
        add_to_group(&app, id, pct).await;

        // By header, by cookie, and whatever the method (nginx keeps the original one).
        let by_header = app.as_user(&token, Method::GET, "/auth/verify").send().await.unwrap();
        let by_cookie = app.client.get(app.url("/auth/verify"))
            .header("cookie", format!("other=1; latchkey.session={token}"))
            .send().await.unwrap();
        let by_post = app.client.post(app.url("/auth/verify"))
            .header("cookie", format!("latchkey.session={token}"))
            .send().await.unwrap();
        for res in [by_header, by_cookie, by_post] {
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(header(&res, "cache-control"), Some("no-store"));
            assert_eq!(header(&res, "x-latchkey-user-id"), Some(id.to_string().as_str()));
            assert_eq!(header(&res, "x-latchkey-email"), Some("ada@example.com"));
            assert_eq!(header(&res, "x-latchkey-name"), Some("Ada L%C3%B6velace"));
            assert_eq!(
                header(&res, "x-latchkey-groups"),
                Some("All Users,Ops%2C EU,100%25 real"),
            );
        }

        // Without names the name is the email.
        app.create_user("nameless@example.com", Some("password123"), false).await;
        let token = app.login("nameless@example.com", "password123").await;
        let res = app.as_user(&token, Method::GET, "/auth/verify").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, "x-latchkey-name"), Some("nameless@example.com"));
        assert_eq!(header(&res, "x-latchkey-groups"), Some("All Users"));
    }

    async fn verify_refuses_ended_sessions_and_deactivated_users(mut app) {
        app.login_admin().await;
        let (id, token) = named_user(&app, "gone@example.com", "Gone", "Soon").await;
        let res = app.as_user(&token, Method::GET, "/auth/verify").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}")).send().await.unwrap();
        assert!(res.status().is_success());
        let res = app.as_user(&token, Method::GET, "/auth/verify").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;

        app.create_user("out@example.com", Some("password123"), false).await;
        let token = app.login("out@example.com", "password123").await;
        let res = app.as_user(&token, Method::DELETE, "/api/session").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.as_user(&token, Method::GET, "/auth/verify").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
    }

    async fn verify_with_rd_redirects_to_the_login_page(mut app) {
        app.login_admin().await;
        put_settings(&app, json!({"site-url": app.base, "redirect-allowed-origins": [APP]})).await;

        let target = format!("{APP}/dash/1?a=1&b=two words");
        let res = app.client.get(app.url("/auth/verify")).query(&[("rd", target.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(header(&res, "cache-control"), Some("no-store"));
        let login = location(&res);
        assert_eq!(redirect_param(&login), format!("{APP}/dash/1?a=1&b=two%20words"));
        assert!(login.starts_with(&format!("{}/auth/login?redirect=http%3A%2F%2Fapp.example%3A8080%2F", app.base)), "{login}");

        // A path is on Latchkey's own site.
        let res = app.client.get(app.url("/auth/verify?rd=/somewhere")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(redirect_param(&location(&res)), format!("{}/somewhere", app.base));

        // Other origins, tricks and other schemes are refused.
        for rd in ["https://evil.example/", "http://app.example:8081/", "//evil.example", "javascript:alert(1)", "http://app.example:8080@evil.example/"] {
            let res = app.client.get(app.url("/auth/verify")).query(&[("rd", rd)]).send().await.unwrap();
            assert_eq!(header(&res, "cache-control"), Some("no-store"), "{rd}");
            assert!(res.headers().get("location").is_none(), "{rd}");
            assert_error(res, 400, "invalid_redirect").await;
        }

        // With a session, rd does not matter.
        let token = app.admin_token.clone().unwrap();
        let res = app.as_user(&token, Method::GET, "/auth/verify?rd=https://evil.example/").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn verify_reads_the_page_from_traefik_and_caddy_headers(mut app) {
        app.login_admin().await;
        put_settings(&app, json!({"site-url": app.base, "redirect-allowed-origins": [APP]})).await;
        let forwarded = |accept: &'static str| {
            app.client.get(app.url("/auth/verify"))
                .header("accept", accept)
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "app.example:8080")
                .header("x-forwarded-uri", "/reports?id=7&x=%2F")
                .header("x-forwarded-method", "GET")
        };
        // A browser is sent to the sign-in page (Traefik and Caddy hand our answer over).
        let res = forwarded("text/html,application/xhtml+xml,*/*;q=0.8").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(header(&res, "cache-control"), Some("no-store"));
        assert_eq!(location(&res), login_url_for(&app.base, &format!("{APP}/reports?id=7&x=%2F")));

        // Media types in any case, and XHTML, are HTML too.
        for accept in ["TEXT/HTML", "application/xhtml+xml"] {
            assert_eq!(forwarded(accept).send().await.unwrap().status(), StatusCode::FOUND, "{accept}");
        }
        // An API client gets a plain 401, as does one that refuses HTML (q=0) or takes anything.
        for accept in ["application/json", "text/html;q=0, application/json", "*/*"] {
            let res = forwarded(accept).send().await.unwrap();
            assert!(res.headers().get("location").is_none(), "{accept}");
            assert_error(res, 401, "unauthenticated").await;
        }

        // A host that is not allowed is a configuration mistake, said out loud.
        let res = app.client.get(app.url("/auth/verify"))
            .header("accept", "text/html")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "evil.example")
            .header("x-forwarded-uri", "/")
            .send().await.unwrap();
        assert_html_error(res, 400, "invalid_redirect").await;
    }

    async fn verify_puts_the_login_url_on_the_401_for_nginx(mut app) {
        app.login_admin().await;
        put_settings(&app, json!({"site-url": app.base, "redirect-allowed-origins": [APP]})).await;
        let original = format!("{APP}/a/b?c=1&d=2");
        let res = app.client.get(app.url("/auth/verify"))
            .header("accept", "text/html")
            .header("x-original-url", &original)
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&res, "cache-control"), Some("no-store"));
        assert_eq!(location(&res), login_url_for(&app.base, &original));

        // Not a browser: no sign-in URL, so nginx answers 401 too.
        let res = app.client.get(app.url("/auth/verify"))
            .header("accept", "application/json")
            .header("x-original-url", &original)
            .send().await.unwrap();
        assert!(res.headers().get("location").is_none());
        assert_error(res, 401, "unauthenticated").await;

        let res = app.client.get(app.url("/auth/verify"))
            .header("accept", "text/html")
            .header("x-original-url", "http://evil.example/")
            .send().await.unwrap();
        assert_html_error(res, 400, "invalid_redirect").await;
    }

    async fn verify_sends_ordinary_app_urls_on_an_allowed_origin_to_sign_in(mut app) {
        app.login_admin().await;
        put_settings(&app, json!({"site-url": app.base, "redirect-allowed-origins": [APP]})).await;
        // Pages an app really serves whose full URL the redirect check refuses: what a GET
        // form with a textarea sends (encoded CR, LF and tab in the query), a URL over
        // 2048 bytes, a path a later hop could decode into `..`. The way back keeps the
        // path when the path alone is safe, else the origin's root; never a 400, which
        // nginx would turn into a 500.
        let cases = [
            ("/search?q=line1%0D%0Aline2%09end".to_owned(), format!("{APP}/search")),
            (format!("/reports/7?data={}", "x".repeat(3000)), format!("{APP}/reports/7")),
            (format!("/{}?a=1", "p".repeat(3000)), format!("{APP}/")),
            ("/a/%252e%252e/b?x=1".to_owned(), format!("{APP}/")),
            // A raw backslash in the query, which browsers send unencoded there.
            ("/search?p=C:\\Users".to_owned(), format!("{APP}/search")),
        ];
        for (page, back) in &cases {
            let wanted = format!("{APP}{page}");
            let login = login_url_for(&app.base, back);

            // nginx: 401 with the sign-in URL.
            let res = app.client.get(app.url("/auth/verify"))
                .header("accept", "text/html")
                .header("x-original-url", &wanted)
                .send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{page}");
            assert_eq!(header(&res, "cache-control"), Some("no-store"));
            assert_eq!(location(&res), login, "{page}");

            // Traefik and Caddy: a 302.
            let res = app.client.get(app.url("/auth/verify"))
                .header("accept", "text/html")
                .header("x-forwarded-proto", "http")
                .header("x-forwarded-host", "app.example:8080")
                .header("x-forwarded-uri", page.as_str())
                .send().await.unwrap();
            assert_eq!(res.status(), StatusCode::FOUND, "{page}");
            assert_eq!(location(&res), login, "{page}");

            // rd: a 302 as well.
            let res = app.client.get(app.url("/auth/verify")).query(&[("rd", wanted.as_str())]).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::FOUND, "{page}");
            assert_eq!(location(&res), login, "{page}");

            // The sign-in form accepts the way back it is given.
            let res = app.client.get(&login).header("accept", "text/html").send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{page}");
        }

        // A path on Latchkey's own site falls back the same way.
        let res = app.client.get(app.url("/auth/verify?rd=%2Fsearch%3Fq%3Da%250Ab")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), login_url_for(&app.base, &format!("{}/search", app.base)));

        // An origin that is not allowed is still refused, whatever its query.
        for wanted in ["http://evil.example/search?q=a%0D%0Ab", "http://app.example:8081/search?q=a%0Ab"] {
            let res = app.client.get(app.url("/auth/verify"))
                .header("accept", "text/html")
                .header("x-original-url", wanted)
                .send().await.unwrap();
            assert!(res.headers().get("location").is_none(), "{wanted}");
            assert_html_error(res, 400, "invalid_redirect").await;
            let res = app.client.get(app.url("/auth/verify")).query(&[("rd", wanted)]).send().await.unwrap();
            assert_error(res, 400, "invalid_redirect").await;
        }
        // So is a target that is malformed rather than merely strict-checked: userinfo, a
        // raw control character, a backslash.
        for rd in ["http://u:p@app.example:8080/x?q=%0A".to_owned(), format!("{APP}/x\\y?q=%0A"), format!("{APP}/x\ty?q=%0A")] {
            let res = app.client.get(app.url("/auth/verify")).query(&[("rd", rd.as_str())]).send().await.unwrap();
            assert_error(res, 400, "invalid_redirect").await;
        }
    }

    async fn verify_without_site_url_uses_its_own_address(app) {
        // No site-url: targets on the request's own origin only, and the login URL too.
        let res = app.client.get(app.url("/auth/verify?rd=/x")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), login_url_for(&app.base, &format!("{}/x", app.base)));
        let res = app.client.get(app.url("/auth/verify")).query(&[("rd", format!("{APP}/"))]).send().await.unwrap();
        assert_error(res, 400, "invalid_redirect").await;
    }
}
