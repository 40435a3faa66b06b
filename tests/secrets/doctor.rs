//! `latchkey doctor` on crafted deployments: every check of a healthy one is `ok` (exit 0);
//! a broken one gets each finding at its level with a fix (exit non-zero).

use latchkey::settings::encryption::{EncryptionKey, KEY_ENV};
use reqwest::StatusCode;

use crate::harness::*;
use crate::helpers::*;

const CHECKS: &[&str] = &[
    "database",
    "encryption",
    "site-url",
    "jwt-sso",
    "jwt-shared-secret",
    "password-login",
    "group-mappings",
    "addresses",
    "clock",
    "jwks",
];

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

/// `latchkey doctor` with `vars`.
fn doctor(db: &Db, vars: &[(&str, &str)]) -> Outcome {
    run_with(
        command_with(&["doctor", "--database-url", &db.url], vars),
        None,
    )
}

/// The line of `check`, e.g. `("warning", "…")`; panics when there is not exactly one.
#[track_caller]
fn finding<'a>(out: &'a Outcome, check: &str) -> (&'a str, &'a str) {
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(&format!("{check}:")))
        .collect();
    assert_eq!(lines.len(), 1, "one {check} line: {out:#?}");
    let (level, rest) = lines[0]
        .split_once("  ")
        .expect("two spaces after the level");
    (level, rest)
}

#[track_caller]
fn assert_finding(out: &Outcome, check: &str, level: &str, needles: &[&str]) {
    let (got, line) = finding(out, check);
    assert_eq!(got, level, "{check}: {line}\n{out:#?}");
    if level != "ok" {
        assert!(line.contains(". Fix: "), "{check} has a fix: {line}");
    }
    for n in needles {
        assert!(line.contains(n), "{check} mentions {n:?}: {line}");
    }
}

cli_both_backends! {
    async fn a_healthy_deployment_is_all_ok(db) {
        let key = EncryptionKey::generate();
        let jwks = JwksServer::start(JWKS);
        admin_create(&db, ADMIN_EMAIL, ADMIN_PASSWORD).success();
        settings_set_keyed(&db, &key, "site-url", "https://sso.example.com").success();
        settings_set_keyed(&db, &key, "jwt-identity-provider-uri", "https://idp.example/login").success();
        settings_set_keyed(&db, &key, "jwt-shared-secret", SECRET).success();
        settings_set_keyed(&db, &key, "jwt-jwks-uri", &jwks.url()).success();
        settings_set_keyed(&db, &key, "jwt-enabled", "true").success();

        // The administrator signs in once through SSO; then password login may go.
        let server = serve_with(&db, &[(KEY_ENV, &key.to_hex())]);
        let res = client()
            .get(server.url("/auth/sso"))
            .query(&[("jwt", crate::support::sign(crate::support::login_claims(ADMIN_EMAIL)))])
            .send()
            .await
            .expect("sso");
        assert_eq!(res.status(), StatusCode::FOUND, "{}", server.output());
        settings_set_keyed(&db, &key, "enable-password-login", "false").success();
        drop(server);

        let out = doctor(&db, &[(KEY_ENV, &key.to_hex())]);
        assert!(out.status.success(), "{out:#?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines.len(), CHECKS.len(), "one line per check: {out:#?}");
        for check in CHECKS {
            assert_finding(&out, check, "ok", &[]);
        }
        assert_finding(&out, "encryption", "ok", &["stored encrypted", &key.id()]);
        assert_finding(&out, "site-url", "ok", &["https://sso.example.com"]);
        assert_finding(&out, "password-login", "ok", &["password login is off", "1 active administrator"]);
        assert_finding(&out, "jwks", "ok", &["1 usable key"]);
        assert_finding(&out, "group-mappings", "ok", &["no JWT group is mapped"]);
        assert_finding(&out, "addresses", "ok", &["every stored address"]);
        match db.backend {
            Backend::Sqlite => assert_finding(&out, "clock", "ok", &["SQLite", "this machine's clock"]),
            Backend::Postgres => assert_finding(&out, "clock", "ok", &["the database's clock is"]),
        }
        assert!(!out.stdout.contains(SECRET), "{out:#?}");
    }

    async fn a_broken_deployment_gets_each_finding_and_a_failing_exit(db) {
        admin_create(&db, ADMIN_EMAIL, ADMIN_PASSWORD).success();
        let dead = format!("http://127.0.0.1:{}/jwks.json", closed_port());
        settings_set(&db, "site-url", "http://sso.example.com").success();
        settings_set(&db, "jwt-identity-provider-uri", "https://idp.example/login").success();
        settings_set(&db, "jwt-shared-secret", &"k".repeat(40)).success();
        settings_set(&db, "jwt-jwks-uri", &dead).success();
        settings_set(&db, "jwt-enabled", "true").success();
        // An account stored before the current address rules (fullwidth letters); a plain
        // non-ASCII address beside it is fine.
        let store = latchkey::store::Store::connect(&db.url).await.expect("connect");
        let mut ids = Vec::new();
        for email in ["\u{FF4F}ld@example.com", "élodie@exemple.fr"] {
            let new = latchkey::store::NewUser { email: email.into(), first_name: None, last_name: None, password_hash: None, is_superuser: false, now: 1 };
            ids.push(store.create_user(&new, &crate::support::audit_stub("user_created")).await.expect("user").id);
        }
        store.close().await;

        // Password login switched off through the environment, which the lock-out guard
        // cannot stop: nobody could administer this deployment.
        // And a mapping fixed by the environment names a group that does not exist.
        let out = doctor(&db, &[("LATCHKEY_ENABLE_PASSWORD_LOGIN", "false"), ("LATCHKEY_JWT_GROUP_MAPPINGS", r#"{"eng":[99],"adm":[2]}"#)]);
        assert!(!out.status.success(), "{out:#?}");
        assert!(out.stderr.contains("doctor found 3 error(s) and 4 warning(s)"), "{out:#?}");
        assert_finding(&out, "addresses", "warning", &[&format!("1 account(s) have an address the current rules refuse (user id {})", ids[0]), "not through SSO"]);
        assert!(!out.stdout.contains("ld@example.com"), "ids only: {out:#?}");
        assert_finding(&out, "group-mappings", "warning", &["do not exist: 99;", "LATCHKEY_JWT_GROUP_MAPPINGS"]);
        assert_eq!(out.stdout.lines().count(), CHECKS.len(), "{out:#?}");
        assert_finding(&out, "database", "ok", &[]);
        assert_finding(&out, "site-url", "error", &["plain http", "https"]);
        assert_finding(&out, "jwt-sso", "ok", &[]);
        assert_finding(&out, "jwt-shared-secret", "warning", &["does not look random", "openssl rand -hex 32"]);
        assert_finding(&out, "password-login", "error", &["nobody can administer", "LATCHKEY_ENABLE_PASSWORD_LOGIN"]);
        assert_finding(&out, "jwks", "error", &[&dead]);
        assert_finding(&out, "encryption", "warning", &["plain text", "rotate-encryption-key"]);
        assert_finding(&out, "clock", "ok", &[]);
        assert!(!out.stdout.contains(&"k".repeat(40)), "{out:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_alone_exit_0() {
    let db = Db::new(Backend::Sqlite).expect("sqlite");
    admin_create(&db, ADMIN_EMAIL, ADMIN_PASSWORD).success();
    // Stored before a key existed, then read by a deployment that has one.
    configure_jwt(
        &db,
        "https://idp.example/login",
        "aZ3kQ9xP2mN7vB4cL8wR1tY6uI5oE0sD",
    );
    settings_set(&db, "site-url", "http://localhost:3000").success();
    let key = EncryptionKey::generate();
    let out = doctor(&db, &[(KEY_ENV, &key.to_hex())]);
    assert!(out.status.success(), "{out:#?}");
    assert!(
        out.stderr.contains("4 warning(s) and no errors"),
        "{out:#?}"
    );
    assert_finding(&out, "site-url", "warning", &["this machine"]);
    assert_finding(&out, "jwt-shared-secret", "warning", &["bits", "256"]);
    assert_finding(
        &out,
        "password-login",
        "warning",
        &["no active administrator has signed in through it"],
    );
    assert_finding(
        &out,
        "encryption",
        "warning",
        &["although", "rotate-encryption-key"],
    );
    assert_finding(&out, "jwks", "ok", &["not set"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_database_without_its_key_is_an_error() {
    let db = Db::new(Backend::Sqlite).expect("sqlite");
    let key = EncryptionKey::generate();
    settings_set_keyed(&db, &key, "jwt-shared-secret", SECRET).success();
    let out = doctor(&db, &[]);
    assert!(!out.status.success(), "{out:#?}");
    assert_finding(
        &out,
        "encryption",
        "error",
        &[
            "jwt-shared-secret is stored encrypted",
            "LATCHKEY_ENCRYPTION_KEY is not set",
        ],
    );
    // The settings would not load, so the checks that need them are not run (and the
    // cause is reported once).
    assert!(!out.stdout.contains("settings:"), "{out:#?}");
    assert!(!out.stdout.contains("site-url:"), "{out:#?}");
    // With the key, the same database is fine.
    let out = doctor(&db, &[(KEY_ENV, &key.to_hex())]);
    assert_finding(&out, "encryption", "ok", &["stored encrypted"]);
}

#[test]
fn an_unreachable_database_is_an_error() {
    let url = format!("postgres://latchkey@127.0.0.1:{}/latchkey", closed_port());
    let out = run(&["doctor", "--database-url", &url]);
    assert!(!out.status.success(), "{out:#?}");
    assert!(
        out.stdout
            .starts_with("error  database: cannot open the database"),
        "{out:#?}"
    );
    assert!(out.stdout.contains("Fix: check --database-url"), "{out:#?}");
}
