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
        "LATCHKEY_ENCRYPTION_KEY",
        "LATCHKEY_SQLITE_SYNCHRONOUS",
        "LATCHKEY_CLIENT_TIMEOUT_SECONDS",
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
fn help_names_environment_variables_but_never_shows_their_values() {
    // clap appends `[env: NAME=value]` to the help of an argument read from the
    // environment unless told not to: a secret or a database password set in the
    // environment would then be printed by `--help`.
    let env = [
        (
            "LATCHKEY_DATABASE_URL",
            "postgres://dbuser:db-password-c0ffee@db.invalid/latchkey",
        ),
        (
            "LATCHKEY_JWT_SHARED_SECRET",
            "shared-secret-0123456789abcdef0123456789abcdef",
        ),
        ("LATCHKEY_LISTEN", "127.0.0.1:4567"),
        ("LATCHKEY_LOG_FORMAT", "json"),
    ];
    let commands: [(&[&str], &[&str]); 13] = [
        (
            &["serve"],
            &[
                "LATCHKEY_DATABASE_URL",
                "LATCHKEY_LISTEN",
                "LATCHKEY_LOG_FORMAT",
            ],
        ),
        (&["migrate"], &["LATCHKEY_DATABASE_URL"]),
        (&["doctor"], &["LATCHKEY_DATABASE_URL"]),
        (&["example-idp"], &["LATCHKEY_JWT_SHARED_SECRET"]),
        (&["admin", "create"], &["LATCHKEY_DATABASE_URL"]),
        (&["admin", "set-password"], &["LATCHKEY_DATABASE_URL"]),
        (&["admin", "list"], &["LATCHKEY_DATABASE_URL"]),
        (&["settings", "get"], &["LATCHKEY_DATABASE_URL"]),
        (&["settings", "set"], &["LATCHKEY_DATABASE_URL"]),
        (&["settings", "list"], &["LATCHKEY_DATABASE_URL"]),
        (
            &["settings", "rotate-encryption-key"],
            &["LATCHKEY_DATABASE_URL"],
        ),
        (
            &["token", "sign"],
            &["LATCHKEY_DATABASE_URL", "LATCHKEY_JWT_SHARED_SECRET"],
        ),
        (&[], &[]),
    ];
    for (sub, names) in commands {
        for flag in ["--help", "-h"] {
            let mut args = sub.to_vec();
            args.push(flag);
            let mut cmd = command(&args);
            cmd.envs(env);
            let out = run_with(cmd, None).success();
            let shown = format!("{}{}", out.stdout, out.stderr);
            for (name, value) in env {
                assert!(
                    !shown.contains(&format!("{name}=")),
                    "{args:?} shows {name}: {out:#?}"
                );
                // The log format's value is also one of its possible values.
                if name != "LATCHKEY_LOG_FORMAT" {
                    assert!(!shown.contains(value), "{args:?} shows {name}: {out:#?}");
                }
            }
            for name in names {
                assert!(out.stdout.contains(name), "{args:?} names {name}: {out:#?}");
            }
        }
    }
    // Hidden in the help only: the values are still used.
    let mut cmd = command(&["token", "sign", "--email", "a@example.com"]);
    cmd.env("LATCHKEY_JWT_SHARED_SECRET", env[1].1);
    let out = run_with(cmd, None).success();
    assert_signed_with(out.stdout.trim(), env[1].1);
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

/// The commands that read, or change what must already be there, refuse a SQLite path where
/// there is no database instead of creating an empty one and answering from it.
#[test]
fn reading_commands_refuse_a_missing_database_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo").join("latchkey.db");
    let url = format!("sqlite://{}", path.display());
    let commands: [&[&str]; 5] = [
        &["settings", "get", "jwt-enabled"],
        &["settings", "list"],
        &["admin", "list"],
        &["doctor"],
        &["token", "sign", "--email", "ada@example.com"],
    ];
    for args in commands {
        let mut argv = args.to_vec();
        argv.extend(["--database-url", &url]);
        let out = run(&argv).failure();
        assert!(
            out.stdout.contains("no database at") || out.stderr.contains("no database at"),
            "{args:?}: {out:#?}"
        );
        assert!(!path.exists(), "{args:?} created the database");
    }
    // `settings set` may configure a server before its first start: it creates the database.
    run(&[
        "settings",
        "set",
        "jwt-enabled",
        "false",
        "--database-url",
        &url,
    ])
    .success();
    assert!(path.exists());
    let out = run(&["settings", "get", "jwt-enabled", "--database-url", &url]).success();
    assert!(out.stdout.contains("false"), "{out:#?}");
}
