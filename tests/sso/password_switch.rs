//! `enable-password-login` (SPEC §5): the lock-out guard, password login refused for
//! everyone once it is off, the session properties, and the way back.

use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

async fn password_login(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/session"))
        .json(&json!({"username": email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn properties(app: &TestApp) -> serde_json::Value {
    body_json(
        app.client
            .get(app.url("/api/session/properties"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn setting_value(app: &TestApp, key: &str) -> serde_json::Value {
    let res = app
        .admin(reqwest::Method::GET, &format!("/api/setting/{key}"))
        .send()
        .await
        .unwrap();
    body_json(res).await["value"].clone()
}

both_backends! {
    async fn an_sso_admin_demoted_while_password_login_is_switched_off_is_counted(mut app) {
        sso_ready(&mut app).await;
        // The only administrator who signed in through SSO; the test's own signs in with a
        // password.
        let (_, u) = sso_login(&app, login_claims("sso-admin@example.com")).await;
        let id = u["id"].as_i64().unwrap();
        let promote = |value: bool| app.admin(reqwest::Method::PUT, &format!("/api/user/{id}")).json(&json!({"is_superuser": value})).send();
        for round in 0..15 {
            assert_eq!(promote(true).await.unwrap().status(), StatusCode::OK);
            assert_eq!(app.put_setting("enable-password-login", json!(true)).await.status(), StatusCode::NO_CONTENT);
            let (demoted, switched) = tokio::join!(promote(false), app.put_setting("enable-password-login", json!(false)));
            assert_eq!(demoted.unwrap().status(), StatusCode::OK, "round {round}");
            if switched.status() != StatusCode::NO_CONTENT {
                assert_error(switched, 409, "lockout_risk").await;
                continue;
            }
            // Both went through: then the switch came first, when the SSO admin still was
            // one, and the demotion's rows follow the setting's in the audit log.
            let events = app.audit_events("limit=20").await;
            let id_of = |kind: &str| events.iter().find(|e| e["kind"] == kind && e["outcome"] == "success").and_then(|e| e["id"].as_i64()).unwrap();
            assert!(id_of("setting_changed") < id_of("group_removed"), "round {round}: the switch counted an admin being demoted: {events:?}");
        }
    }

    async fn switching_password_login_off_without_an_sso_admin_is_a_lockout_risk(mut app) {
        sso_ready(&mut app).await;
        // An ordinary user who signed in through SSO does not count.
        sso_login(&app, login_claims("plain@example.com")).await;
        let settings = app.count("settings").await;
        let res = app.put_setting("enable-password-login", json!(false)).await;
        let body = assert_error(res, 409, "lockout_risk").await;
        assert!(body["message"].as_str().unwrap().contains("SSO"), "says how to fix it: {body}");
        assert_eq!(app.count("settings").await, settings, "nothing stored");
        assert_eq!(setting_value(&app, "enable-password-login").await, json!(true));
        assert_eq!(properties(&app).await["password_login_enabled"], json!(true));
        let events = app.audit_events("kind=setting_changed&outcome=failure&limit=1").await;
        assert_eq!(events[0]["reason"], json!("lockout_risk"));
        // The bulk endpoint is guarded too.
        let res = app.put_settings(json!({"enable-password-login": false, "jwt-group-sync": true})).await;
        assert_error(res, 409, "lockout_risk").await;
        assert_eq!(setting_value(&app, "jwt-group-sync").await, json!(false), "all or nothing");
        assert_eq!(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), StatusCode::OK);
    }

    async fn after_an_admin_signs_in_through_sso_password_login_can_be_switched_off(mut app) {
        sso_ready(&mut app).await;
        app.create_user("user@example.com", Some("password123"), false).await;
        let (sso_session, u) = sso_login(&app, login_claims("Admin@Example.com")).await;
        assert_eq!(u["is_superuser"], json!(true), "the existing admin, matched by email");
        let res = app.put_setting("enable-password-login", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let props = properties(&app).await;
        assert_eq!(props["password_login_enabled"], json!(false));
        assert_eq!(props["jwt_enabled"], json!(true));

        let sessions = app.count("sessions").await;
        for (email, password) in [(ADMIN_EMAIL, ADMIN_PASSWORD), ("user@example.com", "password123"), ("user@example.com", "wrong-password"), ("ghost@example.com", "x-x-x-x-x")] {
            let res = password_login(&app, email, password).await;
            assert!(res.headers().get("set-cookie").is_none());
            assert_error(res, 401, "password_login_disabled").await;
        }
        assert_eq!(app.count("sessions").await, sessions, "no session opened");
        let events = app.audit_events("kind=password_login&outcome=failure&limit=1").await;
        assert_eq!(events[0]["reason"], json!("password_login_disabled"));
        // SSO keeps working, and existing sessions too.
        sso_login(&app, login_claims("user@example.com")).await;
        assert!(session_works(&app, &sso_session).await);
    }

    async fn password_login_comes_back_when_switched_on_or_when_sso_is_off(mut app) {
        sso_ready(&mut app).await;
        sso_login(&app, login_claims(ADMIN_EMAIL)).await;
        let res = app.put_setting("enable-password-login", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await, 401, "password_login_disabled").await;
        // The switch only counts while JWT SSO is enabled and configured.
        let res = app.put_setting("jwt-enabled", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(properties(&app).await["password_login_enabled"], json!(true));
        assert_eq!(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), StatusCode::OK);
        let res = app.put_setting("jwt-enabled", json!(true)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await, 401, "password_login_disabled").await;
        // Break-glass: switching it back on always works (no guard in that direction).
        let res = app.put_setting("enable-password-login", json!(true)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(properties(&app).await["password_login_enabled"], json!(true));
        assert_eq!(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), StatusCode::OK);
    }

    async fn break_glass_from_the_command_line_reaches_the_running_server(mut app) {
        sso_ready(&mut app).await;
        sso_login(&app, login_claims(ADMIN_EMAIL)).await;
        let res = app.put_setting("enable-password-login", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_error(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await, 401, "password_login_disabled").await;
        // `latchkey settings set enable-password-login true` on the server.
        latchkey::commands::settings_set(&app.database_url, "enable-password-login", "true").await.expect("settings set");
        // The running server picks the change up within two seconds.
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(properties(&app).await["password_login_enabled"], json!(true));
        assert_eq!(password_login(&app, ADMIN_EMAIL, ADMIN_PASSWORD).await.status(), StatusCode::OK);
    }
}
