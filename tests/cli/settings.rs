//! `latchkey settings get|set|list`: values, validation, masking, the environment, changes
//! reaching running servers, and the break-glass switch of SPEC §5.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// The settings rows as stored (key → JSON text).
async fn stored(db: &Db) -> Vec<(String, String)> {
    let store = latchkey::store::Store::connect(&db.url)
        .await
        .expect("connect");
    let rows = store.load_settings().await.expect("load settings");
    store.close().await;
    rows
}

#[track_caller]
fn get_json(db: &Db, key: &str) -> Value {
    let out = settings_get(db, key).success();
    serde_json::from_str(&out.line()).unwrap_or_else(|_| panic!("JSON from get: {out:#?}"))
}

cli_both_backends! {
    async fn set_and_get_with_validation(db) {
        run(&["migrate", "--database-url", &db.url]).success();
        assert_eq!(get_json(&db, "jwt-clock-skew-seconds"), json!(30));

        // A bare string, and JSON values.
        settings_set(&db, "jwt-identity-provider-uri", "https://idp.example/login").success();
        assert_eq!(get_json(&db, "jwt-identity-provider-uri"), json!("https://idp.example/login"));
        settings_set(&db, "jwt-max-age-seconds", "120").success();
        assert_eq!(get_json(&db, "jwt-max-age-seconds"), json!(120));
        settings_set(&db, "redirect-allowed-origins", r#"["https://app.example"]"#).success();
        assert_eq!(get_json(&db, "redirect-allowed-origins"), json!(["https://app.example"]));
        settings_set(&db, "jwt-enabled", "true").success();
        assert_eq!(get_json(&db, "jwt-enabled"), json!(true));

        // Secrets: masked when shown, stored in full.
        let out = settings_set(&db, "jwt-shared-secret", SECRET).success();
        assert!(!out.stdout.contains(SECRET) && !out.stderr.contains(SECRET), "{out:#?}");
        let masked = get_json(&db, "jwt-shared-secret");
        assert_eq!(masked, json!(format!("**********{}", &SECRET[SECRET.len() - 4..])));
        let revealed = run(&["settings", "get", "jwt-shared-secret", "--reveal", "--database-url", &db.url])
            .success();
        assert_eq!(revealed.line(), json!(SECRET).to_string());
        let list = run(&["settings", "list", "--database-url", &db.url]).success();
        assert!(!list.stdout.contains(SECRET), "{list:#?}");
        assert!(list.stdout.contains("jwt-max-age-seconds = 120"), "{list:#?}");
        assert!(list.stdout.contains("jwt-clock-skew-seconds = 30"), "{list:#?}");
        assert!(list.stdout.contains("jwt-shared-secret = \"**********"), "{list:#?}");

        let before = stored(&db).await;

        // Invalid values: non-zero, the message names the setting, nothing stored.
        let out = settings_set(&db, "jwt-clock-skew-seconds", "9999").failure();
        assert!(out.stderr.contains("jwt-clock-skew-seconds"), "{out:#?}");
        assert_eq!(get_json(&db, "jwt-clock-skew-seconds"), json!(30));
        let out = settings_set(&db, "jwt-identity-provider-uri", "not a url").failure();
        assert!(out.stderr.contains("jwt-identity-provider-uri"), "{out:#?}");
        let out = settings_set(&db, "jwt-group-mappings", r#"{"eng":[999]}"#).failure();
        assert!(out.stderr.contains("999"), "{out:#?}");
        let out = settings_set(&db, "jwt-enabled", "maybe").failure();
        assert!(out.stderr.contains("jwt-enabled"), "{out:#?}");
        // A JSON string that is refused is not stored with its quotes instead.
        let quoted_blanks = format!("\"{}\"", " ".repeat(40));
        let out = settings_set(&db, "jwt-shared-secret", &quoted_blanks).failure();
        assert!(out.stderr.contains("jwt-shared-secret"), "{out:#?}");

        // Unknown keys.
        let out = settings_set(&db, "no-such-key", "1").failure();
        assert!(out.stderr.contains("no-such-key"), "{out:#?}");
        let out = settings_get(&db, "no-such-key").failure();
        assert!(out.stderr.contains("no-such-key"), "{out:#?}");

        assert_eq!(stored(&db).await, before, "failed commands stored nothing");

        // null goes back to the default.
        settings_set(&db, "jwt-max-age-seconds", "null").success();
        assert_eq!(get_json(&db, "jwt-max-age-seconds"), json!(180));
    }

    async fn the_environment_fixes_a_setting(db) {
        run(&["migrate", "--database-url", &db.url]).success();
        let env = |args: &[&str]| {
            let mut cmd = command(args);
            cmd.env("LATCHKEY_JWT_MAX_AGE_SECONDS", "60");
            run_with(cmd, None)
        };
        let out = env(&["settings", "get", "jwt-max-age-seconds", "--database-url", &db.url]).success();
        assert_eq!(out.line(), "60");
        let out = env(&["settings", "set", "jwt-max-age-seconds", "100", "--database-url", &db.url])
            .failure();
        assert!(out.stderr.contains("LATCHKEY_JWT_MAX_AGE_SECONDS"), "{out:#?}");
        let out = env(&["settings", "list", "--database-url", &db.url]).success();
        assert!(
            out.stdout.contains("jwt-max-age-seconds = 60  (fixed by LATCHKEY_JWT_MAX_AGE_SECONDS)"),
            "{out:#?}"
        );
        assert_eq!(get_json(&db, "jwt-max-age-seconds"), json!(180), "nothing stored");

        let mut cmd = command(&["settings", "get", "jwt-clock-skew-seconds", "--database-url", &db.url]);
        cmd.env("LATCHKEY_JWT_CLOCK_SKEW_SECONDS", "9999");
        let out = run_with(cmd, None).failure();
        assert!(out.stderr.contains("LATCHKEY_JWT_CLOCK_SKEW_SECONDS"), "{out:#?}");
    }

    async fn a_change_reaches_running_servers_within_2_seconds(db) {
        let one = Proc::serve(&db);
        let two = Proc::serve(&db);
        for server in [&one, &two] {
            assert_eq!(properties(server).await["jwt_enabled"], json!(false));
        }
        configure_jwt(&db, "https://idp.example/login", SECRET);
        for server in [&one, &two] {
            let took = wait_for_property(server, "jwt_enabled", json!(true), SETTING_PROPAGATION).await;
            eprintln!("jwt_enabled seen after {took:?}");
            let res = client()
                .get(server.url("/auth/sso?redirect=/home"))
                .send()
                .await
                .expect("sso start");
            assert_eq!(res.status(), StatusCode::FOUND);
            assert_eq!(location(&res), "https://idp.example/login?return_to=%2Fhome");
        }
        settings_set(&db, "jwt-enabled", "false").success();
        for server in [&one, &two] {
            wait_for_property(server, "jwt_enabled", json!(false), SETTING_PROPAGATION).await;
        }
    }

    async fn break_glass_reenables_password_login(db) {
        let server = Proc::serve(&db);
        admin_create(&db, ADMIN_EMAIL, ADMIN_PASSWORD).success();
        configure_jwt(&db, "https://idp.example/login", SECRET);
        wait_for_property(&server, "jwt_enabled", json!(true), SETTING_PROPAGATION).await;

        // The lock-out guard holds on the command line too.
        let out = settings_set(&db, "enable-password-login", "false").failure();
        assert!(out.stderr.contains("SSO"), "says how to fix it: {out:#?}");
        assert_eq!(get_json(&db, "enable-password-login"), json!(true));

        // The admin signs in through SSO once (a token from `latchkey token sign`).
        let token = run(&["token", "sign", "--email", ADMIN_EMAIL, "--database-url", &db.url])
            .success()
            .line();
        let res = client()
            .get(server.url("/auth/sso"))
            .query(&[("jwt", token.as_str())])
            .send()
            .await
            .expect("sso callback");
        assert_eq!(res.status(), StatusCode::FOUND);
        assert!(session_cookie(&res).is_some());

        settings_set(&db, "enable-password-login", "false").success();
        wait_for_property(&server, "password_login_enabled", json!(false), SETTING_PROPAGATION).await;
        let res = password_login(&server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(body_json(res).await["error"], json!("password_login_disabled"));

        // Break-glass.
        settings_set(&db, "enable-password-login", "true").success();
        wait_for_property(&server, "password_login_enabled", json!(true), SETTING_PROPAGATION).await;
        let res = password_login(&server, ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
}
