//! `latchkey migrate`, `--help` and the other command-line basics.

use serde_json::json;

use crate::harness::*;

const TABLES: [&str; 9] = [
    "users",
    "groups",
    "memberships",
    "sessions",
    "settings",
    "replay_records",
    "audit_events",
    "login_failures",
    "setup_tokens",
];

/// The names of the tables in the database (migration bookkeeping aside).
async fn tables(db: &Db) -> Vec<String> {
    let mut names: Vec<String> = match db.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.expect("connect");
            let names = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&pool)
                .await
                .expect("tables");
            pool.close().await;
            names
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("connect");
            let names = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&pool)
            .await
            .expect("tables");
            pool.close().await;
            names
        }
    };
    names.sort();
    names
}

cli_both_backends! {
    async fn migrate_creates_the_tables_and_is_idempotent(db) {
        let out = run(&["migrate", "--database-url", &db.url]).success();
        assert!(out.stdout.contains("migrations applied"), "{out:#?}");
        let names = tables(&db).await;
        for table in TABLES {
            assert!(names.iter().any(|n| n == table), "{table} in {names:?}");
        }
        run(&["migrate", "--database-url", &db.url]).success();
        assert_eq!(tables(&db).await, names);

        // A server starts on the migrated database (no admin yet).
        let server = Proc::serve(&db);
        assert_eq!(properties(&server).await["setup_required"], json!(true));
    }
}

#[test]
fn help_lists_every_command() {
    let out = run(&["--help"]).success();
    for cmd in [
        "serve",
        "admin",
        "settings",
        "token",
        "example-idp",
        "migrate",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
            "{cmd} in {}",
            out.stdout
        );
    }
    for (sub, cmds) in [
        ("admin", &["create", "set-password", "list"][..]),
        ("settings", &["get", "set", "list"][..]),
        ("token", &["sign"][..]),
    ] {
        let out = run(&[sub, "--help"]).success();
        for cmd in cmds {
            assert!(
                out.stdout.lines().any(|l| l.trim_start().starts_with(cmd)),
                "{sub} {cmd} in {}",
                out.stdout
            );
        }
    }
    let out = run(&["serve", "--help"]).success();
    for flag in [
        "--listen",
        "--database-url",
        "LATCHKEY_LISTEN",
        "LATCHKEY_DATABASE_URL",
    ] {
        assert!(out.stdout.contains(flag), "{flag} in {}", out.stdout);
    }
    let out = run(&["example-idp", "--help"]).success();
    for flag in ["--secret", "--site", "--listen", "127.0.0.1:3535"] {
        assert!(out.stdout.contains(flag), "{flag} in {}", out.stdout);
    }
    let out = run(&["--version"]).success();
    assert!(out.stdout.contains(env!("CARGO_PKG_VERSION")), "{out:#?}");
}

#[test]
fn usage_errors_exit_non_zero() {
    let out = run(&[]).failure();
    assert!(out.stderr.contains("Usage"), "{out:#?}");
    let out = run(&["frobnicate"]).failure();
    assert!(out.stderr.contains("frobnicate"), "{out:#?}");
    let out = run(&["migrate", "--database-url", "mysql://localhost/x"]).failure();
    assert!(out.stderr.contains("unsupported database URL"), "{out:#?}");
}
