//! In-process, on SQLite and PostgreSQL: what the settings table holds with and without
//! `LATCHKEY_ENCRYPTION_KEY`, SSO on a sealed secret, and instances that must refuse to
//! start.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use latchkey::app::App;
use latchkey::settings::encryption::{self, EncryptionKey, KEY_ENV};
use latchkey::store::Store;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::raw_setting;
use crate::support::{
    self, Backend, SECRET, TestApp, assert_error, body_json, login_claims, sign, sign_with,
};

fn key_env(key: &EncryptionKey) -> HashMap<String, String> {
    HashMap::from([(KEY_ENV.to_owned(), key.to_hex())])
}

/// Runs each test on both backends with a server started with a fresh encryption key:
/// `async fn name(app, key) { … }`.
macro_rules! keyed_both_backends {
    ($(async fn $name:ident($app:pat, $key:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: TestApp, $key: EncryptionKey) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let key = EncryptionKey::generate();
                    let app = support::spawn_app_with_env(Backend::Sqlite, key_env(&key))
                        .await
                        .expect("sqlite app");
                    run(app, key).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let key = EncryptionKey::generate();
                    if let Some(app) = support::spawn_app_with_env(Backend::Postgres, key_env(&key)).await {
                        run(app, key).await;
                    }
                }
            }
        )*
    };
}

/// Another server on `app`'s database with `LATCHKEY_ENCRYPTION_KEY` = `key` (or unset).
async fn build(app: &TestApp, key: Option<String>) -> anyhow::Result<App> {
    App::build_with_env("127.0.0.1:0", &app.database_url, move |name| {
        if name == KEY_ENV { key.clone() } else { None }
    })
    .await
}

/// The error of a server that must not start.
async fn refused(app: &TestApp, key: Option<String>) -> String {
    match build(app, key).await {
        Ok(_) => panic!("the server started"),
        Err(e) => format!("{e:#}"),
    }
}

async fn write_raw(store: &Store, name: &str, value: &str) {
    let sql = "UPDATE settings SET value = $1 WHERE key = $2";
    let done = match store {
        Store::Sqlite(p) => sqlx::query(sql)
            .bind(value)
            .bind(name)
            .execute(&p.write)
            .await
            .map(|r| r.rows_affected()),
        Store::Postgres(p) => sqlx::query(sql)
            .bind(value)
            .bind(name)
            .execute(&p.write)
            .await
            .map(|r| r.rows_affected()),
    };
    assert_eq!(done.expect("update"), 1);
}

async fn assert_sso_works(app: &TestApp, secret: &str) {
    let res = app
        .sso_callback(&sign_with(login_claims("ada@example.com"), secret), None)
        .await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert!(
        res.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .any(|v| v.to_str().unwrap_or("").starts_with("latchkey.session=")),
        "a session cookie"
    );
}

keyed_both_backends! {
    async fn the_stored_secret_is_sealed_and_sso_still_works(mut app, key) {
        app.login_admin().await;
        app.configure_jwt().await;

        let row = raw_setting(&app.database_url, "jwt-shared-secret").await.expect("stored");
        assert!(!row.contains(SECRET), "{row}");
        assert!(!row.contains(&SECRET[SECRET.len() - 8..]), "no part of the secret: {row}");
        let envelope: Value = serde_json::from_str(&row).expect("JSON envelope");
        assert_eq!(envelope["enc"], json!("v1"));
        assert_eq!(envelope["kid"], json!(key.id()));
        assert_eq!(
            encryption::open(&key, "jwt-shared-secret", &row).expect("opens"),
            json!(SECRET).to_string()
        );
        // Settings that are not secret are stored as before.
        assert_eq!(raw_setting(&app.database_url, "jwt-enabled").await.as_deref(), Some("true"));

        // The API still shows the masked effective value, and SSO verifies with the secret.
        let res = app.admin(Method::GET, "/api/setting/jwt-shared-secret").send().await.expect("get");
        assert_eq!(body_json(res).await["value"], json!(format!("**********{}", &SECRET[60..])));
        assert_sso_works(&app, SECRET).await;

        // A new secret: a new envelope with a fresh nonce; the new secret signs in, the old
        // one no longer does.
        let second = "fedcba9876543210".repeat(4);
        assert_eq!(app.put_setting("jwt-shared-secret", json!(second)).await.status(), StatusCode::NO_CONTENT);
        let row2 = raw_setting(&app.database_url, "jwt-shared-secret").await.expect("stored");
        let envelope2: Value = serde_json::from_str(&row2).expect("JSON envelope");
        assert_ne!(envelope2["nonce"], envelope["nonce"]);
        assert!(!row2.contains(&second), "{row2}");
        assert_sso_works(&app, &second).await;
        let res = app.sso_callback(&sign(login_claims("ada@example.com")), None).await;
        assert_error(res, 401, "bad_signature").await;

        // Neither the secret nor its envelope reaches the audit log.
        let audit = serde_json::to_string(&app.audit_events("kind=setting_changed").await).unwrap();
        assert!(!audit.contains(SECRET) && !audit.contains(&second), "{audit}");
        assert!(!audit.contains("\"enc\""), "{audit}");
    }

    async fn instances_without_the_key_or_with_another_refuse_to_start(mut app, key) {
        app.login_admin().await;
        app.configure_jwt().await;

        let err = refused(&app, None).await;
        assert!(err.contains("jwt-shared-secret is stored encrypted"), "{err}");
        assert!(err.contains("LATCHKEY_ENCRYPTION_KEY is not set"), "{err}");
        assert!(err.contains("latchkey settings set jwt-shared-secret"), "the way out: {err}");

        let other = EncryptionKey::generate();
        let err = refused(&app, Some(other.to_hex())).await;
        assert!(err.contains("encrypted with another key"), "{err}");
        assert!(err.contains(&key.id()) && err.contains(&other.id()), "{err}");
        assert!(!err.contains(&other.to_hex()) && !err.contains(SECRET), "{err}");

        let err = refused(&app, Some("not-a-key".into())).await;
        assert!(err.contains("LATCHKEY_ENCRYPTION_KEY is not a valid encryption key"), "{err}");
        assert!(!err.contains("not-a-key"), "the value is not echoed: {err}");

        // The same key in base64 is the same key.
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(hex::decode(key.to_hex()).expect("hex"));
        let second = build(&app, Some(b64)).await.expect("starts with the key in base64");
        assert_eq!(second.state().settings.current().str("jwt-shared-secret"), Some(SECRET));
    }

    async fn an_altered_ciphertext_fails_closed(mut app, key) {
        app.login_admin().await;
        app.configure_jwt().await;
        let row = raw_setting(&app.database_url, "jwt-shared-secret").await.expect("stored");
        let mut envelope: Value = serde_json::from_str(&row).expect("JSON envelope");
        let mut ct = B64.decode(envelope["ct"].as_str().expect("ct")).expect("base64");
        ct[0] ^= 1;
        envelope["ct"] = json!(B64.encode(&ct));
        write_raw(&app.store, "jwt-shared-secret", &envelope.to_string()).await;

        let err = refused(&app, Some(key.to_hex())).await;
        assert!(err.contains("jwt-shared-secret does not decrypt"), "{err}");

        // The running instance never takes the altered value: after its reload it still
        // verifies with the secret it had read and checked.
        tokio::time::sleep(latchkey::settings::RELOAD_INTERVAL + Duration::from_millis(500)).await;
        assert_sso_works(&app, SECRET).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_fixed_by_the_environment_is_never_stored() {
    let secret = "0011223344556677".repeat(4);
    let env = HashMap::from([
        (KEY_ENV.to_owned(), EncryptionKey::generate().to_hex()),
        ("LATCHKEY_JWT_SHARED_SECRET".to_owned(), secret.clone()),
    ]);
    let mut app = support::spawn_app_with_env(Backend::Sqlite, env)
        .await
        .expect("app");
    app.login_admin().await;
    let res = app.put_setting("jwt-shared-secret", json!(SECRET)).await;
    assert_error(res, 409, "setting_locked").await;
    assert_eq!(
        raw_setting(&app.database_url, "jwt-shared-secret").await,
        None
    );
    assert!(
        latchkey::settings::secrets_at_rest(&app.store)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        app.store.load_settings().await.expect("read").len(),
        0,
        "nothing stored at all"
    );
}

both_backends! {
    async fn an_instance_left_on_the_old_key_refuses_settings_writes_with_a_409(mut app) {
        app.login_admin().await;
        let k1 = EncryptionKey::generate();
        let k2 = EncryptionKey::generate();
        let old = build(&app, Some(k1.to_hex())).await.expect("starts with the first key");
        let settings = &old.state().settings;
        let actor = latchkey::settings::Actor { user_id: None, ip: None, request_id: None };
        settings.put(vec![("jwt-shared-secret".into(), json!(SECRET))], &actor).await.expect("sealed with k1");
        // Rotated elsewhere: the stored secret is now sealed with k2.
        write_raw(&app.store, "jwt-shared-secret", &encryption::seal(&k2, "jwt-shared-secret", &json!(SECRET).to_string())).await;
        // Writing the secret opens its stored row in the write transaction: a 409, not a 500.
        let err = settings.put(vec![("jwt-shared-secret".into(), json!("y".repeat(40)))], &actor).await.expect_err("unreadable");
        assert!(matches!(err, latchkey::error::Error::Conflict(_)), "{err:?}");
        // Once the instance has noticed (its reload keeps the snapshot), every write is refused.
        settings.reload().await.expect("keeps the snapshot");
        for (key, value) in [("session-cookie-samesite", json!("Strict")), ("jwt-shared-secret", json!("x".repeat(40))), ("jwt-shared-secret", Value::Null)] {
            let err = settings.put(vec![(key.into(), value)], &actor).await.expect_err(key);
            assert!(matches!(err, latchkey::error::Error::Conflict(_)), "{key}: {err:?}");
            assert!(err.to_string().contains("LATCHKEY_ENCRYPTION_KEY"), "{err}");
        }
        assert_eq!(raw_setting(&app.database_url, "session-cookie-samesite").await, None, "nothing written");
        assert_eq!(settings.current().str("jwt-shared-secret"), Some(SECRET), "the snapshot in effect");
    }

    async fn without_a_key_secrets_are_stored_as_before(mut app) {
        app.login_admin().await;
        app.configure_jwt().await;
        assert_eq!(
            raw_setting(&app.database_url, "jwt-shared-secret").await,
            Some(json!(SECRET).to_string())
        );
        assert_eq!(
            latchkey::settings::secrets_at_rest(&app.store).await.expect("read"),
            vec![("jwt-shared-secret", false)]
        );
        // A server given a key reads the plain value (encryption is switched on by
        // `settings rotate-encryption-key`, tested with the binary).
        let key = EncryptionKey::generate();
        let second = build(&app, Some(key.to_hex())).await.expect("starts");
        assert!(second.state().settings.encrypts_secrets());
        assert_eq!(second.state().settings.current().str("jwt-shared-secret"), Some(SECRET));
    }
}
