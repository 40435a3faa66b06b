//! The start step and the callback (SPEC §4.1, §4.2, §4.6, §4.7): where people are sent,
//! the three transports, the JSON answer, the cookie and the headers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

async fn start(app: &TestApp, redirect: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/auth/sso"));
    if let Some(r) = redirect {
        req = req.query(&[("redirect", r)]);
    }
    req.send().await.expect("start")
}

both_backends! {
    async fn start_sends_the_browser_to_the_idp_with_return_to_percent_encoded(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        let res = start(&app, Some("/dashboard/1?x=1&y=2")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_sso_headers(res.headers(), "start");
        assert!(res.headers().get("set-cookie").is_none());
        assert_eq!(location(&res), format!("{IDP}?return_to=%2Fdashboard%2F1%3Fx%3D1%26y%3D2"));

        // a redirect that smuggles `&jwt=` and `#` stays one encoded parameter.
        let res = start(&app, Some("/a&jwt=x#y")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let loc = url::Url::parse(&location(&res)).unwrap();
        let pairs: Vec<(String, String)> = loc.query_pairs().into_owned().collect();
        assert_eq!(pairs, vec![("return_to".to_owned(), "/a&jwt=x#y".to_owned())]);
        assert_eq!(loc.fragment(), None, "the fragment is inside return_to, not on the IdP URL");
        assert_nothing_written(&app, &before, "start").await;
        assert_eq!(Counts::of(&app).await.audit_events, before.audit_events);
    }

    async fn start_appends_return_to_with_an_ampersand_when_the_idp_uri_has_a_query(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_setting("jwt-identity-provider-uri", json!("https://idp.example/login?tenant=acme")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = start(&app, Some("/x")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "https://idp.example/login?tenant=acme&return_to=%2Fx");
        let res = start(&app, None).await;
        assert_eq!(location(&res), "https://idp.example/login?tenant=acme");
    }

    async fn start_without_redirect_sends_no_return_to(mut app) {
        sso_ready(&mut app).await;
        let res = start(&app, None).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), IDP);
        let res = start(&app, Some("")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), IDP, "an empty redirect is no redirect");
    }

    async fn start_keeps_allowed_absolute_targets_and_relativises_own_ones(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_settings(json!({
            "site-url": "https://latchkey.example.com",
            "redirect-allowed-origins": ["https://app.example"],
        })).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = start(&app, Some("https://latchkey.example.com/reports?id=7")).await;
        assert_eq!(location(&res), format!("{IDP}?return_to=%2Freports%3Fid%3D7"));
        let res = start(&app, Some("https://app.example/inbox")).await;
        assert_eq!(location(&res), format!("{IDP}?return_to=https%3A%2F%2Fapp.example%2Finbox"));
    }

    async fn start_when_sso_is_not_configured_is_400_sso_not_configured(mut app) {
        app.login_admin().await;
        let before = Counts::of(&app).await;
        let res = start(&app, Some("/x")).await;
        assert_sso_headers(res.headers(), "start, not configured");
        assert_error(res, 400, "sso_not_configured").await;
        // Enabled with an IdP but no key: still not configured.
        let res = app.put_settings(json!({"jwt-enabled": true, "jwt-identity-provider-uri": IDP})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(start(&app, None).await, 400, "sso_not_configured").await;
        // Complete but switched off.
        app.configure_jwt().await;
        assert_eq!(start(&app, None).await.status(), StatusCode::FOUND);
        let res = app.put_setting("jwt-enabled", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(start(&app, None).await, 400, "sso_not_configured").await;
        assert_nothing_written(&app, &before, "start, not configured").await;
    }

    async fn start_with_a_bad_redirect_is_400_invalid_redirect(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        for bad in [
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/\t/evil.example",
            "https:///evil.example",
            "http://127.0.0.1.evil.example/",
        ] {
            let res = start(&app, Some(bad)).await;
            assert_sso_headers(res.headers(), bad);
            let body = assert_error(res, 400, "invalid_redirect").await;
            assert!(!body.to_string().contains("evil"), "the input is not echoed: {body}");
        }
        assert_nothing_written(&app, &before, "bad redirects").await;
    }

    async fn callback_get_redirects_to_return_to_with_a_session_cookie(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        let res = app.sso_callback(&sign(login_claims("ann@example.com")), Some("/dashboard/1?x=1#frag")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_sso_headers(res.headers(), "GET callback");
        assert_eq!(location(&res), "/dashboard/1?x=1#frag");
        let cookie = set_cookie(&res).expect("Set-Cookie");
        assert!(cookie.starts_with("latchkey.session="), "{cookie}");
        let attrs: Vec<&str> = cookie.split("; ").skip(1).collect();
        for want in ["HttpOnly", "Path=/", "SameSite=Lax", "Max-Age=1209600"] {
            assert!(attrs.contains(&want), "{want} in {cookie}");
        }
        assert!(!attrs.contains(&"Secure"), "plain http without site-url: no Secure ({cookie})");
        let token = cookie_token(&cookie);
        assert_eq!(token.len(), 54, "issue time and 256 random bits, base64url");
        let after = Counts::of(&app).await;
        assert_eq!(after.users, before.users + 1);
        assert_eq!(after.sessions, before.sessions + 1);
        assert_eq!(after.replay_records, before.replay_records + 1);

        // The cookie alone authenticates.
        let res = app.client.get(app.url("/api/user/current")).header("cookie", format!("latchkey.session={token}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await["email"], json!("ann@example.com"));
    }

    async fn callback_sends_the_reserialised_target_and_defaults_to_the_site_root(mut app) {
        sso_ready(&mut app).await;
        let res = app.sso_callback(&sign(login_claims("a@example.com")), Some("/a/./b/../c?q=a b")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        // A relative target gets a relative, re-serialised answer (as Metabase answers).
        assert_eq!(location(&res), "/a/c?q=a%20b");
        let res = app.sso_callback(&sign(login_claims("a@example.com")), None).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "/");
        let res = app.sso_callback(&sign(login_claims("a@example.com")), Some(&format!("{}/abs?x=1", app.base))).await;
        assert_eq!(location(&res), format!("{}/abs?x=1", app.base));
    }

    async fn callback_with_site_url_redirects_there_and_marks_the_cookie_secure(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_setting("site-url", json!("https://latchkey.example.com")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.sso_callback(&sign(login_claims("s@example.com")), Some("/x?y=1")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "/x?y=1");
        let cookie = set_cookie(&res).unwrap();
        assert!(cookie.split("; ").any(|a| a == "Secure"), "{cookie}");
        let res = app.sso_callback(&sign(login_claims("s@example.com")), None).await;
        assert_eq!(location(&res), "/");
        let res = app.sso_callback(&sign(login_claims("s@example.com")), Some("https://latchkey.example.com/abs")).await;
        assert_eq!(location(&res), "https://latchkey.example.com/abs");
        // The request's own origin is no longer ours once site-url says otherwise.
        let before = Counts::of(&app).await;
        let res = app.sso_callback(&sign(login_claims("s@example.com")), Some(&format!("{}/x", app.base))).await;
        assert_error(res, 400, "invalid_redirect").await;
        assert_nothing_written(&app, &before, "other origin").await;
    }

    async fn callback_over_forwarded_https_marks_the_cookie_secure(mut app) {
        sso_ready(&mut app).await;
        let res = app.client.get(app.url("/auth/sso"))
            .query(&[("jwt", sign(login_claims("f@example.com")))])
            .header("x-forwarded-proto", "https")
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert!(set_cookie(&res).unwrap().split("; ").any(|a| a == "Secure"));
        assert_eq!(location(&res), "/");
    }

    async fn callback_post_with_a_form_body_logs_in(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("form@example.com"));
        let res = app.client.post(app.url("/auth/sso"))
            .form(&[("jwt", token.as_str()), ("return_to", "/from-form")])
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_sso_headers(res.headers(), "form POST");
        assert_eq!(location(&res), "/from-form");
        let session = cookie_token(&set_cookie(&res).unwrap());
        assert_eq!(me(&app, &session).await["email"], json!("form@example.com"));
        assert_eq!(app.count("sessions").await, 2, "the admin's and this one");
    }

    async fn callback_post_with_a_json_body_logs_in(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("json@example.com"));
        let res = app.client.post(app.url("/auth/sso"))
            .json(&json!({"jwt": token, "return_to": "/from-json"}))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_sso_headers(res.headers(), "JSON POST");
        assert_eq!(location(&res), "/from-json");
        let session = cookie_token(&set_cookie(&res).unwrap());
        assert_eq!(me(&app, &session).await["email"], json!("json@example.com"));

        // Media types are case-insensitive: `Application/JSON; charset=UTF-8` is JSON too.
        let token = sign(login_claims("json-case@example.com"));
        let res = app.client.post(app.url("/auth/sso"))
            .header("content-type", "Application/JSON; charset=UTF-8")
            .body(json!({"jwt": token, "return_to": "/from-json"}).to_string())
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "/from-json");
        let session = cookie_token(&set_cookie(&res).unwrap());
        assert_eq!(me(&app, &session).await["email"], json!("json-case@example.com"));

        // A JSON body with the wrong types is a 400 naming the field, and writes nothing.
        let before = Counts::of(&app).await;
        let res = app.client.post(app.url("/auth/sso")).json(&json!({"jwt": 42})).send().await.unwrap();
        assert_sso_headers(res.headers(), "bad JSON POST");
        let body = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("jwt"));
        assert_nothing_written(&app, &before, "bad JSON POST").await;
        // JSON that is not an object is a 400 too, not a start of the flow (302 to the IdP),
        // and the token in it stays unused.
        let token = sign(login_claims("array@example.com"));
        for bad in [json!([token]), json!(token), json!(5), json!(null)] {
            let res = app.client.post(app.url("/auth/sso")).json(&bad).send().await.unwrap();
            assert_sso_headers(res.headers(), "non-object JSON POST");
            let body = assert_error(res, 400, "validation_failed").await;
            assert_eq!(body["field"], json!("body"));
        }
        assert_nothing_written(&app, &before, "non-object JSON POST").await;
        // A POST without a token is not a start of the flow either.
        let form = app.client.post(app.url("/auth/sso")).form(&[("return_to", "https://evil.example/")]);
        let json = app.client.post(app.url("/auth/sso")).json(&json!({"return_to": "/x"}));
        for req in [form, json] {
            let res = req.send().await.unwrap();
            assert_sso_headers(res.headers(), "POST without jwt");
            let body = assert_error(res, 400, "validation_failed").await;
            assert_eq!(body["field"], json!("jwt"));
        }
        let res = app.client.post(app.url("/auth/sso")).json(&json!({"jwt": token})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND, "the token was not consumed");
    }

    async fn callback_with_accept_json_answers_the_session_and_the_user(mut app) {
        sso_ready(&mut app).await;
        let claims = json!({"email": "Jo@Example.com", "first_name": "Jo", "iat": now(), "jti": "json-1"});
        let res = sso_json(&app, &sign(claims)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_sso_headers(res.headers(), "JSON callback");
        let cookie = set_cookie(&res).expect("cookie too");
        let body = body_json(res).await;
        let id = body["id"].as_str().unwrap();
        assert_eq!(cookie_token(&cookie), id, "the cookie carries the same session");
        assert_eq!(body["user"]["email"], json!("jo@example.com"));
        assert_eq!(body["user"]["first_name"], json!("Jo"));
        assert_eq!(body["user"]["sso_source"], json!("jwt"));
        assert_eq!(body["user"]["group_ids"], json!([1]));
        assert_eq!(me(&app, id).await["id"], body["user"]["id"]);

        // POST JSON asking for JSON too.
        let res = app.client.post(app.url("/auth/sso"))
            .header("accept", "application/json")
            .json(&json!({"jwt": sign(login_claims("jo@example.com"))}))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = body_json(res).await;
        let second = body["id"].as_str().unwrap();
        assert_ne!(second, id, "a new session");
        // A returning login answers the user as stored: names it did not carry are kept.
        assert_eq!(body["user"]["first_name"], json!("Jo"));
        assert_eq!(body["user"]["last_name"], json!(null));
        assert_eq!(body["user"], me(&app, second).await);
    }

    async fn the_session_shows_lowercased_email_names_attributes_and_groups(mut app) {
        sso_ready(&mut app).await;
        let claims = json!({
            "email": "Ada.Lovelace@Example.COM", "first_name": "Ada", "last_name": "Lovelace",
            "sub": "idp|42", "iss": "https://idp.example", "aud": "latchkey", "nbf": now() - 5,
            "iat": now(), "exp": now() + 60, "jti": "attrs-1",
            "groups": ["eng", "ops"], "department": "R&D", "level": 3, "tags": ["a", "b"],
        });
        let res = app.sso_callback(&sign(claims), Some("/")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let token = cookie_token(&set_cookie(&res).unwrap());
        let res = app.client.get(app.url("/api/user/current")).header("cookie", format!("latchkey.session={token}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let me = body_json(res).await;
        assert_eq!(me["email"], json!("ada.lovelace@example.com"));
        assert_eq!(me["first_name"], json!("Ada"));
        assert_eq!(me["last_name"], json!("Lovelace"));
        assert_eq!(me["login_attributes"], json!({"department": "R&D", "level": 3, "tags": ["a", "b"]}));
        assert_eq!(me["group_ids"], json!([1]));
        assert_eq!(me["groups"][0]["id"], json!(1));
        assert_eq!(me["is_superuser"], json!(false));
        assert_eq!(me["sso_source"], json!("jwt"));
        assert!(me["last_login"].is_string(), "last_login set: {me}");
        let stored = user_by_email(&app, "ada.lovelace@example.com").await;
        assert_eq!(stored.sso_subject.as_deref(), Some("idp|42"));
        assert!(!stored.has_password);
    }

    async fn every_login_issues_a_new_session(mut app) {
        sso_ready(&mut app).await;
        let res = app.sso_callback(&sign(login_claims("n@example.com")), None).await;
        let first = cookie_token(&set_cookie(&res).unwrap());
        // The browser still holds the first session when it signs in again.
        let res = app.client.get(app.url("/auth/sso"))
            .query(&[("jwt", sign(login_claims("n@example.com")))])
            .header("cookie", format!("latchkey.session={first}"))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        let second = cookie_token(&set_cookie(&res).expect("a new cookie"));
        assert_ne!(first, second, "never reuse the session from before login");
        // The browser's session was the same user's: it stays (another user's would end).
        assert_eq!(app.count("sessions").await, 3, "the admin's and two SSO sessions");
        assert!(session_works(&app, &first).await);
        assert!(session_works(&app, &second).await);
    }

    async fn errors_carry_no_referrer_and_no_store_and_html_for_browsers(mut app) {
        sso_ready(&mut app).await;
        let token = sign_with(login_claims("h@example.com"), OTHER_SECRET);
        let before = Counts::of(&app).await;
        let res = app.client.get(app.url("/auth/sso"))
            .query(&[("jwt", token.as_str())])
            .header("accept", "text/html,application/xhtml+xml")
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_sso_headers(res.headers(), "HTML error");
        let ct = res.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/html"), "{ct}");
        let request_id = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        let page = res.text().await.unwrap();
        assert!(page.contains("/auth/login"), "a Try again link");
        assert!(page.contains(&request_id), "the request id");
        assert!(!page.contains(&token) && !page.contains(token.rsplit('.').next().unwrap()), "no token on the page");
        // A referrer meta tag would replace the header's policy in browsers, and the page's
        // own requests (its style sheet, the Try again link) would carry the token's URL.
        assert!(!page.contains("name=\"referrer\""), "no referrer meta tag on the page");
        assert_nothing_written(&app, &before, "HTML error").await;
        // The router's own answers carry the headers too.
        let res = app.client.put(app.url("/auth/sso")).query(&[("jwt", token.as_str())]).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_sso_headers(res.headers(), "405");

        // Errors of the form and JSON transports carry the headers too.
        let res = app.client.post(app.url("/auth/sso")).form(&[("jwt", "x.y.z")]).send().await.unwrap();
        assert_sso_headers(res.headers(), "form error");
        assert_error(res, 401, "token_malformed").await;
        let res = app.client.post(app.url("/auth/sso")).json(&json!({"jwt": "x.y.z"})).send().await.unwrap();
        assert_sso_headers(res.headers(), "JSON error");
        assert_error(res, 401, "token_malformed").await;
    }

    async fn the_session_cookie_is_found_among_other_cookies(mut app) {
        sso_ready(&mut app).await;
        let res = app.sso_callback(&sign(login_claims("page@example.com")), Some("/")).await;
        let token = cookie_token(&set_cookie(&res).unwrap());
        let res = app.client.request(Method::GET, app.url("/api/user/current")).header("cookie", format!("a=b; latchkey.session={token}; c=d")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn with_repeated_return_to_the_first_one_is_validated_and_used(mut app) {
        sso_ready(&mut app).await;
        let url = |t: &str, a: &str, b: &str| format!("{}/auth/sso?jwt={t}&return_to={a}&return_to={b}", app.base);
        let token = sign(login_claims("dup@example.com"));
        let res = app.client.get(url(&token, "%2Fok", "%2F%2Fevil.example")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "/ok");
        let token = sign(login_claims("dup@example.com"));
        let before = Counts::of(&app).await;
        let res = app.client.get(url(&token, "%2F%2Fevil.example", "%2Fok")).send().await.unwrap();
        assert_error(res, 400, "invalid_redirect").await;
        assert_nothing_written(&app, &before, "evil first").await;
    }

    async fn the_cookie_follows_the_samesite_and_lifetime_settings(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_settings(json!({"session-cookie-samesite": "Strict", "session-max-age-minutes": 60})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.sso_callback(&sign(login_claims("c@example.com")), None).await;
        let cookie = set_cookie(&res).unwrap();
        let attrs: Vec<&str> = cookie.split("; ").collect();
        assert!(attrs.contains(&"SameSite=Strict") && attrs.contains(&"Max-Age=3600"), "{cookie}");
        assert!(!attrs.contains(&"Secure"), "{cookie}");
        let res = app.put_setting("session-cookie-samesite", json!("None")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.sso_callback(&sign(login_claims("c@example.com")), None).await;
        let cookie = set_cookie(&res).unwrap();
        let attrs: Vec<&str> = cookie.split("; ").collect();
        assert!(attrs.contains(&"SameSite=None") && attrs.contains(&"Secure"), "None forces Secure: {cookie}");
    }
}
