//! `latchkey admin create|list|set-password`, run while a server uses the same database.

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::*;

fn set_password(db: &Db, email: &str, stdin: &str) -> Outcome {
    run_stdin(
        &[
            "admin",
            "set-password",
            "--email",
            email,
            "--password-stdin",
            "--database-url",
            &db.url,
        ],
        stdin,
    )
}

cli_both_backends! {
    async fn create_list_and_set_password_while_the_server_runs(db) {
        let server = Proc::serve(&db);
        let out = admin_create(&db, "Ada@Example.com", "first password 1").success();
        assert!(out.stdout.contains("ada@example.com"), "{out:#?}");

        // The trailing newline was not part of the password.
        let res = password_login(&server, "ada@example.com", "first password 1").await;
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = session_cookie(&res).expect("session cookie");
        let body = body_json(res).await;
        assert!(body["id"].as_str().is_some_and(|s| !s.is_empty()), "{body}");
        let me = current_user(&server, &cookie).await;
        assert_eq!(me["email"], json!("ada@example.com"));
        assert_eq!(me["first_name"], json!("Ada"));
        assert_eq!(me["last_name"], json!("Lovelace"));
        assert_eq!(me["is_superuser"], json!(true));
        let res = password_login(&server, "ada@example.com", "first password 1\n").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        // The same email again (in another case): refused, nothing changed.
        let again = admin_create(&db, "ADA@example.COM", "other password 2").failure();
        assert!(
            again.stderr.contains("already exists") && again.stderr.contains("ada@example.com"),
            "a clear message: {again:#?}"
        );
        let res = password_login(&server, "ada@example.com", "other password 2").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = password_login(&server, "ada@example.com", "first password 1").await;
        assert_eq!(res.status(), StatusCode::OK);

        admin_create(&db, "bob@example.com", "bob password 1").success();
        let list = run(&["admin", "list", "--database-url", &db.url]).success();
        let lines: Vec<&str> = list.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{list:#?}");
        let ada = lines
            .iter()
            .find(|l| l.contains("ada@example.com"))
            .expect("ada is listed");
        assert!(ada.contains("Ada Lovelace") && ada.contains("active"), "{ada}");
        assert!(list.stdout.contains("bob@example.com"), "{list:#?}");

        // set-password: the CRLF is not part of the password either.
        let out = set_password(&db, "ADA@example.com", "second password 2\r\n").success();
        assert!(out.stdout.contains("ada@example.com"), "{out:#?}");
        let res = password_login(&server, "ada@example.com", "first password 1").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let res = password_login(&server, "ada@example.com", "second password 2").await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn bad_input_is_refused_with_a_message(db) {
        let url = db.url.as_str();
        run(&["migrate", "--database-url", url]).success();
        let out = run_stdin(
            &["admin", "create", "--email", "not-an-email", "--password-stdin", "--database-url", url],
            "long enough password\n",
        )
        .failure();
        assert!(out.stderr.contains("not a valid email"), "{out:#?}");

        let out = admin_create(&db, "short@example.com", "short").failure();
        assert!(out.stderr.contains("at least 8 characters"), "{out:#?}");
        let long = "n".repeat(255);
        let out = run_stdin(
            &["admin", "create", "--email", "long@example.com", "--first-name", &long, "--password-stdin", "--database-url", url],
            "long enough password\n",
        )
        .failure();
        assert!(out.stderr.contains("--first-name must be at most 254 characters"), "{out:#?}");
        let out = run_stdin(
            &["admin", "create", "--email", "empty@example.com", "--password-stdin", "--database-url", url],
            "",
        )
        .failure();
        assert!(out.stderr.contains("at least 8 characters"), "{out:#?}");

        // --password-stdin is required (no password on the command line).
        let out = run(&["admin", "create", "--email", "x@example.com", "--database-url", url]).failure();
        assert!(out.stderr.contains("--password-stdin"), "{out:#?}");

        let out = set_password(&db, "nobody@example.com", "long enough password\n").failure();
        assert!(out.stderr.contains("nobody@example.com"), "{out:#?}");

        let list = run(&["admin", "list", "--database-url", url]).success();
        assert_eq!(list.stdout.trim(), "", "nothing was created: {list:#?}");
    }
}
