//! Every reason code the SSO callback can answer (SPEC §4.8), each provoked on purpose:
//! status, code, headers, and that no user, session, membership or replay record was
//! written (failures are audited with the same code).

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

/// Claims with `iat` = now and a fresh `jti`, plus `extra`.
fn claims_with(email: &str, extra: Value) -> Value {
    let mut c = login_claims(email);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn without(mut claims: Value, keys: &[&str]) -> Value {
    for k in keys {
        claims.as_object_mut().unwrap().remove(*k);
    }
    claims
}

both_backends! {
    async fn sso_not_configured_refuses_a_valid_token_without_consuming_it(mut app) {
        app.login_admin().await;
        let token = sign(login_claims("early@example.com"));
        let body = expect_refused(&app, &token, 400, "sso_not_configured", "not configured").await;
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        // The same token works once SSO is configured: nothing was consumed.
        app.configure_jwt().await;
        let res = app.sso_callback(&token, Some("/after")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(app.count("replay_records").await, 1);
    }

    async fn invalid_redirect_is_checked_before_the_token_which_stays_unconsumed(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("victim@example.com"));
        for evil in ["https://evil.example/", "//evil.example", "/\\evil.example", "javascript:alert(1)", "http://user@127.0.0.1/"] {
            let before = Counts::of(&app).await;
            let res = app.sso_callback(&token, Some(evil)).await;
            assert_sso_headers(res.headers(), evil);
            assert!(res.headers().get("set-cookie").is_none());
            assert_error(res, 400, "invalid_redirect").await;
            assert_nothing_written(&app, &before, evil).await;
        }
        // A broken token with a bad target is still an invalid_redirect: the target decides first.
        let before = Counts::of(&app).await;
        let res = app.sso_callback("garbage", Some("//evil.example")).await;
        assert_error(res, 400, "invalid_redirect").await;
        assert_eq!(Counts::of(&app).await, before, "not even a token failure is audited");
        // The valid token was not consumed: with a good target it logs in.
        let res = app.sso_callback(&token, Some("/ok")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_eq!(location(&res), "/ok");
    }

    async fn token_malformed_for_text_that_is_not_a_compact_jws(mut app) {
        sso_ready(&mut app).await;
        for (i, bad) in ["not-a-token", "a.b.c", "", "...", "eyJhbGciOiJIUzI1NiJ9.e30"].iter().enumerate() {
            let body = expect_refused(&app, bad, 401, "token_malformed", &format!("case {i}")).await;
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }

    async fn token_too_large_over_8_kib(mut app) {
        sso_ready(&mut app).await;
        let big = claims_with("big@example.com", json!({"blob": "x".repeat(7000)}));
        let token = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &big.to_string());
        assert!(token.len() > 8192);
        expect_refused(&app, &token, 401, "token_too_large", "9 KiB token").await;
        // Garbage of that size too: the size is checked before anything else.
        expect_refused(&app, &"A".repeat(16 * 1024), 401, "token_too_large", "16 KiB garbage").await;
        // Over POST as well.
        let before = Counts::of(&app).await;
        let res = app.client.post(app.url("/auth/sso")).form(&[("jwt", token.as_str())]).send().await.unwrap();
        assert_error(res, 401, "token_too_large").await;
        assert_nothing_written(&app, &before, "POST 9 KiB").await;
    }

    async fn alg_not_allowed_for_an_algorithm_outside_jwt_algorithms(mut app) {
        sso_ready(&mut app).await;
        let p = payload("alg@example.com");
        let token = forge_with(r#"{"alg":"HS384","typ":"JWT"}"#, &p, SECRET.as_bytes(), jsonwebtoken::Algorithm::HS384);
        expect_refused(&app, &token, 401, "alg_not_allowed", "HS384 not allowed").await;
    }

    async fn header_not_allowed_for_a_key_carrying_header(mut app) {
        sso_ready(&mut app).await;
        let token = forge(r#"{"alg":"HS256","jku":"http://127.0.0.1:1/jwks.json"}"#, &payload("hdr@example.com"));
        expect_refused(&app, &token, 401, "header_not_allowed", "jku").await;
    }

    async fn bad_signature_for_another_key_or_a_changed_payload(mut app) {
        sso_ready(&mut app).await;
        let token = sign_with(login_claims("sig@example.com"), OTHER_SECRET);
        expect_refused(&app, &token, 401, "bad_signature", "other secret").await;
        // A payload swapped under a valid signature.
        let good = sign(login_claims("sig@example.com"));
        let parts: Vec<&str> = good.split('.').collect();
        let evil = format!("{}.{}.{}", parts[0], b64(payload("admin@example.com").as_bytes()), parts[2]);
        expect_refused(&app, &evil, 401, "bad_signature", "swapped payload").await;
        // The Metabase key encoding: the secret's UTF-8 bytes, never hex-decoded.
        let hex_decoded = hex::decode(SECRET).unwrap();
        let token = forge_with(r#"{"alg":"HS256"}"#, &payload("sig@example.com"), &hex_decoded, jsonwebtoken::Algorithm::HS256);
        expect_refused(&app, &token, 401, "bad_signature", "hex-decoded key").await;
    }

    async fn token_expired_after_exp_plus_skew(mut app) {
        sso_ready(&mut app).await;
        let c = without(claims_with("exp@example.com", json!({"exp": now() - 40})), &["iat"]);
        expect_refused(&app, &sign(c), 401, "token_expired", "exp 40 s ago").await;
        let c = claims_with("exp@example.com", json!({"exp": now() - 3600}));
        expect_refused(&app, &sign(c), 401, "token_expired", "exp an hour ago with iat now").await;
        // Inside the skew it still passes.
        let c = without(claims_with("exp@example.com", json!({"exp": now() - 10})), &["iat"]);
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND);
    }

    async fn token_not_yet_valid_before_nbf_minus_skew(mut app) {
        sso_ready(&mut app).await;
        let c = claims_with("nbf@example.com", json!({"nbf": now() + 3600}));
        expect_refused(&app, &sign(c), 401, "token_not_yet_valid", "nbf in an hour").await;
        let c = claims_with("nbf@example.com", json!({"nbf": now() + 10}));
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND, "inside the skew");
    }

    async fn token_too_old_beyond_max_age_plus_skew(mut app) {
        sso_ready(&mut app).await;
        let c = claims_with("old@example.com", json!({"iat": now() - 300}));
        expect_refused(&app, &sign(c), 401, "token_too_old", "iat 300 s ago").await;
        // A long exp does not rescue it.
        let c = claims_with("old@example.com", json!({"iat": now() - 3600, "exp": now() + 3600}));
        expect_refused(&app, &sign(c), 401, "token_too_old", "iat an hour ago, exp in an hour").await;
        // jwt-max-age-seconds is honoured.
        let res = app.put_setting("jwt-max-age-seconds", json!(30)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let c = claims_with("old@example.com", json!({"iat": now() - 100}));
        expect_refused(&app, &sign(c), 401, "token_too_old", "iat 100 s ago, max age 30").await;
        let c = claims_with("old@example.com", json!({"iat": now() - 20}));
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND);
    }

    async fn token_issued_in_future_beyond_the_skew(mut app) {
        sso_ready(&mut app).await;
        let c = claims_with("future@example.com", json!({"iat": now() + 3600}));
        expect_refused(&app, &sign(c), 401, "token_issued_in_future", "iat in an hour").await;
        let c = claims_with("future@example.com", json!({"iat": now() + 90}));
        expect_refused(&app, &sign(c), 401, "token_issued_in_future", "iat in 90 s").await;
        let c = claims_with("future@example.com", json!({"iat": now() + 10}));
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND, "inside the skew");
    }

    async fn token_never_expires_without_iat_and_exp(mut app) {
        sso_ready(&mut app).await;
        let c = without(login_claims("forever@example.com"), &["iat"]);
        expect_refused(&app, &sign(c), 401, "token_never_expires", "no iat, no exp").await;
        let c = without(claims_with("forever@example.com", json!({"nbf": now()})), &["iat"]);
        expect_refused(&app, &sign(c), 401, "token_never_expires", "only nbf").await;
        // exp alone is enough (Metabase-compatible IdPs may omit iat).
        let c = without(claims_with("forever@example.com", json!({"exp": now() + 60})), &["iat"]);
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND);
    }

    async fn claim_invalid_for_wrongly_typed_or_foreign_claims(mut app) {
        sso_ready(&mut app).await;
        let n = now();
        let cases = [
            ("iat as a string", claims_with("c@example.com", json!({"iat": n.to_string()}))),
            ("iat null", claims_with("c@example.com", json!({"iat": null}))),
            ("exp as a string", claims_with("c@example.com", json!({"exp": (n + 60).to_string()}))),
            ("nbf as a bool", claims_with("c@example.com", json!({"nbf": true}))),
            ("jti as a number", claims_with("c@example.com", json!({"jti": 7}))),
            ("events in a login token", claims_with("c@example.com", json!({"events": {LOGOUT_EVENT: {}}}))),
        ];
        for (what, c) in cases {
            expect_refused(&app, &sign(c), 401, "claim_invalid", what).await;
        }
    }

    async fn issuer_mismatch_when_jwt_issuer_is_set(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_settings(json!({"jwt-issuer": "https://idp.example"})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        expect_refused(&app, &sign(login_claims("iss@example.com")), 401, "issuer_mismatch", "no iss").await;
        let c = claims_with("iss@example.com", json!({"iss": "https://evil.example"}));
        expect_refused(&app, &sign(c), 401, "issuer_mismatch", "other iss").await;
        let c = claims_with("iss@example.com", json!({"iss": ["https://idp.example"]}));
        expect_refused(&app, &sign(c), 401, "issuer_mismatch", "iss array").await;
        let c = claims_with("iss@example.com", json!({"iss": "https://idp.example"}));
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND);
    }

    async fn audience_mismatch_when_jwt_audience_is_set(mut app) {
        sso_ready(&mut app).await;
        // Without jwt-audience, aud is not checked.
        let c = claims_with("aud@example.com", json!({"aud": "anything"}));
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND);
        let res = app.put_settings(json!({"jwt-audience": "latchkey"})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        expect_refused(&app, &sign(login_claims("aud@example.com")), 401, "audience_mismatch", "no aud").await;
        let c = claims_with("aud@example.com", json!({"aud": "other-svc"}));
        expect_refused(&app, &sign(c), 401, "audience_mismatch", "other aud").await;
        let c = claims_with("aud@example.com", json!({"aud": ["other"]}));
        expect_refused(&app, &sign(c), 401, "audience_mismatch", "aud array without ours").await;
        let c = claims_with("aud@example.com", json!({"aud": ["other", "latchkey"]}));
        assert_eq!(app.sso_callback(&sign(c), None).await.status(), StatusCode::FOUND);
    }

    async fn token_replayed_on_second_use(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("twice@example.com"));
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        let body = expect_refused(&app, &token, 401, "token_replayed", "second use").await;
        assert!(!body.to_string().contains(&token));
    }

    async fn missing_email_without_the_email_claim(mut app) {
        sso_ready(&mut app).await;
        let c = json!({"iat": now(), "jti": "no-email", "first_name": "Nobody"});
        expect_refused(&app, &sign(c), 401, "missing_email", "no email").await;
        expect_refused(&app, &sign(claims_with("x@example.com", json!({"email": null}))), 401, "missing_email", "email null").await;
        expect_refused(&app, &sign(claims_with("x@example.com", json!({"email": ""}))), 401, "missing_email", "email empty").await;
        // The configured claim name decides.
        let res = app.put_setting("jwt-attribute-email", json!("mail")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        expect_refused(&app, &sign(login_claims("x@example.com")), 401, "missing_email", "email under the default name").await;
    }

    async fn invalid_email_for_implausible_addresses(mut app) {
        sso_ready(&mut app).await;
        for bad in ["not-an-email", "a@b", "two@@example.com", " admin@example.com ", "a b@example.com", "admin\u{ff20}example.com", "<admin@example.com>"] {
            let c = claims_with("x@example.com", json!({"email": bad}));
            expect_refused(&app, &sign(c), 401, "invalid_email", bad).await;
        }
    }

    async fn claims_too_large_over_100_attributes_or_1_kib_per_value(mut app) {
        sso_ready(&mut app).await;
        let mut c = login_claims("big@example.com");
        for i in 0..101 {
            c[format!("a{i}")] = json!(i);
        }
        expect_refused(&app, &sign(c), 401, "claims_too_large", "101 attributes").await;
        let c = claims_with("big@example.com", json!({"note": "x".repeat(1023)}));
        expect_refused(&app, &sign(c), 401, "claims_too_large", "1025-byte value").await;
    }

    async fn user_not_provisioned_when_provisioning_is_off(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_setting("jwt-user-provisioning-enabled", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let token = sign(login_claims("stranger@example.com"));
        let body = expect_refused(&app, &token, 403, "user_not_provisioned", "unknown user").await;
        assert!(body["message"].as_str().unwrap().contains("administrator"));
        assert!(app.store.find_user_by_email("stranger@example.com").await.unwrap().is_none());
        // Known users still sign in.
        app.create_user("known@example.com", None, false).await;
        assert_eq!(app.sso_callback(&sign(login_claims("Known@Example.com")), None).await.status(), StatusCode::FOUND);
        // And the refused token was not consumed: once provisioning is on, it works.
        let res = app.put_setting("jwt-user-provisioning-enabled", json!(true)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
    }

    async fn user_deactivated_is_refused_and_stays_deactivated(mut app) {
        sso_ready(&mut app).await;
        let (session, u) = sso_login(&app, login_claims("gone@example.com")).await;
        let id = u["id"].as_i64().unwrap();
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(!session_works(&app, &session).await);
        let sessions = app.count("sessions").await;
        let c = claims_with("Gone@Example.com", json!({"first_name": "Back", "groups": ["x"], "dept": "y"}));
        let body = expect_refused(&app, &sign(c), 403, "user_deactivated", "deactivated user").await;
        assert!(body["message"].as_str().unwrap().contains("deactivated"));
        let after = user(&app, id).await;
        assert_eq!(after["is_active"], json!(false), "not reactivated");
        assert_eq!(after["first_name"], json!(null), "not updated either");
        assert_eq!(after["login_attributes"], json!({}));
        assert_eq!(app.count("sessions").await, sessions);
        let events = app.audit_events("kind=sso_login&outcome=failure&limit=1").await;
        assert_eq!(events[0]["email"], json!("gone@example.com"));
    }

    async fn an_sso_login_racing_a_deactivation_leaves_no_session(mut app) {
        sso_ready(&mut app).await;
        for round in 0..10 {
            let email = format!("racer{round}@example.com");
            let (_, u) = sso_login(&app, login_claims(&email)).await;
            let id = u["id"].as_i64().unwrap();
            let t: Vec<String> = (0..4).map(|_| sign(login_claims(&email))).collect();
            let deactivate = app.admin(Method::DELETE, &format!("/api/user/{id}")).send();
            let (a, b, deactivated, c, d) = tokio::join!(sso_json(&app, &t[0]), sso_json(&app, &t[1]), deactivate, sso_json(&app, &t[2]), sso_json(&app, &t[3]));
            assert_eq!(deactivated.unwrap().status(), StatusCode::OK);
            let mut sessions = Vec::new();
            for res in [a, b, c, d] {
                if res.status() == StatusCode::OK {
                    sessions.push(body_json(res).await["id"].as_str().unwrap().to_owned());
                } else {
                    assert_error(res, 403, "user_deactivated").await;
                }
            }
            // No session a login opened outlives the deactivation, even once the account is
            // active again.
            let res = app.admin(Method::PUT, &format!("/api/user/{id}/reactivate")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            for s in sessions {
                assert!(!session_works(&app, &s).await, "round {round}: a session outlived the deactivation");
            }
        }
    }

    async fn error_messages_never_echo_the_token(mut app) {
        sso_ready(&mut app).await;
        let mut m: Map<String, Value> = Map::new();
        m.insert("email".into(), json!("e@example.com"));
        let token = sign(Value::Object(m));
        let body = expect_refused(&app, &token, 401, "token_never_expires", "no times").await;
        let text = body.to_string();
        assert!(!text.contains(&token) && !text.contains(token.split('.').nth(1).unwrap()));
        assert!(!text.contains(SECRET));
    }
}

/// The one refusal that is not Latchkey's (README, "Errors"): an address over 64 KiB is refused
/// by the HTTP library with a bare `414 URI Too Long` before any handler runs, so nothing is
/// written, not even an audit row, and the connection's server goes on serving. An address just
/// under the limit reaches Latchkey, which refuses its token as too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_64_kib_gets_a_bare_414_and_writes_nothing() {
    let Some(mut app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    sso_ready(&mut app).await;
    let before = Counts::of(&app).await;
    // Over raw TCP: HTTP clients refuse to build such an address.
    let head = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        let request = format!(
            "GET /auth/sso?jwt={} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(70 * 1024),
            app.addr
        );
        // The server may answer and close before it has read the whole request.
        let _ = tcp.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(head.starts_with("HTTP/1.1 414 "), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("x-request-id"),
        "not Latchkey's answer: {head}"
    );
    assert_eq!(
        Counts::of(&app).await,
        before,
        "nothing written for a 70 KiB address"
    );
    expect_refused(
        &app,
        &"a".repeat(60 * 1024),
        401,
        "token_too_large",
        "a 60 KiB token",
    )
    .await;
    let (_, user) = sso_login(&app, login_claims("after@example.com")).await;
    assert_eq!(user["email"], "after@example.com");
}
