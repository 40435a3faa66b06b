//! The real binary: `settings rotate-encryption-key`, restarts with the new and the old
//! key, servers and commands that refuse an encrypted database they cannot read, and the
//! way out after a lost key.

use latchkey::settings::encryption::{self, EncryptionKey, KEY_ENV, NEW_KEY_ENV};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;
use crate::helpers::*;

/// A token for `email` signed with the test secret.
fn token(email: &str) -> String {
    crate::support::sign(crate::support::login_claims(email))
}

/// Signs in through SSO on `server` and expects a session.
async fn sso_works(server: &Proc) {
    let res = client()
        .get(server.url("/auth/sso"))
        .query(&[("jwt", token("ada@example.com"))])
        .send()
        .await
        .expect("sso");
    assert_eq!(res.status(), StatusCode::FOUND, "{}", server.output());
    assert!(session_cookie(&res).is_some());
}

fn rotate(db: &Db, old: Option<&EncryptionKey>, new_stdin: &str) -> Outcome {
    let old_hex = old.map(EncryptionKey::to_hex);
    let vars: Vec<(&str, &str)> = old_hex.iter().map(|k| (KEY_ENV, k.as_str())).collect();
    run_with(
        command_with(
            &[
                "settings",
                "rotate-encryption-key",
                "--new-key-stdin",
                "--database-url",
                &db.url,
            ],
            &vars,
        ),
        Some(new_stdin),
    )
}

fn configure_keyed(db: &Db, key: &EncryptionKey) {
    settings_set_keyed(
        db,
        key,
        "jwt-identity-provider-uri",
        "https://idp.example/login",
    )
    .success();
    settings_set_keyed(db, key, "jwt-shared-secret", SECRET).success();
    settings_set_keyed(db, key, "jwt-enabled", "true").success();
}

cli_both_backends! {
    async fn rotation_then_restart_with_the_new_key_works_and_the_old_key_refuses(db) {
        let k1 = EncryptionKey::generate();
        let k2 = EncryptionKey::generate();
        configure_keyed(&db, &k1);
        let before = raw_setting(&db.url, "jwt-shared-secret").await.expect("stored");
        assert!(!before.contains(SECRET));

        let out = rotate(&db, Some(&k1), &format!("{}\n", k2.to_hex())).success();
        assert!(
            out.stdout.contains(&format!("jwt-shared-secret: re-encrypted with the new key (key id {})", k2.id())),
            "{out:#?}"
        );
        assert!(!out.stdout.contains(&k2.to_hex()) && !out.stdout.contains(SECRET), "{out:#?}");
        let after = raw_setting(&db.url, "jwt-shared-secret").await.expect("stored");
        assert_ne!(after, before);
        assert_eq!(
            encryption::open(&k2, "jwt-shared-secret", &after).expect("opens with the new key"),
            json!(SECRET).to_string()
        );

        // The new key: the server starts and SSO works; commands read the secret.
        let mut server = serve_with(&db, &[(KEY_ENV, &k2.to_hex())]);
        sso_works(&server).await;
        let signed = run_with(
            keyed(&["token", "sign", "--email", "ada@example.com", "--database-url", &db.url], &k2),
            None,
        )
        .success();
        assert_signed_with(&signed.line(), SECRET);
        server.signal("TERM");
        assert_eq!(server.wait_exit(DEADLINE).code(), Some(0));

        // The old key, and no key: refused at start, naming the setting and what to do.
        let out = serve_refused(&db, &[(KEY_ENV, &k1.to_hex())]);
        assert!(out.stderr.contains("jwt-shared-secret was encrypted with another key"), "{out:#?}");
        assert!(out.stderr.contains(&k2.id()), "{out:#?}");
        assert!(!out.stdout.contains("listening on"), "{out:#?}");
        let out = serve_refused(&db, &[]);
        assert!(out.stderr.contains("jwt-shared-secret is stored encrypted"), "{out:#?}");
        assert!(out.stderr.contains("LATCHKEY_ENCRYPTION_KEY"), "{out:#?}");
        // Commands that load the settings refuse too.
        let out = settings_get(&db, "jwt-enabled").failure();
        assert!(out.stderr.contains("jwt-shared-secret is stored encrypted"), "{out:#?}");

        // A rotation with the wrong old key changes nothing.
        let k3 = EncryptionKey::generate();
        let out = rotate(&db, Some(&k1), &k3.to_hex()).failure();
        assert!(out.stderr.contains("another key"), "{out:#?}");
        assert_eq!(raw_setting(&db.url, "jwt-shared-secret").await.as_deref(), Some(after.as_str()));

        // The audit log records the rotation without the secret.
        let store = latchkey::store::Store::connect(&db.url).await.expect("connect");
        let (events, _) = store
            .list_audit(&latchkey::store::AuditQuery { kind: Some("setting_changed".into()), limit: 50, ..Default::default() })
            .await
            .expect("audit");
        store.close().await;
        let rotated: Vec<_> = events.iter().filter(|e| e.details.contains("re-encrypted")).collect();
        assert_eq!(rotated.len(), 1, "{events:#?}");
        assert!(!rotated[0].details.contains(SECRET));
    }

    async fn rotation_from_plain_text_switches_encryption_on(db) {
        configure_jwt(&db, "https://idp.example/login", SECRET);
        assert_eq!(
            raw_setting(&db.url, "jwt-shared-secret").await,
            Some(json!(SECRET).to_string())
        );
        // Without a key, the server warns at start that the secret is stored in plain text.
        let mut server = serve_with(&db, &[]);
        server.wait_for_line("stored in plain text", DEADLINE);
        server.signal("TERM");
        server.wait_exit(DEADLINE);

        // No old key needed; the new one from LATCHKEY_NEW_ENCRYPTION_KEY (base64 works).
        let key = EncryptionKey::generate();
        let b64 = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(hex::decode(key.to_hex()).expect("hex"))
        };
        let out = run_with(
            command_with(
                &["settings", "rotate-encryption-key", "--database-url", &db.url],
                &[(NEW_KEY_ENV, &b64)],
            ),
            None,
        )
        .success();
        assert!(out.stdout.contains("it was stored in plain text"), "{out:#?}");
        let row = raw_setting(&db.url, "jwt-shared-secret").await.expect("stored");
        assert!(encryption::is_sealed(&row) && !row.contains(SECRET), "{row}");

        let server = serve_with(&db, &[(KEY_ENV, &key.to_hex())]);
        assert!(!server.output().contains("plain text"), "{}", server.output());
        sso_works(&server).await;
    }
}

#[test]
fn rotation_needs_a_valid_new_key() {
    let db = Db::new(Backend::Sqlite).expect("sqlite");
    let out = run(&[
        "settings",
        "rotate-encryption-key",
        "--database-url",
        &db.url,
    ])
    .failure();
    assert!(
        out.stderr.contains("--new-key-stdin") && out.stderr.contains(NEW_KEY_ENV),
        "{out:#?}"
    );
    let out = rotate(&db, None, "too short\n").failure();
    assert!(
        out.stderr.contains("64 hex characters or as base64"),
        "{out:#?}"
    );
    // No database there: nothing is created.
    let out = rotate(&db, None, &EncryptionKey::generate().to_hex()).failure();
    assert!(out.stderr.contains("no database at"), "{out:#?}");
    // Nothing stored: nothing to do, said so.
    run(&["migrate", "--database-url", &db.url]).success();
    let out = rotate(&db, None, &EncryptionKey::generate().to_hex()).success();
    assert!(out.stdout.contains("nothing to encrypt"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_or_a_lost_key_has_a_way_out() {
    let db = Db::new(Backend::Sqlite).expect("sqlite");
    let key = EncryptionKey::generate();
    configure_keyed(&db, &key);

    // An invalid key stops the server at start, without echoing it.
    let out = serve_refused(&db, &[(KEY_ENV, "correct-horse-battery-staple")]);
    assert!(
        out.stderr
            .contains("LATCHKEY_ENCRYPTION_KEY is not a valid encryption key"),
        "{out:#?}"
    );
    assert!(!out.stderr.contains("correct-horse"), "{out:#?}");

    // The key is lost: overwriting the secret is allowed (nothing else is) …
    let out = settings_set(&db, "jwt-issuer", "https://idp.example").failure();
    assert!(
        out.stderr.contains("jwt-shared-secret is stored encrypted"),
        "{out:#?}"
    );
    let new_secret = "89abcdef01234567".repeat(4);
    settings_set(&db, "jwt-shared-secret", &new_secret).success();
    assert_eq!(
        raw_setting(&db.url, "jwt-shared-secret").await,
        Some(json!(new_secret).to_string()),
        "stored in plain text: no key was given"
    );
    // … and so is removing it; then a server without a key starts.
    let key2 = EncryptionKey::generate();
    settings_set_keyed(&db, &key2, "jwt-shared-secret", SECRET).success();
    settings_set(&db, "jwt-shared-secret", "null").success();
    assert_eq!(raw_setting(&db.url, "jwt-shared-secret").await, None);
    let server = serve_with(&db, &[]);
    assert_eq!(properties(&server).await["jwt_enabled"], json!(false));
}
