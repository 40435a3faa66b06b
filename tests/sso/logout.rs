//! `GET /auth/logout` and the back-channel `POST /auth/sso/logout` (SPEC §5).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

async fn front_logout(app: &TestApp, session: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url("/auth/logout"));
    if let Some(s) = session {
        req = req.header("cookie", format!("latchkey.session={s}"));
    }
    req.send().await.unwrap()
}

fn assert_cleared(res: &reqwest::Response) {
    let cookie = set_cookie(res).expect("Set-Cookie");
    assert!(cookie.starts_with("latchkey.session=;"), "{cookie}");
    assert!(
        cookie.contains("Max-Age=0") && cookie.contains("Path=/") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
}

/// Sends a logout token and asserts a 401 with `code`, the SSO headers, and that no
/// session, user, membership or replay record changed.
async fn expect_logout_refused(app: &TestApp, token: &str, code: &str, what: &str) {
    let before = Counts::of(app).await;
    let res = backchannel_form(app, token).await;
    assert_sso_headers(res.headers(), what);
    assert_error(res, 401, code).await;
    assert_nothing_written(app, &before, what).await;
    let events = app
        .audit_events("kind=logout&outcome=failure&limit=1")
        .await;
    assert_eq!(events[0]["reason"], json!(code), "{what}");
}

both_backends! {
    async fn logout_of_an_sso_session_goes_to_the_idp_logout(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_setting("jwt-logout-redirect-uri", json!("https://idp.example/logout")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (session, u) = sso_login(&app, login_claims("out@example.com")).await;
        let (other, _) = sso_login(&app, login_claims("out@example.com")).await;
        let sessions = app.count("sessions").await;
        let res = front_logout(&app, Some(&session)).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "https://idp.example/logout");
        assert_cleared(&res);
        assert_eq!(res.headers().get("cache-control").unwrap(), "no-store");
        assert_eq!(app.count("sessions").await, sessions - 1, "only this session");
        assert!(!session_works(&app, &session).await);
        assert!(session_works(&app, &other).await, "the user's other session stays");
        let events = app.audit_events("kind=logout&limit=1").await;
        assert_eq!((events[0]["outcome"].clone(), events[0]["user_id"].clone()), (json!("success"), u["id"].clone()));
    }

    async fn logout_of_an_ended_sso_session_still_goes_to_the_idp_and_removes_it(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_settings(json!({"jwt-logout-redirect-uri": "https://idp.example/logout", "session-idle-timeout-minutes": 30})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (session, _) = sso_login(&app, login_claims("idle@example.com")).await;
        // Away for an hour: the session ended by the idle timeout.
        app.set_session_time(&session, "last_seen_at", now() - 3600).await;
        assert!(!session_works(&app, &session).await);
        let sessions = app.count("sessions").await;
        let res = front_logout(&app, Some(&session)).await;
        assert_eq!(location(&res), "https://idp.example/logout", "the IdP's session may be alive");
        assert_cleared(&res);
        assert_eq!(app.count("sessions").await, sessions - 1, "its row is gone");
    }

    async fn logout_without_a_logout_redirect_or_of_a_password_session_goes_to_the_login_page(mut app) {
        sso_ready(&mut app).await;
        let (session, _) = sso_login(&app, login_claims("plain@example.com")).await;
        let res = front_logout(&app, Some(&session)).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "/auth/login");
        assert_cleared(&res);
        assert!(!session_works(&app, &session).await);

        let res = app.put_setting("jwt-logout-redirect-uri", json!("https://idp.example/logout")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        app.create_user("pw@example.com", Some("password123"), false).await;
        let pw_session = app.login("pw@example.com", "password123").await;
        let res = front_logout(&app, Some(&pw_session)).await;
        assert_eq!(location(&res), "/auth/login", "password sessions do not go to the IdP");
        assert!(!session_works(&app, &pw_session).await);

        // Without any session: just the login page and a cleared cookie.
        let sessions = app.count("sessions").await;
        let res = front_logout(&app, None).await;
        assert_eq!(location(&res), "/auth/login");
        assert_cleared(&res);
        let res = front_logout(&app, Some("not-a-session")).await;
        assert_eq!(location(&res), "/auth/login");
        assert_eq!(app.count("sessions").await, sessions);
    }

    async fn backchannel_logout_ends_every_session_of_the_user(mut app) {
        sso_ready(&mut app).await;
        let (s1, u) = sso_login(&app, login_claims("bc@example.com")).await;
        let (s2, _) = sso_login(&app, login_claims("bc@example.com")).await;
        let (bystander, _) = sso_login(&app, login_claims("bystander@example.com")).await;
        let sessions = app.count("sessions").await;
        let token = sign(logout_claims(Some("BC@example.com"), None));
        let res = backchannel_form(&app, &token).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_sso_headers(res.headers(), "back-channel logout");
        assert_eq!(body_json(res).await, json!({"revoked": 2}));
        assert_eq!(app.count("sessions").await, sessions - 2);
        assert!(!session_works(&app, &s1).await && !session_works(&app, &s2).await);
        assert!(session_works(&app, &bystander).await);
        let events = app.audit_events("kind=logout&limit=1").await;
        assert_eq!(events[0]["outcome"], json!("success"));
        assert_eq!(events[0]["user_id"], u["id"]);
        assert_eq!(events[0]["details"]["revoked"], json!(2));
        // The same over JSON, for a password session of an SSO-known user too.
        let id = u["id"].as_i64().unwrap();
        let res = app.admin(reqwest::Method::PUT, &format!("/api/user/{id}/password")).json(&json!({"password": "password123"})).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let pw = app.login("bc@example.com", "password123").await;
        let (s3, _) = sso_login(&app, login_claims("bc@example.com")).await;
        let res = backchannel_json(&app, &sign(logout_claims(Some("bc@example.com"), None))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await, json!({"revoked": 2}));
        assert!(!session_works(&app, &pw).await && !session_works(&app, &s3).await);
    }

    async fn every_session_of_a_user_ends_whichever_ended_before(mut app) {
        // SQLite finds a user's sessions along a chain (migration 0007) that every ending of
        // one of them mends: after sign-outs, sessions ended by another user's login in the
        // same browser, and expiry, ending them all must end exactly the ones left.
        sso_ready(&mut app).await;
        let (first, u) = sso_login(&app, login_claims("many@example.com")).await;
        let id = u["id"].as_i64().unwrap();
        let res = app.admin(reqwest::Method::PUT, &format!("/api/user/{id}/password")).json(&json!({"password": "password123"})).send().await.unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        app.create_user("pw-other@example.com", Some("password123"), false).await;
        // Nine sessions by SSO and by password, among other users' sessions.
        let mut mine = vec![first];
        let mut others = Vec::new();
        for i in 0..4 {
            mine.push(sso_login(&app, login_claims("many@example.com")).await.0);
            others.push(sso_login(&app, login_claims(&format!("other{i}@example.com"))).await);
            mine.push(app.login("many@example.com", "password123").await);
        }
        assert_eq!(app.sessions_of(id).await, 9);
        // Signed out: one in the middle, and the newest.
        assert_eq!(front_logout(&app, Some(&mine[3])).await.status(), StatusCode::FOUND);
        let res = app.as_user(&mine[8], reqwest::Method::DELETE, "/api/session").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.sessions_of(id).await, 7);
        // Ended by another user's login in the browser that held them: by SSO, by password.
        let res = app.client.get(app.url("/auth/sso")).query(&[("jwt", sign(login_claims("other0@example.com")).as_str())])
            .header("cookie", format!("latchkey.session={}", mine[1]))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        let res = app.client.post(app.url("/api/session")).header("cookie", format!("latchkey.session={}", mine[4]))
            .json(&json!({"username": "pw-other@example.com", "password": "password123"}))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(app.sessions_of(id).await, 5);
        // Expired, then swept: the oldest, one in the middle, and the newest left.
        for i in [0, 2, 7] {
            app.set_session_time(&mine[i], "expires_at", now() - 10).await;
        }
        app.store.sweep_expired(now(), true).await.unwrap();
        assert_eq!(app.sessions_of(id).await, 2);
        for (i, token) in mine.iter().enumerate() {
            assert_eq!(session_works(&app, token).await, i == 5 || i == 6, "session {i}");
        }
        // A new one joins them, and the three end together, nobody else's.
        let (last, _) = sso_login(&app, login_claims("many@example.com")).await;
        assert_eq!(app.sessions_of(id).await, 3);
        let res = app.admin(reqwest::Method::DELETE, &format!("/api/user/{id}/sessions")).send().await.unwrap();
        assert_eq!(body_json(res).await["revoked"], json!(3));
        assert_eq!(app.sessions_of(id).await, 0);
        assert!(!session_works(&app, &last).await && !session_works(&app, &mine[5]).await);
        for (token, other) in &others {
            assert!(session_works(&app, token).await, "{other}");
            let other_id = other["id"].as_i64().unwrap();
            assert!(app.sessions_of(other_id).await >= 1);
        }
        // A user with no sessions left logs in again, and that one ends alone.
        let (again, _) = sso_login(&app, login_claims("many@example.com")).await;
        let res = backchannel_form(&app, &sign(logout_claims(Some("many@example.com"), None))).await;
        assert_eq!(body_json(res).await, json!({"revoked": 1}));
        assert!(!session_works(&app, &again).await);
        assert_eq!(app.sessions_of(id).await, 0);
    }

    async fn backchannel_logout_by_sub_alone(mut app) {
        sso_ready(&mut app).await;
        let mut c = login_claims("subby@example.com");
        c["sub"] = json!("idp-77");
        let (session, _) = sso_login(&app, c).await;
        let mut claims = logout_claims(None, Some("idp-77"));
        // A logout-typed header is fine for a logout token.
        let token = forge(r#"{"alg":"HS256","typ":"logout+jwt"}"#, &claims.to_string());
        let res = backchannel_json(&app, &token).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await, json!({"revoked": 1}));
        assert!(!session_works(&app, &session).await);
        // Both email and sub naming the same user is fine too.
        let (session, _) = sso_login(&app, login_claims("subby@example.com")).await;
        claims = logout_claims(Some("subby@example.com"), Some("idp-77"));
        let res = backchannel_form(&app, &sign(claims)).await;
        assert_eq!(body_json(res).await, json!({"revoked": 1}));
        assert!(!session_works(&app, &session).await);
        // An address changed at the IdP makes a second account with the same sub: a logout
        // by that sub ends the sessions of both, with an audit row naming each.
        let (old, a) = sso_login(&app, login_claims("subby@example.com")).await;
        let mut c = login_claims("renamed@example.com");
        c["sub"] = json!("idp-77");
        let (new, b) = sso_login(&app, c).await;
        assert_ne!(a["id"], b["id"]);
        let res = backchannel_json(&app, &sign(logout_claims(None, Some("idp-77")))).await;
        assert_eq!(body_json(res).await, json!({"revoked": 2}));
        assert!(!session_works(&app, &old).await && !session_works(&app, &new).await);
        let events = app.audit_events("kind=logout&limit=2").await;
        let mut named: Vec<_> = events.iter().map(|e| (e["user_id"].as_i64(), e["details"]["revoked"].as_i64())).collect();
        named.sort();
        assert_eq!(named, [(a["id"].as_i64(), Some(1)), (b["id"].as_i64(), Some(1))]);
        // With the old address as well, the sub still names both accounts.
        let (old, _) = sso_login(&app, login_claims("subby@example.com")).await;
        let (new, _) = sso_login(&app, login_claims("renamed@example.com")).await;
        let res = backchannel_form(&app, &sign(logout_claims(Some("subby@example.com"), Some("idp-77")))).await;
        assert_eq!(body_json(res).await, json!({"revoked": 2}));
        assert!(!session_works(&app, &old).await && !session_works(&app, &new).await);
    }

    async fn a_sub_of_255_characters_is_kept_whole_and_a_longer_one_is_refused(mut app) {
        sso_ready(&mut app).await;
        // 255 characters (OpenID Connect's most), two bytes each: stored and matched whole.
        let sub = format!("idp-{}", "é".repeat(251));
        let mut c = login_claims("longsub@example.com");
        c["sub"] = json!(sub);
        let (session, u) = sso_login(&app, c).await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!(user_by_email(&app, "longsub@example.com").await.sso_subject.as_deref(), Some(sub.as_str()));
        // One character more: a login is refused and writes nothing but its audit row. (Cut
        // to 255, two such subjects with the same start would name one account.)
        let longer = format!("{sub}x");
        let mut c = login_claims("longsub@example.com");
        c["sub"] = json!(longer);
        expect_refused(&app, &sign(c), 401, "claim_invalid", "a sub of 256 characters").await;
        let mut c = login_claims("other@example.com");
        c["sub"] = json!(longer);
        expect_refused(&app, &sign(c), 401, "claim_invalid", "a new user's sub of 256 characters").await;
        // A logout naming the longer one is refused too, and ends nothing.
        let res = backchannel_form(&app, &sign(logout_claims(Some("longsub@example.com"), Some(&longer)))).await;
        assert_error(res, 401, "claim_invalid").await;
        assert!(session_works(&app, &session).await);
        let res = backchannel_form(&app, &sign(logout_claims(None, Some(&sub)))).await;
        assert_eq!(body_json(res).await, json!({"revoked": 1}));
        assert!(!session_works(&app, &session).await);
        assert_eq!(user(&app, id).await["email"], json!("longsub@example.com"));
    }

    async fn backchannel_logout_for_an_unknown_user_revokes_nothing(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        let res = backchannel_form(&app, &sign(logout_claims(Some("nobody@example.com"), None))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_json(res).await, json!({"revoked": 0}));
        let res = backchannel_form(&app, &sign(logout_claims(None, Some("no-such-sub")))).await;
        assert_eq!(body_json(res).await, json!({"revoked": 0}));
        let after = Counts::of(&app).await;
        assert_eq!((after.users, after.sessions, after.memberships), (before.users, before.sessions, before.memberships));
        assert_eq!(after.replay_records, before.replay_records + 2, "the tokens are used up");
    }

    async fn backchannel_logout_tokens_are_single_use(mut app) {
        sso_ready(&mut app).await;
        sso_login(&app, login_claims("rp@example.com")).await;
        let token = sign(logout_claims(Some("rp@example.com"), None));
        assert_eq!(body_json(backchannel_form(&app, &token).await).await, json!({"revoked": 1}));
        let (session, _) = sso_login(&app, login_claims("rp@example.com")).await;
        expect_logout_refused(&app, &token, "token_replayed", "replayed logout token").await;
        assert!(session_works(&app, &session).await, "the replay ended nothing");
        let before = Counts::of(&app).await;
        assert_error(backchannel_json(&app, &token).await, 401, "token_replayed").await;
        assert_nothing_written(&app, &before, "replay over JSON").await;
    }

    async fn backchannel_logout_refuses_tokens_that_are_not_logout_tokens(mut app) {
        sso_ready(&mut app).await;
        let (session, _) = sso_login(&app, json!({"email": "keep@example.com", "sub": "k-1", "iat": now(), "jti": "k-login"})).await;
        // A login token (no events claim).
        expect_logout_refused(&app, &sign(login_claims("keep@example.com")), "claim_invalid", "login token").await;
        // Neither email nor sub.
        expect_logout_refused(&app, &sign(logout_claims(None, None)), "claim_invalid", "no email, no sub").await;
        // Email and sub naming different users.
        sso_login(&app, json!({"email": "else@example.com", "sub": "e-1", "iat": now(), "jti": "e-login"})).await;
        expect_logout_refused(&app, &sign(logout_claims(Some("keep@example.com"), Some("e-1"))), "claim_invalid", "two users").await;
        // An event of another kind, or a nonce (an ID token).
        let mut c = logout_claims(Some("keep@example.com"), None);
        c["events"] = json!({"http://schemas.openid.net/event/other": {}});
        expect_logout_refused(&app, &sign(c), "claim_invalid", "other event").await;
        let mut c = logout_claims(Some("keep@example.com"), None);
        c["nonce"] = json!("n-1");
        expect_logout_refused(&app, &sign(c), "claim_invalid", "nonce").await;
        // The same verification as login tokens.
        expect_logout_refused(&app, &sign_with(logout_claims(Some("keep@example.com"), None), OTHER_SECRET), "bad_signature", "other key").await;
        let mut c = logout_claims(Some("keep@example.com"), None);
        c["iat"] = json!(now() - 3600);
        expect_logout_refused(&app, &sign(c), "token_too_old", "old").await;
        let c = logout_claims(Some("keep@example.com"), None);
        expect_logout_refused(&app, &forge(r#"{"alg":"none"}"#, &c.to_string()), "alg_not_allowed", "alg none").await;
        let mut c = logout_claims(Some("keep@example.com"), None);
        c.as_object_mut().unwrap().remove("iat");
        expect_logout_refused(&app, &sign(c), "token_never_expires", "no iat").await;
        expect_logout_refused(&app, &sign(logout_claims(None, Some("k\u{0}1"))), "claim_invalid", "NUL in sub").await;
        let mut c = logout_claims(Some("keep@example.com"), None);
        c["jti"] = json!("j\u{0}1");
        expect_logout_refused(&app, &sign(c), "claim_invalid", "NUL in jti").await;
        expect_logout_refused(&app, &forge(r#"{"alg":"HS256","jku":"http://x"}"#, &logout_claims(Some("keep@example.com"), None).to_string()), "header_not_allowed", "jku").await;
        assert!(session_works(&app, &session).await, "nothing ended the session");
    }

    async fn a_logout_token_is_refused_at_the_login_callback(mut app) {
        sso_ready(&mut app).await;
        let token = sign(logout_claims(Some("mixup@example.com"), Some("m-1")));
        expect_refused(&app, &token, 401, "claim_invalid", "logout token at /auth/sso").await;
        assert!(app.store.find_user_by_email("mixup@example.com").await.unwrap().is_none());
        let token = forge(r#"{"alg":"HS256","typ":"logout+jwt"}"#, &logout_claims(Some("mixup@example.com"), None).to_string());
        expect_refused(&app, &token, 401, "header_not_allowed", "logout-typed token at /auth/sso").await;
    }

    async fn backchannel_logout_needs_a_token_and_configured_sso(mut app) {
        app.login_admin().await;
        let res = app.client.post(app.url("/auth/sso/logout")).form(&[("other", "x")]).send().await.unwrap();
        assert_sso_headers(res.headers(), "missing token");
        let body: Value = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("logout_token"));
        let res = app.client.post(app.url("/auth/sso/logout")).json(&json!(["a.b.c"])).send().await.unwrap();
        assert_sso_headers(res.headers(), "non-object JSON");
        let body: Value = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("body"));
        let token = sign(logout_claims(Some("a@example.com"), None));
        let res = backchannel_form(&app, &token).await;
        assert_sso_headers(res.headers(), "not configured");
        assert_error(res, 400, "sso_not_configured").await;
        assert_eq!(app.count("replay_records").await, 0);
        app.configure_jwt().await;
        assert_eq!(backchannel_form(&app, &token).await.status(), StatusCode::OK, "not consumed before");
    }
}
