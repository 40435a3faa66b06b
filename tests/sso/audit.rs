//! The audit trail of SSO (SPEC §2, §6): one `sso_login` row per attempt with its outcome
//! and reason code, tied to the response's request id, and never a token or the secret.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

both_backends! {
    async fn sso_logins_are_audited_with_outcome_reason_and_request_id(mut app) {
        sso_ready(&mut app).await;
        let res = app.sso_callback(&sign(login_claims("Aud@Example.com")), None).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let rid = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        let ok = &app.audit_events("kind=sso_login&outcome=success&limit=1").await[0];
        assert_eq!(ok["email"], json!("aud@example.com"));
        assert_eq!(ok["request_id"], json!(rid));
        assert_eq!(ok["ip"], json!("127.0.0.1"));
        assert_eq!(ok["details"]["created"], json!(true));
        let uid = ok["user_id"].as_i64().unwrap();
        assert_eq!(user_by_email(&app, "aud@example.com").await.id, uid);

        let failures = [
            ("bad_signature", sign_with(login_claims("aud@example.com"), OTHER_SECRET)),
            ("token_expired", sign(json!({"email": "aud@example.com", "exp": now() - 3600}))),
            ("missing_email", sign(json!({"iat": now()}))),
        ];
        for (code, token) in &failures {
            let res = app.sso_callback(token, None).await;
            let rid = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
            assert_error(res, 401, code).await;
            let row = &app.audit_events("kind=sso_login&outcome=failure&limit=1").await[0];
            assert_eq!(row["reason"], json!(code));
            assert_eq!(row["request_id"], json!(rid));
        }
        let all_failures = app.audit_events("kind=sso_login&outcome=failure&limit=50").await;
        assert_eq!(all_failures.len(), failures.len(), "one row per failed attempt");
        let second = app.sso_callback(&sign(login_claims("aud@example.com")), None).await;
        assert_eq!(second.status(), StatusCode::FOUND);
        let ok = &app.audit_events("kind=sso_login&outcome=success&limit=1").await[0];
        assert_eq!(ok["details"]["created"], json!(false));
        assert_eq!(app.audit_events("kind=sso_login&outcome=success&limit=50").await.len(), 2);
    }

    async fn no_token_or_secret_ever_reaches_the_audit_log(mut app) {
        sso_ready(&mut app).await;
        let eng = create_group(&app, "Engineering").await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": {"eng": [eng]}, "jwt-issuer": "https://idp.example"})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let mut tokens = Vec::new();
        let claims = |email: &str| {
            let mut c = login_claims(email);
            c["iss"] = json!("https://idp.example");
            c["groups"] = json!(["eng"]);
            c
        };
        // Success, replay, refresh with a cookie, failures of every stage, JSON and POST.
        let t = sign(claims("leak@example.com"));
        let res = app.sso_callback(&t, Some("/x")).await;
        let cookie = format!("latchkey.session={}", cookie_token(&set_cookie(&res).unwrap()));
        app.sso_callback(&t, None).await;
        app.client.get(app.url("/auth/sso")).query(&[("jwt", t.as_str())]).header("cookie", &cookie).send().await.unwrap();
        tokens.push(t);
        let more = [
            sign(claims("leak2@example.com")),
            sign_with(claims("leak@example.com"), OTHER_SECRET),
            sign(login_claims("leak@example.com")),
            sign(json!({"email": "leak@example.com", "iss": "https://idp.example", "iat": now() - 9999})),
            forge(r#"{"alg":"HS256","jku":"http://x"}"#, &claims("leak@example.com").to_string()),
            forge(r#"{"alg":"none"}"#, &claims("leak@example.com").to_string()),
            sign(logout_claims(Some("leak@example.com"), None)),
        ];
        for t in more {
            app.sso_callback(&t, None).await;
            app.client.post(app.url("/auth/sso")).form(&[("jwt", t.as_str())]).send().await.unwrap();
            sso_json(&app, &t).await;
            app.admin(Method::POST, "/api/sso/jwt/test").json(&json!({"token": t})).send().await.unwrap();
            tokens.push(t);
        }
        let mut lo = logout_claims(Some("leak2@example.com"), None);
        lo["iss"] = json!("https://idp.example");
        let logout = sign(lo);
        assert_eq!(backchannel_form(&app, &logout).await.status(), StatusCode::OK);
        backchannel_json(&app, &logout).await;
        tokens.push(logout);
        app.client.get(app.url("/auth/logout")).header("cookie", &cookie).send().await.unwrap();
        app.put_setting("jwt-shared-secret", json!(OTHER_SECRET)).await;

        let events = app.audit_events("limit=500").await;
        assert!(events.len() > 30, "{} events", events.len());
        let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        for k in ["sso_login", "user_created", "group_added", "logout", "setting_changed"] {
            assert!(kinds.contains(&k), "{k} in {kinds:?}");
        }
        let text = serde_json::to_string(&events).unwrap();
        assert!(!text.contains(SECRET), "the shared secret");
        assert!(!text.contains(OTHER_SECRET), "the new shared secret");
        assert!(!text.contains(&cookie_token(&cookie)), "the session token");
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "a whole token");
            for (i, part) in t.split('.').enumerate() {
                if part.len() >= 16 {
                    assert!(!text.contains(part), "segment {i} of a token");
                }
            }
        }
    }

    async fn a_user_s_events_are_listed_from_every_kind_of_write(mut app) {
        // SQLite lists a user's events along a chain that the SSO login's writer and every
        // other insert keep (migration 0006); the list must be what filtering the whole log
        // by user gives, page by page and with the other filters too.
        let admin = sso_ready(&mut app).await;
        let login = |email: &str| {
            let token = sign(login_claims(email));
            let app = &app;
            async move { app.sso_callback(&token, None).await.status() }
        };
        assert_eq!(login("ada@example.com").await, StatusCode::FOUND);
        assert_eq!(login("bo@example.com").await, StatusCode::FOUND);
        let ada = user_by_email(&app, "ada@example.com").await.id;
        let bo = user_by_email(&app, "bo@example.com").await.id;
        let res = app.admin(Method::PUT, &format!("/api/user/{ada}")).json(&json!({"last_name": "Lovelace"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(login("ada@example.com").await, StatusCode::FOUND);
        let res = app.admin(Method::DELETE, &format!("/api/user/{bo}/sessions")).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let res = app.admin(Method::PUT, &format!("/api/user/{bo}")).json(&json!({"is_active": false})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(login("bo@example.com").await, StatusCode::FORBIDDEN);
        assert_eq!(login("ada@example.com").await, StatusCode::FOUND);

        let all = app.audit_events("limit=500").await;
        let ids = |events: &[serde_json::Value]| -> Vec<i64> { events.iter().map(|e| e["id"].as_i64().unwrap()).collect() };
        let of = |user: i64, keep: &dyn Fn(&serde_json::Value) -> bool| -> Vec<i64> {
            ids(&all.iter().filter(|e| e["user_id"] == json!(user) && keep(e)).cloned().collect::<Vec<_>>())
        };
        for user in [ada, bo, admin] {
            let expected = of(user, &|_| true);
            assert!(expected.len() >= 2, "user {user}: {all:?}");
            assert_eq!(ids(&app.audit_events(&format!("user_id={user}&limit=500")).await), expected, "user {user}");
            let paged = page_by_page(&app, &format!("user_id={user}&limit=2"), expected.len()).await;
            assert_eq!(paged, expected, "user {user}, two at a time");
            for kind in ["sso_login", "user_updated", "session_revoked", "user_created"] {
                let got = ids(&app.audit_events(&format!("user_id={user}&kind={kind}")).await);
                assert_eq!(got, of(user, &|e| e["kind"] == json!(kind)), "user {user}, {kind}");
            }
            for outcome in ["success", "failure"] {
                let got = ids(&app.audit_events(&format!("user_id={user}&outcome={outcome}")).await);
                assert_eq!(got, of(user, &|e| e["outcome"] == json!(outcome)), "user {user}, {outcome}");
            }
            // `before` an event of another user (or of none): the user's older ones.
            for other in ids(&all).into_iter().filter(|id| !expected.contains(id)).take(4) {
                let got = ids(&app.audit_events(&format!("user_id={user}&before={other}")).await);
                assert_eq!(got, of(user, &|e| e["id"].as_i64().unwrap() < other), "user {user} before {other}");
            }
        }
        // Both writers are in Ada's list: the SSO login's and the admin's.
        let kinds: Vec<serde_json::Value> = app.audit_events(&format!("user_id={ada}")).await.iter().map(|e| e["kind"].clone()).collect();
        assert!(kinds.contains(&json!("user_updated")) && kinds.contains(&json!("sso_login")), "{kinds:?}");
        assert!(app.audit_events("user_id=999999").await.is_empty());
    }

    async fn a_kind_s_events_are_listed_from_every_kind_of_write(mut app) {
        // SQLite lists a kind's events along a chain that the SSO login's writer (several
        // logins to one transaction) and every other insert keep (migration 0008); the list
        // must be what filtering the whole log by kind gives, page by page and with the
        // other filters too.
        sso_ready(&mut app).await;
        let eng = create_group(&app, "Engineering").await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": {"eng": [eng]}})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let burst = |groups: serde_json::Value| {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let client = app.client.clone();
                    let url = app.url("/auth/sso");
                    let mut claims = login_claims(&format!("kind{i}@example.com"));
                    claims["groups"] = groups.clone();
                    let token = sign(claims);
                    tokio::spawn(async move { client.get(url).query(&[("jwt", token)]).send().await.unwrap().status() })
                })
                .collect();
            async move {
                for t in tasks {
                    assert_eq!(t.await.unwrap(), StatusCode::FOUND);
                }
            }
        };
        // New users (user_created, group_added, sso_login), interleaved with other writes.
        burst(json!(["eng"])).await;
        let res = app.put_settings(json!({"jwt-clock-skew-seconds": 30})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.sso_callback(&sign_with(login_claims("kind0@example.com"), OTHER_SECRET), None).await;
        assert_error(res, 401, "bad_signature").await;
        // Returning users leaving the group (group_removed, sso_login).
        burst(json!([])).await;
        let ada = user_by_email(&app, "kind3@example.com").await.id;
        let res = app.admin(Method::PUT, &format!("/api/user/{ada}")).json(&json!({"last_name": "Lovelace"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        burst(json!(["eng"])).await;
        let res = app.put_settings(json!({"jwt-clock-skew-seconds": 60})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);

        let all = app.audit_events("limit=500").await;
        let ids = |events: &[serde_json::Value]| -> Vec<i64> { events.iter().map(|e| e["id"].as_i64().unwrap()).collect() };
        let of = |kind: &str, keep: &dyn Fn(&serde_json::Value) -> bool| -> Vec<i64> {
            ids(&all.iter().filter(|e| e["kind"] == json!(kind) && keep(e)).cloned().collect::<Vec<_>>())
        };
        for kind in ["sso_login", "user_created", "group_added", "group_removed", "setting_changed", "user_updated"] {
            let expected = of(kind, &|_| true);
            assert!(!expected.is_empty(), "{kind}: {all:?}");
            assert_eq!(ids(&app.audit_events(&format!("kind={kind}&limit=500")).await), expected, "{kind}");
            let paged = page_by_page(&app, &format!("kind={kind}&limit=3"), expected.len()).await;
            assert_eq!(paged, expected, "{kind}, three at a time");
            for outcome in ["success", "failure"] {
                let got = ids(&app.audit_events(&format!("kind={kind}&outcome={outcome}&limit=500")).await);
                assert_eq!(got, of(kind, &|e| e["outcome"] == json!(outcome)), "{kind}, {outcome}");
            }
            // `before` an event of another kind: the kind's older ones.
            for other in ids(&all).into_iter().filter(|id| !expected.contains(id)).step_by(5).take(4) {
                let got = ids(&app.audit_events(&format!("kind={kind}&before={other}&limit=500")).await);
                assert_eq!(got, of(kind, &|e| e["id"].as_i64().unwrap() < other), "{kind} before {other}");
            }
        }
        assert_eq!(of("sso_login", &|e| e["outcome"] == json!("success")).len(), 24);
        assert_eq!(of("group_removed", &|_| true).len(), 8);
        assert!(app.audit_events("kind=no_such_kind").await.is_empty());
    }
}

/// The ids of an audit list read page by page, each page from the last one's `next_before`
/// (at most `events` + 1 pages).
async fn page_by_page(app: &TestApp, query: &str, events: usize) -> Vec<i64> {
    let mut paged = Vec::new();
    let mut before = String::new();
    for _ in 0..events + 1 {
        let res = app
            .admin(Method::GET, &format!("/api/audit?{query}{before}"))
            .send()
            .await
            .unwrap();
        let page = body_json(res).await;
        let events = page["events"].as_array().unwrap();
        paged.extend(events.iter().map(|e| e["id"].as_i64().unwrap()));
        match page["next_before"].as_i64() {
            Some(next) => before = format!("&before={next}"),
            None => break,
        }
    }
    paged
}
