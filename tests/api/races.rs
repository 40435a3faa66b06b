//! Requests that race each other, and writes made elsewhere (another instance, the CLI) that
//! this instance's one-second settings cache has not seen yet.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::support::*;

/// Sends `n` password logins for `email` at once; returns how many got each (status, code).
async fn concurrent_logins(
    app: &TestApp,
    email: &str,
    password: &str,
    n: usize,
) -> BTreeMap<(u16, String), usize> {
    let mut tries = tokio::task::JoinSet::new();
    for _ in 0..n {
        let req = app
            .client
            .post(app.url("/api/session"))
            .json(&json!({"username": email, "password": password}));
        tries.spawn(async move {
            let res = req.send().await.expect("login request");
            let status = res.status().as_u16();
            let code = body_json(res).await["error"]
                .as_str()
                .unwrap_or("none")
                .to_owned();
            (status, code)
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(answer) = tries.join_next().await {
        *answers.entry(answer.expect("login task")).or_insert(0) += 1;
    }
    answers
}

both_backends! {
    async fn a_password_login_racing_a_deactivation_leaves_no_session(mut app) {
        app.login_admin().await;
        for round in 0..6 {
            let email = format!("racer{round}@example.com");
            let id = app.create_user(&email, Some("a fine password 99"), false).await;
            let login = app.client.post(app.url("/api/session")).json(&json!({"username": email, "password": "a fine password 99"})).send();
            let deactivate = async {
                // Lands while the login hashes the password.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                app.admin(Method::DELETE, &format!("/api/user/{id}")).send().await
            };
            let (login, deactivated) = tokio::join!(login, deactivate);
            assert_eq!(deactivated.unwrap().status(), StatusCode::OK);
            let login = login.unwrap();
            let token = if login.status() == StatusCode::OK {
                body_json(login).await["id"].as_str().map(str::to_owned)
            } else {
                assert_error(login, 401, "invalid_credentials").await;
                // Refused, and recorded as a failure of this account.
                let rows = app.audit_events("kind=password_login&outcome=failure&limit=1").await;
                assert_eq!((rows[0]["user_id"].as_i64(), rows[0]["email"].as_str()), (Some(id), Some(email.as_str())), "round {round}");
                None
            };
            // Whichever came first, no session of this account outlives the deactivation:
            // not even once the account is active again.
            let res = app.admin(Method::PUT, &format!("/api/user/{id}/reactivate")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            if let Some(token) = token {
                let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
                assert_error(res, 401, "unauthenticated").await;
            }
        }
    }

    async fn concurrent_wrong_passwords_get_ten_guesses_then_429(app) {
        app.create_user("race@example.com", Some("password123"), false).await;
        let answers = concurrent_logins(&app, "race@example.com", "wrong-password", 30).await;
        let expected = BTreeMap::from([
            ((401, "invalid_credentials".to_owned()), 10),
            ((429, "too_many_attempts".to_owned()), 20),
        ]);
        assert_eq!(answers, expected);
        // One failure per guess that was judged, in each bucket; the refused ones count nowhere.
        assert_eq!(app.login_failures("email:race@example.com").await, 10);
        assert_eq!(app.login_failures("ip:127.0.0.1").await, 10);
        assert_eq!(app.count("login_failures").await, 20);
        // Throttled: even the right password is refused, and no session is opened.
        let res = app.client.post(app.url("/api/session"))
            .json(&json!({"username": "race@example.com", "password": "password123"}))
            .send().await.unwrap();
        assert_error(res, 429, "too_many_attempts").await;
        // The sign-in form shares the throttle.
        let res = app.client.post(app.url("/auth/login")).header("origin", app.base.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=race%40example.com&password=password123").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(app.count("sessions").await, 0);
        assert_eq!(app.count("login_failures").await, 20);
    }

    async fn a_right_password_leaves_no_failure_of_its_own(app) {
        app.create_user("right@example.com", Some("password123"), false).await;
        let res = app.client.post(app.url("/api/session"))
            .json(&json!({"username": "right@example.com", "password": "wrong-password"}))
            .send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        assert_eq!(app.login_failures("email:right@example.com").await, 1);
        assert_eq!(app.login_failures("ip:127.0.0.1").await, 1);
        // Concurrent right passwords (fewer than the limit) all get in.
        let answers = concurrent_logins(&app, "right@example.com", "password123", 5).await;
        assert_eq!(answers, BTreeMap::from([((200, "none".to_owned()), 5)]));
        assert_eq!(app.count("sessions").await, 5);
        // A success clears its email's failures and removes its own reservations; the IP
        // keeps the earlier failure.
        assert_eq!(app.login_failures("email:right@example.com").await, 0);
        assert_eq!(app.login_failures("ip:127.0.0.1").await, 1);
        assert_eq!(app.count("login_failures").await, 1);
    }
}

both_backends! {
    async fn a_setting_changed_elsewhere_within_the_cache_second_is_still_written(mut app) {
        app.login_admin().await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-attribute-email": "mail"})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.audit_events("kind=setting_changed").await.len(), 2);
        // Another instance (or the CLI) switches it back; this instance's snapshot, reloaded
        // once a second, still says true.
        let back = [("jwt-group-sync".to_owned(), Some("false".to_owned()))];
        app.store.write_settings(&back, &[]).await.unwrap();
        let res = app.put_setting("jwt-group-sync", json!(true)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.stored_setting("jwt-group-sync").await.as_deref(), Some("true"));
        let events = app.audit_events("kind=setting_changed").await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0]["details"], json!({"key": "jwt-group-sync", "old": false, "new": true}));

        // The bulk form decides the same way, key by key: the value switched back elsewhere
        // is written, the one the database already holds is not written again.
        app.store.write_settings(&back, &[]).await.unwrap();
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-attribute-email": "mail"})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(app.stored_setting("jwt-group-sync").await.as_deref(), Some("true"));
        assert_eq!(app.stored_setting("jwt-attribute-email").await.as_deref(), Some("\"mail\""));
        let events = app.audit_events("kind=setting_changed").await;
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events[0]["details"], json!({"key": "jwt-group-sync", "old": false, "new": true}));
    }

    async fn mappings_naming_a_missing_group_are_refused_inside_the_write(app) {
        let group = app.store.create_group("Eng", &audit_stub("group_created")).await.unwrap();
        let mappings = |ids: &str| [("jwt-group-mappings".to_owned(), Some(format!("{{\"eng\":[{ids}]}}")))];
        // Even a raw write (another instance's, the CLI's) is checked, in its transaction.
        let err = app.store.write_settings(&mappings(&format!("{},999", group.id)), &[]).await.unwrap_err();
        match err {
            latchkey::error::Error::Validation { field, message } => {
                assert_eq!(field, "jwt-group-mappings");
                assert!(message.contains("group 999 does not exist"), "{message}");
            }
            other => panic!("expected validation_failed, got {other:?}"),
        }
        assert_eq!(app.stored_setting("jwt-group-mappings").await, None, "nothing written");
        app.store.write_settings(&mappings(&group.id.to_string()), &[]).await.unwrap();
        assert_eq!(
            app.stored_setting("jwt-group-mappings").await,
            Some(format!("{{\"eng\":[{}]}}", group.id))
        );
    }

    async fn mappings_written_while_their_group_is_deleted_never_name_it(mut app) {
        app.login_admin().await;
        for round in 0..25 {
            let gid = create_group(&app, &format!("Doomed {round}")).await;
            let put = app.admin(Method::PUT, "/api/setting/jwt-group-mappings")
                .json(&json!({"value": {"eng": [gid]}}))
                .send();
            let delete = app.admin(Method::DELETE, &format!("/api/permissions/group/{gid}")).send();
            let (put, delete) = tokio::join!(put, delete);
            assert_eq!(delete.unwrap().status(), StatusCode::NO_CONTENT);
            let put = put.unwrap();
            if put.status() != StatusCode::NO_CONTENT {
                // The deletion came first: the group was gone when the mappings were written.
                let body = assert_error(put, 400, "validation_failed").await;
                assert_eq!(body["field"], json!("jwt-group-mappings"));
            }
            // Either way the stored mappings do not name the deleted group.
            let stored = app.stored_setting("jwt-group-mappings").await.unwrap_or_default();
            let value: serde_json::Value = serde_json::from_str(&stored).unwrap_or(json!({}));
            assert!(
                !value["eng"].as_array().is_some_and(|ids| ids.contains(&json!(gid))),
                "round {round}: the mappings {stored} name deleted group {gid}"
            );
        }
    }

    async fn memberships_added_while_their_group_is_deleted_are_added_or_not_found(mut app) {
        app.login_admin().await;
        for round in 0..20 {
            let gid = create_group(&app, &format!("Going {round}")).await;
            let uid = app.create_user(&format!("going{round}@example.com"), None, false).await;
            let add = || app.admin(Method::POST, "/api/permissions/membership")
                .json(&json!({"group_id": gid, "user_id": uid}))
                .send();
            let delete = app.admin(Method::DELETE, &format!("/api/permissions/group/{gid}")).send();
            let (a, b, delete) = tokio::join!(add(), add(), delete);
            assert_eq!(delete.unwrap().status(), StatusCode::NO_CONTENT);
            for res in [a.unwrap(), b.unwrap()] {
                let status = res.status();
                let code = body_json(res).await["error"].as_str().unwrap_or("none").to_owned();
                assert!(
                    matches!((status.as_u16(), code.as_str()), (200, _) | (404, "not_found") | (409, "conflict")),
                    "round {round}: {status} {code}"
                );
            }
        }
    }

    async fn admin_changes_racing_each_other_never_deadlock(mut app) {
        app.login_admin().await;
        for round in 0..15 {
            let uid = app.create_user(&format!("racer{round}@example.com"), None, false).await;
            let add = app.admin(Method::POST, "/api/permissions/membership")
                .json(&json!({"group_id": 2, "user_id": uid}))
                .send();
            let promote = app.admin(Method::PUT, &format!("/api/user/{uid}"))
                .json(&json!({"is_superuser": true}))
                .send();
            let (add, promote) = tokio::join!(add, promote);
            let (add, promote) = (add.unwrap(), promote.unwrap());
            assert!(matches!(add.status().as_u16(), 200 | 409), "round {round}: {}", add.status());
            assert_eq!(promote.status(), StatusCode::OK, "round {round}");
            let group = body_json(app.admin(Method::GET, "/api/permissions/group/2").send().await.unwrap()).await;
            let membership = group["members"].as_array().unwrap().iter()
                .find(|m| m["user_id"] == json!(uid)).expect("an administrator")["membership_id"].as_i64().unwrap();
            // Demoted twice at once: by the membership and by the flag.
            let remove = app.admin(Method::DELETE, &format!("/api/permissions/membership/{membership}")).send();
            let demote = app.admin(Method::PUT, &format!("/api/user/{uid}"))
                .json(&json!({"is_superuser": false}))
                .send();
            let (remove, demote) = tokio::join!(remove, demote);
            let (remove, demote) = (remove.unwrap(), demote.unwrap());
            assert!(matches!(remove.status().as_u16(), 204 | 404), "round {round}: {}", remove.status());
            assert_eq!(demote.status(), StatusCode::OK, "round {round}");
            let user = app.store.get_user(uid).await.unwrap().unwrap();
            assert!(!user.is_superuser, "round {round}");
            let groups = body_json(app.admin(Method::GET, &format!("/api/user/{uid}")).send().await.unwrap()).await["group_ids"].clone();
            assert_eq!(groups, json!([1]), "round {round}: the flag and the membership agree");
        }
    }
}
