//! Single use (SPEC §4.3): a token is accepted once, across instances sharing the database;
//! a browser already signed in as that user is just redirected; concurrent first logins of
//! one email make one user.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

both_backends! {
    async fn a_token_is_accepted_once_with_or_without_jti(mut app) {
        sso_ready(&mut app).await;
        // With a jti, the jti is the key.
        let token = sign(login_claims("once@example.com"));
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        assert_eq!(app.count("replay_records").await, 1);
        expect_refused(&app, &token, 401, "token_replayed", "same token").await;
        // Without a jti, the digest of header.payload is the key.
        let token = sign(json!({"email": "once@example.com", "iat": now()}));
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        assert_eq!(app.count("replay_records").await, 2);
        expect_refused(&app, &token, 401, "token_replayed", "same token without jti").await;
        // Over POST too.
        let before = Counts::of(&app).await;
        let res = app.client.post(app.url("/auth/sso")).form(&[("jwt", token.as_str())]).send().await.unwrap();
        assert_error(res, 401, "token_replayed").await;
        assert_nothing_written(&app, &before, "POST replay").await;
        assert_eq!(app.count("sessions").await, 3, "the admin's and two SSO sessions");
    }

    async fn another_token_with_a_used_jti_is_a_replay(mut app) {
        sso_ready(&mut app).await;
        let first = sign(json!({"email": "jti@example.com", "iat": now(), "jti": "shared-jti"}));
        assert_eq!(app.sso_callback(&first, None).await.status(), StatusCode::FOUND);
        let second = sign(json!({"email": "jti@example.com", "first_name": "Different", "iat": now(), "jti": "shared-jti"}));
        assert_ne!(first, second);
        expect_refused(&app, &second, 401, "token_replayed", "reused jti").await;
        assert_eq!(user_by_email(&app, "jti@example.com").await.first_name, None, "the second token changed nothing");
    }

    async fn a_jti_of_any_length_is_accepted_once(mut app) {
        sso_ready(&mut app).await;
        // 3,000 characters: longer than a PostgreSQL B-tree entry may be, so it is keyed by
        // its SHA-256; a jti of 256 bytes is kept as it is.
        for (n, jti) in [("long", "j".repeat(3000)), ("at-limit", "k".repeat(256))] {
            let token = sign(json!({"email": "longjti@example.com", "iat": now(), "jti": jti}));
            assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND, "{n}");
            expect_refused(&app, &token, 401, "token_replayed", n).await;
            let other = sign(json!({"email": "longjti@example.com", "first_name": "Other", "iat": now(), "jti": jti}));
            expect_refused(&app, &other, 401, "token_replayed", n).await;
        }
        assert_eq!(app.count("replay_records").await, 2);
    }

    async fn a_token_used_on_one_instance_is_refused_on_another(mut app) {
        sso_ready(&mut app).await;
        let other = spawn_instance(&app).await;
        let token = sign(login_claims("multi@example.com"));
        assert_eq!(other.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        let before = Counts::of(&app).await;
        let res = app.sso_callback(&token, None).await;
        assert_error(res, 401, "token_replayed").await;
        assert_nothing_written(&app, &before, "replay on the first instance").await;
        // And the other way round.
        let token = sign(login_claims("multi@example.com"));
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        assert_error(other.sso_callback(&token, None).await, 401, "token_replayed").await;
    }

    async fn concurrent_uses_across_two_instances_accept_exactly_one(mut app) {
        sso_ready(&mut app).await;
        let other = spawn_instance(&app).await;
        let token = sign(login_claims("race@example.com"));
        let before = Counts::of(&app).await;
        let mut tasks = Vec::new();
        for i in 0..10 {
            let (client, base) = if i % 2 == 0 { (app.client.clone(), app.base.clone()) } else { (other.client.clone(), other.base.clone()) };
            let token = token.clone();
            tasks.push(tokio::spawn(async move {
                let res = client.get(format!("{base}/auth/sso")).query(&[("jwt", token)]).send().await.unwrap();
                let status = res.status().as_u16();
                let body = res.text().await.unwrap();
                (status, body)
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                302 => ok += 1,
                401 => assert!(body.contains("token_replayed"), "{body}"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(ok, 1, "exactly one use is accepted");
        let after = Counts::of(&app).await;
        assert_eq!(after.sessions, before.sessions + 1);
        assert_eq!(after.users, before.users + 1);
        assert_eq!(after.replay_records, before.replay_records + 1);
    }

    async fn a_browser_already_signed_in_as_that_user_is_just_redirected(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("refresh@example.com"));
        let res = app.sso_callback(&token, Some("/report")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let cookie = format!("latchkey.session={}", cookie_token(&set_cookie(&res).unwrap()));
        let before = Counts::of(&app).await;
        // Refresh / back button: the same URL again, with the session cookie.
        let res = app.client.get(app.url("/auth/sso"))
            .query(&[("jwt", token.as_str()), ("return_to", "/report")])
            .header("cookie", &cookie)
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        assert_sso_headers(res.headers(), "refresh");
        assert_eq!(location(&res), "/report");
        assert!(res.headers().get("set-cookie").is_none(), "no new session");
        assert_nothing_written(&app, &before, "refresh").await;
        // Nothing was refused, so the audit log has no failed login either.
        assert_eq!(Counts::of(&app).await.audit_events, before.audit_events, "no audit row");
        // The target is still validated first.
        let res = app.client.get(app.url("/auth/sso"))
            .query(&[("jwt", token.as_str()), ("return_to", "//evil.example")])
            .header("cookie", &cookie)
            .send().await.unwrap();
        assert_error(res, 400, "invalid_redirect").await;
    }

    async fn a_login_ends_another_users_session_the_browser_came_with(mut app) {
        sso_ready(&mut app).await;
        let with_cookie = |path: &str, session: &str| {
            app.client.post(app.url(path)).header("cookie", format!("latchkey.session={session}"))
        };
        // A session planted in the browser (fixation), or the previous user's: the new login
        // ends it.
        let (planted, _) = sso_login(&app, login_claims("planted@example.com")).await;
        let res = app.client.get(app.url("/auth/sso")).query(&[("jwt", sign(login_claims("next@example.com")).as_str())])
            .header("cookie", format!("latchkey.session={planted}"))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        let next = cookie_token(&set_cookie(&res).unwrap());
        assert!(session_works(&app, &next).await);
        assert!(!session_works(&app, &planted).await, "another user's session is over");
        // The same for a password login.
        app.create_user("pw@example.com", Some("password123"), false).await;
        let res = with_cookie("/api/session", &next).json(&json!({"username": "pw@example.com", "password": "password123"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let pw = body_json(res).await["id"].as_str().unwrap().to_owned();
        assert!(!session_works(&app, &next).await);
        // The user's own session stays (a callback submitted twice must not sign them out), and
        // a session sent in the header belongs to an API client: neither is ended.
        let res = with_cookie("/api/session", &pw).json(&json!({"username": "pw@example.com", "password": "password123"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let (other, _) = sso_login(&app, login_claims("api@example.com")).await;
        let res = app.client.post(app.url("/api/session")).header("x-latchkey-session", &other)
            .json(&json!({"username": "pw@example.com", "password": "password123"}))
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(session_works(&app, &pw).await && session_works(&app, &other).await);
        // A failed login ends nothing.
        let (kept, _) = sso_login(&app, login_claims("kept@example.com")).await;
        let res = with_cookie("/api/session", &kept).json(&json!({"username": "pw@example.com", "password": "wrong-password"})).send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        let res = app.client.get(app.url("/auth/sso")).query(&[("jwt", "not.a.token")])
            .header("cookie", format!("latchkey.session={kept}"))
            .header("accept", "application/json")
            .send().await.unwrap();
        assert_error(res, 401, "token_malformed").await;
        assert!(session_works(&app, &kept).await);
    }

    async fn a_callback_submitted_twice_by_a_signed_in_browser_keeps_it_signed_in(mut app) {
        sso_ready(&mut app).await;
        let (own, _) = sso_login(&app, login_claims("twice@example.com")).await;
        let token = sign(login_claims("twice@example.com"));
        let send = || app.client.get(app.url("/auth/sso")).query(&[("jwt", token.as_str())])
            .header("cookie", format!("latchkey.session={own}"))
            .send();
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::FOUND);
        assert!(set_cookie(&first).is_some(), "a new session");
        // The second submission, whose answer the browser keeps, is the refresh case.
        let second = send().await.unwrap();
        assert_eq!(second.status(), StatusCode::FOUND);
        assert!(second.headers().get("set-cookie").is_none());
        assert!(session_works(&app, &own).await);
    }

    async fn a_replay_with_another_users_or_a_dead_session_is_refused(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("victim@example.com"));
        let res = app.sso_callback(&token, None).await;
        let victim_cookie = format!("latchkey.session={}", cookie_token(&set_cookie(&res).unwrap()));
        let (other_session, _) = sso_login(&app, login_claims("other@example.com")).await;
        let before = Counts::of(&app).await;
        let res = app.client.get(app.url("/auth/sso")).query(&[("jwt", token.as_str())])
            .header("cookie", format!("latchkey.session={other_session}"))
            .send().await.unwrap();
        assert_error(res, 401, "token_replayed").await;
        let last = &app.audit_events("limit=1").await[0];
        assert_eq!(
            (&last["kind"], &last["outcome"], &last["reason"], &last["email"]),
            (&json!("sso_login"), &json!("failure"), &json!("token_replayed"), &json!("victim@example.com")),
        );
        // The victim's session, once logged out, no longer excuses the replay.
        let res = app.client.get(app.url("/auth/logout")).header("cookie", &victim_cookie).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        let res = app.client.get(app.url("/auth/sso")).query(&[("jwt", token.as_str())])
            .header("cookie", &victim_cookie)
            .send().await.unwrap();
        assert_error(res, 401, "token_replayed").await;
        let after = Counts::of(&app).await;
        assert_eq!(after.sessions, before.sessions - 1, "only the logout changed sessions");
        assert_eq!((after.users, after.replay_records), (before.users, before.replay_records));
    }

    async fn concurrent_first_logins_of_one_email_create_one_user(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        // Two, exactly as a double-click would send them.
        let (ta, tb) = (sign(login_claims("Twin@Example.com")), sign(login_claims("twin@example.com")));
        let (a, b) = tokio::join!(app.sso_callback(&ta, None), app.sso_callback(&tb, None));
        let statuses = [a.status().as_u16(), b.status().as_u16()];
        assert!(statuses.iter().all(|s| *s == 302 || (400..500).contains(s)), "{statuses:?}");
        assert!(statuses.contains(&302), "{statuses:?}");
        // And a burst of six.
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let client = app.client.clone();
            let url = app.url("/auth/sso");
            let token = sign(login_claims("burst@example.com"));
            tasks.push(tokio::spawn(async move {
                client.get(url).query(&[("jwt", token)]).send().await.unwrap().status().as_u16()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            let s = t.await.unwrap();
            assert!(s == 302 || (400..500).contains(&s), "status {s}");
            ok += usize::from(s == 302);
        }
        assert!(ok >= 1);
        let after = Counts::of(&app).await;
        assert_eq!(after.users, before.users + 2, "one user per email");
        for email in ["twin@example.com", "burst@example.com"] {
            let u = user_by_email(&app, email).await;
            assert_eq!(group_ids(&app, u.id).await, vec![1], "{email}: one All Users membership");
        }
        let created = app.audit_events("kind=user_created&limit=50").await;
        assert_eq!(created.iter().filter(|e| e["email"] == json!("twin@example.com")).count(), 1);
        assert_eq!(created.iter().filter(|e| e["email"] == json!("burst@example.com")).count(), 1);
    }

    async fn a_token_refused_for_an_account_reason_is_not_consumed(mut app) {
        sso_ready(&mut app).await;
        let id = app.create_user("paused@example.com", None, false).await;
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let token = sign(login_claims("paused@example.com"));
        expect_refused(&app, &token, 403, "user_deactivated", "deactivated").await;
        let res = app.admin(Method::PUT, &format!("/api/user/{id}/reactivate")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        expect_refused(&app, &token, 401, "token_replayed", "now it is used").await;
    }

    async fn the_sweep_deletes_expired_replay_records_and_keeps_the_rest(mut app) {
        sso_ready(&mut app).await;
        // Swept as of a day from now, so that the server's own sweeps (at its start, and each
        // minute on PostgreSQL) find none of these expired meanwhile.
        let at = now() + 86_400;
        // Enough records for several of the SQLite sweep's ranges of 1,024 keys, with keys of
        // every form; every third one expired, and so are the last keys of the first two ranges.
        let mut keys: Vec<String> = (0..2_600)
            .map(|i| match i % 4 {
                0 => format!("jti:sweep-{i:05}"),
                1 => format!("sha256:{i:064x}"),
                2 => format!("jti-sha256:{i:064x}"),
                _ => format!("jti:{i}"),
            })
            .collect();
        keys.sort();
        let expired_at = |n: usize| n.is_multiple_of(3) || n == 1_023 || n == 2_047;
        let values: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(n, key)| format!("('{key}', {})", if expired_at(n) { at - 10 } else { at + 3_600 }))
            .collect();
        for chunk in values.chunks(500) {
            let sql = format!(
                "INSERT INTO replay_records (token_key, expires_at) VALUES {}",
                chunk.join(", ")
            );
            assert_eq!(app.execute(&sql).await, chunk.len() as u64);
        }
        let expired = i64::try_from((0..keys.len()).filter(|&n| expired_at(n)).count()).unwrap();
        let total = app.count("replay_records").await;
        assert_eq!(total, 2_600);
        // The minutely sweep leaves them to the hourly one on SQLite, where it reads the whole
        // table; PostgreSQL deletes them through its index every minute.
        app.store.sweep_expired(at, false).await.unwrap();
        let after_minutely = if app.backend == Backend::Sqlite { total } else { total - expired };
        assert_eq!(app.count("replay_records").await, after_minutely);
        app.store.sweep_expired(at, true).await.unwrap();
        assert_eq!(app.count("replay_records").await, total - expired);
        let left = format!("SELECT COUNT(*) FROM replay_records WHERE expires_at < {at}");
        assert_eq!(app.ids(&left).await, [0]);
        let kept = format!("SELECT COUNT(*) FROM replay_records WHERE expires_at = {}", at + 3_600);
        assert_eq!(app.ids(&kept).await, [total - expired]);
        // A record that expires at the sweep's own time stays until the next one.
        let edge = format!("INSERT INTO replay_records (token_key, expires_at) VALUES ('jti:edge', {at})");
        app.execute(&edge).await;
        app.store.sweep_expired(at, true).await.unwrap();
        assert_eq!(app.count("replay_records").await, total - expired + 1);
    }

    async fn an_expired_record_not_yet_swept_refuses_nothing(mut app) {
        sso_ready(&mut app).await;
        let claims = |first: &str| json!({"email": "late@example.com", "first_name": first, "iat": now(), "jti": "reissued"});
        let first = sign(claims("First"));
        assert_eq!(app.sso_callback(&first, None).await.status(), StatusCode::FOUND);
        // The record's time is over, and no sweep has deleted it (SQLite's run once an hour).
        let n = app.execute("UPDATE replay_records SET expires_at = 1000 WHERE token_key = 'jti:reissued'").await;
        assert_eq!(n, 1);
        // A new token with the same jti is not a replay: the dry run says so, and it signs in.
        let second = sign(claims("Second"));
        let res = app.admin(Method::POST, "/api/sso/jwt/test").json(&json!({"token": second})).send().await.unwrap();
        let report = body_json(res).await;
        let single_use = report["checks"].as_array().unwrap().iter().find(|c| c["name"] == "single_use").cloned();
        assert_eq!(single_use.map(|c| c["ok"].clone()), Some(json!(true)), "{report}");
        assert_eq!(app.sso_callback(&second, None).await.status(), StatusCode::FOUND);
        assert_eq!(user_by_email(&app, "late@example.com").await.first_name.as_deref(), Some("Second"));
        // It took the record over, and is used up in turn.
        assert_eq!(app.count("replay_records").await, 1);
        let live = format!("SELECT COUNT(*) FROM replay_records WHERE expires_at > {}", now());
        assert_eq!(app.ids(&live).await, [1]);
        expect_refused(&app, &second, 401, "token_replayed", "the new token, twice").await;
    }
}

/// Group commit under sustained load on SQLite: every login of a long burst from 32
/// concurrent clients is answered 302 and kept (users, sessions, replay records), and the
/// write-ahead log is checkpointed and restarted meanwhile although the committing writer
/// never pauses (`src/store/sqlite_checkpoint.rs`: restarted from about 5,000 pages, 20 MiB).
/// Without that, the log would keep every page these logins wrote (about 75 MB here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_logins_are_all_kept_and_the_sqlite_log_stays_short() {
    const CLIENTS: usize = 32;
    const PER_CLIENT: usize = 150;
    let mut app = spawn_app(Backend::Sqlite).await.expect("sqlite app");
    sso_ready(&mut app).await;
    let before = Counts::of(&app).await;
    let path = app.database_url.trim_start_matches("sqlite://").to_owned();
    let wal = format!("{path}-wal");
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let client = app.client.clone();
        let url = app.url("/auth/sso");
        let wal = wal.clone();
        tasks.push(tokio::spawn(async move {
            let mut largest_log = 0;
            for i in 0..PER_CLIENT {
                let token = sign(login_claims(&format!("load-{c}-{i}@example.com")));
                let res = client
                    .get(&url)
                    .query(&[("jwt", token)])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), StatusCode::FOUND, "login {c}/{i}");
                largest_log =
                    largest_log.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
            }
            largest_log
        }));
    }
    let mut largest_log = 0;
    for t in tasks {
        largest_log = largest_log.max(t.await.unwrap());
    }
    let after = Counts::of(&app).await;
    let n = i64::try_from(CLIENTS * PER_CLIENT).unwrap();
    assert_eq!(after.users, before.users + n);
    assert_eq!(after.sessions, before.sessions + n);
    assert_eq!(after.replay_records, before.replay_records + n);
    assert!(
        largest_log < 32 * 1024 * 1024,
        "the log reached {largest_log} bytes: it is not being checkpointed"
    );
}

/// A login that fails inside a group-committed batch on SQLite does not fail the others:
/// the batch is rolled back and its logins run again one transaction each. The failure is
/// injected with a trigger that refuses one session row (a stand-in for any SQL error); that
/// login answers 500 and leaves nothing behind, every other login is answered 302 and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_that_fails_inside_a_batch_does_not_fail_the_others() {
    const LOGINS: usize = 24;
    let mut app = spawn_app(Backend::Sqlite).await.expect("sqlite app");
    sso_ready(&mut app).await;
    let path = app.database_url.trim_start_matches("sqlite://").to_owned();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON sessions WHEN NEW.user_agent = 'poison' \
             BEGIN SELECT RAISE(FAIL, 'poisoned'); END;",
        )
        .unwrap();
    let before = Counts::of(&app).await;
    let mut tasks = Vec::new();
    for i in 0..LOGINS {
        let client = app.client.clone();
        let url = app.url("/auth/sso");
        let token = sign(login_claims(&format!("batch-{i}@example.com")));
        let agent = if i == LOGINS / 2 { "poison" } else { "test" };
        tasks.push(tokio::spawn(async move {
            let res = client
                .get(url)
                .header("user-agent", agent)
                .query(&[("jwt", token)])
                .send()
                .await
                .unwrap();
            (i, res.status().as_u16())
        }));
    }
    for t in tasks {
        let (i, status) = t.await.unwrap();
        let expected = if i == LOGINS / 2 { 500 } else { 302 };
        assert_eq!(status, expected, "login {i}");
    }
    let after = Counts::of(&app).await;
    let kept = i64::try_from(LOGINS - 1).unwrap();
    assert_eq!(after.users, before.users + kept);
    assert_eq!(after.sessions, before.sessions + kept);
    assert_eq!(after.replay_records, before.replay_records + kept);
    let db = rusqlite::Connection::open(&path).unwrap();
    let users_named = |email: String| -> i64 {
        db.query_row(
            "SELECT COUNT(*) FROM users WHERE email = ?1",
            [email],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(
        users_named(format!("batch-{}@example.com", LOGINS / 2)),
        0,
        "the failed login left its user"
    );
    assert_eq!(
        users_named(format!("batch-{}@example.com", LOGINS / 2 + 1)),
        1
    );
}
