use std::str::FromStr;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::support::*;

both_backends! {
    async fn health_and_ready_answer(app) {
        let res = app.client.get(app.url("/api/health")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().contains_key("x-request-id"));
        let res = app.client.get(app.url("/api/ready")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn session_properties_report_setup_required_until_an_admin_exists(app) {
        let body = body_json(app.client.get(app.url("/api/session/properties")).send().await.unwrap()).await;
        assert_eq!(body["setup_required"], json!(true));
        assert_eq!(body["password_login_enabled"], json!(true));
        assert_eq!(body["jwt_enabled"], json!(false));
        app.create_user("boss@example.com", Some("password123"), true).await;
        let body = body_json(app.client.get(app.url("/api/session/properties")).send().await.unwrap()).await;
        assert_eq!(body["setup_required"], json!(false));
    }

    async fn setup_token_creates_the_first_admin_once(app) {
        // The server is started in-process; announce a token as `serve` does.
        let token = "a".repeat(64);
        app.store.insert_setup_token(&latchkey::auth::session::hash_token(&token), now()).await.unwrap();
        let body = json!({"token": "wrong", "user": {"email": "first@example.com", "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&body).send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
        assert_eq!(app.count("users").await, 0);

        let body = json!({"token": token, "user": {"email": "First@Example.com", "first_name": "Ada", "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert!(cookie.starts_with("latchkey.session=") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
        let session = body_json(res).await["id"].as_str().unwrap().to_owned();
        let me = body_json(app.as_user(&session, Method::GET, "/api/user/current").send().await.unwrap()).await;
        assert_eq!(me["email"], json!("first@example.com"));
        assert_eq!(me["is_superuser"], json!(true));
        assert_eq!(me["group_ids"], json!([1, 2]));
        let id = me["id"].as_i64().unwrap();
        let events = body_json(app.as_user(&session, Method::GET, &format!("/api/audit?user_id={id}")).send().await.unwrap()).await;
        let rows: Vec<(Value, Value)> = events["events"].as_array().unwrap().iter()
            .map(|e| (e["kind"].clone(), e["details"].clone()))
            .filter(|(kind, _)| kind == "group_added" || kind == "user_created")
            .collect();
        let admins = json!({"group_id": 2, "group": "Administrators", "source": "setup"});
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0], (json!("group_added"), admins));
        assert_eq!(rows[1].0, json!("user_created"));

        // Names are checked before the token: over 254 characters is a 400 naming the field.
        let body = json!({"token": "wrong", "user": {"email": "n@example.com", "last_name": "n".repeat(255), "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&body).send().await.unwrap();
        assert_eq!(assert_error(res, 400, "validation_failed").await["field"], json!("user.last_name"));

        let body = json!({"token": token, "user": {"email": "second@example.com", "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&body).send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
        assert_eq!(app.count("users").await, 1);
    }

    async fn a_setup_request_without_a_live_token_is_refused_before_any_hashing(app) {
        let token = "b".repeat(64);
        app.store.insert_setup_token(&latchkey::auth::session::hash_token(&token), now()).await.unwrap();
        let wrong = json!({"token": "wrong", "user": {"email": "first@example.com", "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&wrong).send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
        let res = app.client.post(app.url("/setup")).header("origin", app.base.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("token=wrong&email=first%40example.com&password=password123").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(app.passwords.computed(), 0, "no argon2 work for a wrong token");
        assert_eq!(app.count("users").await, 0);
        // Validation still comes first: a bad email is a 400 whatever the token.
        let bad = json!({"token": "wrong", "user": {"email": "nope", "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&bad).send().await.unwrap();
        let body = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("user.email"));
        // The nested user is an object too (not filled from an array), and its fields keep
        // their paths in errors.
        for (user, field) in [
            (json!(["n@example.com", null, null, "password123"]), "user"),
            (json!({"email": 5, "password": "password123"}), "user.email"),
            (json!({"email": "n@example.com"}), "user.password"),
        ] {
            let res = app.client.post(app.url("/api/setup")).json(&json!({"token": "wrong", "user": user})).send().await.unwrap();
            assert_eq!(assert_error(res, 400, "validation_failed").await["field"], json!(field));
        }
        // The right token: one hash, one admin; then setup is closed, again without hashing.
        let right = json!({"token": token, "user": {"email": "first@example.com", "password": "password123"}});
        let res = app.client.post(app.url("/api/setup")).json(&right).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(app.passwords.computed(), 1);
        let res = app.client.post(app.url("/api/setup")).json(&right).send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
        assert_eq!(app.passwords.computed(), 1, "no argon2 work once setup is done");
        assert_eq!(app.count("users").await, 1);
    }

    async fn password_login_opens_a_session_and_logout_revokes_it(app) {
        app.create_user("u@example.com", Some("password123"), false).await;
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": "U@example.com", "password": "nope-nope"})).send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": "ghost@example.com", "password": "nope-nope"})).send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        // A password of the wrong JSON type is a 400 that names the field and the type, never
        // the value (passwords stay out of errors), and counts as no attempt.
        let failures = app.count("login_failures").await;
        for password in [json!(31415926), json!(1.25e3), json!(true)] {
            let res = app.client.post(app.url("/api/session")).json(&json!({"username": "u@example.com", "password": password})).send().await.unwrap();
            let body = assert_error(res, 400, "validation_failed").await;
            assert_eq!(body["field"], json!("password"));
            let message = body["message"].as_str().unwrap();
            assert!(message.contains("invalid type") && !message.contains(&password.to_string()), "{message}");
        }
        assert_eq!(app.count("login_failures").await, failures, "not counted as attempts");
        let token = app.login("U@Example.com", "password123").await;
        let token2 = app.login("u@example.com", "password123").await;
        assert_ne!(token, token2, "a new session at every login");
        assert_eq!(app.count("sessions").await, 2);
        let res = app.as_user(&token, Method::DELETE, "/api/session").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
        let res = app.as_user(&token2, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn login_is_throttled_per_email_in_the_database(mut app) {
        app.login_admin().await;
        app.create_user("t@example.com", Some("password123"), false).await;
        for _ in 0..10 {
            let res = app.client.post(app.url("/api/session")).json(&json!({"username": "t@example.com", "password": "wrong-password"})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        }
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": "T@example.com", "password": "password123"})).send().await.unwrap();
        let retry: u64 = res.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 3600);
        assert_error(res, 429, "too_many_attempts").await;
        assert_eq!(app.count("sessions").await, 1, "the admin's only");
        // A second instance on the same database sees the same counters.
        let other = spawn_instance(&app).await;
        let res = other.client.post(other.url("/api/session")).json(&json!({"username": "t@example.com", "password": "password123"})).send().await.unwrap();
        assert_error(res, 429, "too_many_attempts").await;
        // A name that is not an address, here half a megabyte or a password typed into the
        // name field, counts against the IP only (no account has such a name), and neither
        // the throttle nor the audit row keeps it.
        for name in ["x".repeat(500_000), "Hunter2-MySecretPassword!".to_owned()] {
            let (rows, from_ip) = (app.count("login_failures").await, app.login_failures("ip:127.0.0.1").await);
            let res = other.client.post(other.url("/api/session")).json(&json!({"username": name, "password": "password123"})).send().await.unwrap();
            assert_error(res, 401, "invalid_credentials").await;
            assert_eq!(app.count("login_failures").await, rows + 1, "one row");
            assert_eq!(app.login_failures("ip:127.0.0.1").await, from_ip + 1, "the IP's");
            let rows = app.audit_events("kind=password_login&outcome=failure&limit=1").await;
            assert_eq!(rows[0]["reason"], "invalid_credentials");
            assert_eq!(rows[0]["email"], Value::Null, "{rows:?}");
        }
        assert!(!app.audit_events("kind=password_login&limit=100").await.iter().any(|r| r.to_string().to_lowercase().contains("hunter2")));
    }

    async fn cookie_authenticated_writes_need_same_origin(mut app) {
        app.login_admin().await;
        let token = app.admin_token.clone().unwrap();
        let cookie = format!("latchkey.session={token}");
        let res = app.client.put(app.url("/api/setting/jwt-group-sync")).header("cookie", &cookie).json(&json!({"value": true})).send().await.unwrap();
        assert_error(res, 403, "csrf_failed").await;
        let res = app.client.put(app.url("/api/setting/jwt-group-sync")).header("cookie", &cookie).header("origin", "http://evil.example").json(&json!({"value": true})).send().await.unwrap();
        assert_error(res, 403, "csrf_failed").await;
        let origin = app.base.clone();
        let res = app.client.put(app.url("/api/setting/jwt-group-sync")).header("cookie", &cookie).header("origin", origin).json(&json!({"value": true})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.client.get(app.url("/api/user/current")).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn non_admins_cannot_reach_admin_endpoints(mut app) {
        app.login_admin().await;
        app.create_user("plain@example.com", Some("password123"), false).await;
        let token = app.login("plain@example.com", "password123").await;
        for path in ["/api/user", "/api/setting", "/api/audit", "/api/permissions/group"] {
            let res = app.as_user(&token, Method::GET, path).send().await.unwrap();
            assert_error(res, 403, "forbidden").await;
        }
        let res = app.client.get(app.url("/api/user")).send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
    }

    async fn users_are_created_listed_updated_and_deactivated(mut app) {
        app.login_admin().await;
        let res = app.admin(Method::POST, "/api/user").json(&json!({"email": "New@Example.com", "first_name": "Nia", "password": "password123"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let user = body_json(res).await;
        let id = user["id"].as_i64().unwrap();
        assert_eq!(user["email"], json!("new@example.com"));
        assert_eq!(user["group_ids"], json!([1]));
        let res = app.admin(Method::POST, "/api/user").json(&json!({"email": "new@example.com"})).send().await.unwrap();
        assert_error(res, 409, "conflict").await;
        let res = app.admin(Method::POST, "/api/user").json(&json!({"email": "not-an-email"})).send().await.unwrap();
        let body = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("email"));
        let res = app.admin(Method::POST, "/api/user").json(&json!({"first_name": "x"})).send().await.unwrap();
        let body = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("email"));

        let list = body_json(app.admin(Method::GET, "/api/user?query=NIA").send().await.unwrap()).await;
        assert_eq!(list["total"], json!(1));
        let res = app.admin(Method::PUT, &format!("/api/user/{id}")).json(&json!({"last_name": "Okafor", "is_superuser": true})).send().await.unwrap();
        let updated = body_json(res).await;
        assert_eq!(updated["last_name"], json!("Okafor"));
        // The whole name as the pages show it matches too, in any case.
        for (query, total) in [("nia%20okafor", 1), ("A%20OKAF", 1), ("okafor%20nia", 0)] {
            let list = body_json(app.admin(Method::GET, &format!("/api/user?query={query}")).send().await.unwrap()).await;
            assert_eq!(list["total"], json!(total), "{query}");
        }
        // Only a last name (no first name) is found by it as well.
        let res = app.admin(Method::POST, "/api/user").json(&json!({"email": "z1@example.com", "last_name": "Zeta"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let list = body_json(app.admin(Method::GET, "/api/user?query=%20zeta%20").send().await.unwrap()).await;
        assert_eq!(list["total"], json!(1));
        assert_eq!(updated["group_ids"], json!([1, 2]));
        // The flag's membership is audited as the membership endpoints audit it, both ways.
        let res = app.admin(Method::PUT, &format!("/api/user/{id}")).json(&json!({"is_superuser": false})).send().await.unwrap();
        assert_eq!(body_json(res).await["group_ids"], json!([1]));
        let res = app.admin(Method::PUT, &format!("/api/user/{id}")).json(&json!({"is_superuser": true})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let events = app.audit_events(&format!("user_id={id}")).await;
        let groups: Vec<(&str, &Value)> = events.iter()
            .filter(|e| e["kind"].as_str().unwrap().starts_with("group_"))
            .map(|e| (e["kind"].as_str().unwrap(), &e["details"]))
            .collect();
        let admins = json!({"group_id": 2, "group": "Administrators", "source": "admin"});
        assert_eq!(groups, vec![("group_added", &admins), ("group_removed", &admins), ("group_added", &admins)]);
        let res = app.admin(Method::POST, "/api/user").json(&json!({"email": "boss@example.com", "is_superuser": true})).send().await.unwrap();
        let boss = body_json(res).await["id"].as_i64().unwrap();
        let kinds: Vec<Value> = app.audit_events(&format!("user_id={boss}")).await.iter().map(|e| e["kind"].clone()).collect();
        assert_eq!(kinds, vec![json!("group_added"), json!("user_created")]);

        let token = app.login("new@example.com", "password123").await;
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": "new@example.com", "password": "password123"})).send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        let res = app.admin(Method::PUT, &format!("/api/user/{id}/reactivate")).send().await.unwrap();
        assert_eq!(body_json(res).await["is_active"], json!(true));
        let res = app.admin(Method::GET, "/api/user/999999").send().await.unwrap();
        assert_error(res, 404, "not_found").await;
        let res = app.admin(Method::GET, "/api/user/abc").send().await.unwrap();
        assert_error(res, 400, "validation_failed").await;
        let res = app.admin(Method::GET, "/api/user/%FF").send().await.unwrap();
        let err = assert_error(res, 400, "validation_failed").await;
        assert_eq!(err["message"], json!("The id in the address must be a positive whole number."));
        // Names: at most 254 characters, refused beyond (not cut), on create and update.
        let users = app.count("users").await;
        let res = app.admin(Method::POST, "/api/user").json(&json!({"email": "long@example.com", "last_name": "é".repeat(255)})).send().await.unwrap();
        assert_eq!(assert_error(res, 400, "validation_failed").await["field"], json!("last_name"));
        assert_eq!(app.count("users").await, users);
        let res = app.admin(Method::PUT, &format!("/api/user/{id}")).json(&json!({"first_name": "é".repeat(255)})).send().await.unwrap();
        assert_eq!(assert_error(res, 400, "validation_failed").await["field"], json!("first_name"));
        let res = app.admin(Method::PUT, &format!("/api/user/{id}")).json(&json!({"first_name": format!(" {} ", "é".repeat(254))})).send().await.unwrap();
        assert_eq!(body_json(res).await["first_name"], json!("é".repeat(254)));
    }

    async fn the_last_active_admin_is_kept(mut app) {
        let admin_id = app.login_admin().await;
        let res = app.admin(Method::DELETE, &format!("/api/user/{admin_id}")).send().await.unwrap();
        assert_error(res, 409, "last_admin").await;
        let res = app.admin(Method::PUT, &format!("/api/user/{admin_id}")).json(&json!({"is_superuser": false})).send().await.unwrap();
        assert_error(res, 409, "last_admin").await;
        let group = body_json(app.admin(Method::GET, "/api/permissions/group/2").send().await.unwrap()).await;
        let membership = group["members"][0]["membership_id"].as_i64().unwrap();
        let res = app.admin(Method::DELETE, &format!("/api/permissions/membership/{membership}")).send().await.unwrap();
        assert_error(res, 409, "last_admin").await;
        let me = body_json(app.admin(Method::GET, "/api/user/current").send().await.unwrap()).await;
        assert_eq!(me["is_superuser"], json!(true));
        assert_eq!(me["group_ids"], json!([1, 2]));
        // With a second admin, the first may step down; membership and flag stay in step.
        let second = app.create_user("second@example.com", None, false).await;
        let res = app.admin(Method::POST, "/api/permissions/membership").json(&json!({"group_id": 2, "user_id": second})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let s = body_json(app.admin(Method::GET, &format!("/api/user/{second}")).send().await.unwrap()).await;
        assert_eq!(s["is_superuser"], json!(true));
        let res = app.admin(Method::DELETE, &format!("/api/permissions/membership/{membership}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let me = app.store.get_user(admin_id).await.unwrap().unwrap();
        assert!(!me.is_superuser, "stepping down from Administrators clears the flag");
        let res = app.admin(Method::GET, "/api/user").send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
    }

    async fn groups_are_managed_and_built_ins_protected(mut app) {
        app.login_admin().await;
        let g = body_json(app.admin(Method::POST, "/api/permissions/group").json(&json!({"name": "Engineering"})).send().await.unwrap()).await;
        let gid = g["id"].as_i64().unwrap();
        assert!(gid > 2);
        let res = app.admin(Method::POST, "/api/permissions/group").json(&json!({"name": "Engineering"})).send().await.unwrap();
        assert_error(res, 409, "conflict").await;
        for id in [1, 2] {
            let res = app.admin(Method::PUT, &format!("/api/permissions/group/{id}")).json(&json!({"name": "x"})).send().await.unwrap();
            assert_error(res, 403, "forbidden").await;
            let res = app.admin(Method::DELETE, &format!("/api/permissions/group/{id}")).send().await.unwrap();
            assert_error(res, 403, "forbidden").await;
        }
        let res = app.put_setting("jwt-group-mappings", json!({"eng": [gid]})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let res = app.put_setting("jwt-group-mappings", json!({"eng": [gid, 999]})).await;
        let body = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("jwt-group-mappings"));
        let res = app.admin(Method::PUT, &format!("/api/permissions/group/{gid}")).json(&json!({"name": "Eng"})).send().await.unwrap();
        assert_eq!(body_json(res).await["name"], json!("Eng"));
        let res = app.admin(Method::DELETE, &format!("/api/permissions/group/{gid}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let mappings = body_json(app.admin(Method::GET, "/api/setting/jwt-group-mappings").send().await.unwrap()).await;
        assert_eq!(mappings["value"], json!({"eng": []}), "a deleted group leaves the mappings");
        let events = body_json(app.admin(Method::GET, "/api/audit?kind=setting_changed&limit=1").send().await.unwrap()).await;
        assert_eq!(
            events["events"][0]["details"],
            json!({"key": "jwt-group-mappings", "old": {"eng": [gid]}, "new": {"eng": []}}),
            "the mappings' change is audited"
        );
        // Deleting a group that no mapping names leaves the setting and its audit alone.
        let res = app.admin(Method::POST, "/api/permissions/group").json(&json!({"name": "Unmapped"})).send().await.unwrap();
        let other = body_json(res).await["id"].as_i64().unwrap();
        let mut memberships = Vec::new();
        for email in ["m1@example.com", "m2@example.com", "m3@example.com"] {
            let user = app.create_user(email, None, false).await;
            let res = app.admin(Method::POST, "/api/permissions/membership").json(&json!({"group_id": other, "user_id": user})).send().await.unwrap();
            memberships.push(body_json(res).await["membership_id"].as_i64().unwrap());
        }
        let res = app.admin(Method::DELETE, &format!("/api/permissions/membership/{}", memberships[2])).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let removed = app.audit_events("kind=group_removed&limit=1").await;
        assert_eq!(removed[0]["details"], json!({"group_id": other, "group": "Unmapped", "source": "admin"}));
        let res = app.admin(Method::DELETE, &format!("/api/permissions/group/{other}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let deleted = app.audit_events("kind=group_deleted&limit=1").await;
        assert_eq!(deleted[0]["details"], json!({"group_id": other, "name": "Unmapped", "members": 2}), "it counts the members it had");
        let events = body_json(app.admin(Method::GET, "/api/audit?kind=setting_changed&limit=1").send().await.unwrap()).await;
        assert_eq!(events["events"][0]["details"]["new"], json!({"eng": []}), "no new setting_changed event");
    }

    async fn group_members_come_a_page_at_a_time(mut app) {
        app.login_admin().await;
        let g = body_json(app.admin(Method::POST, "/api/permissions/group").json(&json!({"name": "Paged"})).send().await.unwrap()).await;
        let gid = g["id"].as_i64().unwrap();
        let mut users = Vec::new();
        for n in 0..5 {
            let uid = app.create_user(&format!("member{n}@example.com"), None, false).await;
            let res = app.admin(Method::POST, "/api/permissions/membership").json(&json!({"group_id": gid, "user_id": uid})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            users.push(uid);
        }
        // Pages of two, in the order people joined, each naming where the next one starts.
        let mut seen = Vec::new();
        let mut path = format!("/api/permissions/group/{gid}?limit=2");
        let mut pages = 0;
        loop {
            let page = body_json(app.admin(Method::GET, &path).send().await.unwrap()).await;
            assert_eq!(page["member_count"], json!(5));
            assert_eq!(page["name"], json!("Paged"));
            let members = page["members"].as_array().unwrap();
            assert!(members.len() <= 2, "{page}");
            seen.extend(members.iter().map(|m| m["user_id"].as_i64().unwrap()));
            pages += 1;
            match page["next_after"].as_i64() {
                Some(after) => {
                    assert_eq!(Some(after), members.last().unwrap()["membership_id"].as_i64());
                    path = format!("/api/permissions/group/{gid}?limit=2&after={after}");
                }
                None => break,
            }
            assert!(pages < 10, "paging ends");
        }
        assert_eq!((seen, pages), (users.clone(), 3));
        // Without a limit, a page holds up to 1000: this whole group, and no next page.
        let all = body_json(app.admin(Method::GET, &format!("/api/permissions/group/{gid}")).send().await.unwrap()).await;
        assert_eq!(all["members"].as_array().unwrap().len(), 5);
        assert_eq!(all["next_after"], json!(null));
        for bad in ["limit=0", "limit=1001", "limit=x", "after=-1", "after=1.5"] {
            let res = app.admin(Method::GET, &format!("/api/permissions/group/{gid}?{bad}")).send().await.unwrap();
            let body = assert_error(res, 400, "validation_failed").await;
            assert_eq!(body["field"], json!(bad.split('=').next().unwrap()), "{bad}");
        }
        let res = app.admin(Method::GET, "/api/permissions/group/999999?limit=2").send().await.unwrap();
        assert_error(res, 404, "not_found").await;
    }

    async fn the_audit_log_filters_by_outcome(mut app) {
        app.login_admin().await;
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": ADMIN_EMAIL, "password": "wrong password"})).send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        for (query, outcome) in [("outcome=failure", "failure"), ("kind=password_login&outcome=failure", "failure"), ("outcome=success", "success"), ("kind=password_login&outcome=success", "success")] {
            let events = app.audit_events(query).await;
            assert!(!events.is_empty(), "{query}");
            assert!(events.iter().all(|e| e["outcome"] == json!(outcome)), "{query}: {events:?}");
            if query.starts_with("kind=") {
                assert!(events.iter().all(|e| e["kind"] == json!("password_login")), "{query}: {events:?}");
            }
        }
        assert!(app.audit_events("outcome=skipped").await.is_empty());
        assert!(app.audit_events("kind=sso_login&outcome=failure").await.is_empty());
    }

    async fn the_audit_log_keeps_no_query_of_the_jwks_uri(mut app) {
        app.login_admin().await;
        let res = app.put_setting("jwt-jwks-uri", json!("https://idp.example/jwks?access_token=SUPERSECRET")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let events = app.audit_events("kind=setting_changed&limit=1").await;
        assert_eq!(events[0]["details"], json!({"key": "jwt-jwks-uri", "old": null, "new": "https://idp.example/jwks?…"}));
        let res = app.put_setting("jwt-jwks-uri", json!(null)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let events = app.audit_events("kind=setting_changed&limit=1").await;
        assert_eq!(events[0]["details"]["old"], json!("https://idp.example/jwks?…"));
        assert!(!app.audit_events("kind=setting_changed").await.iter().any(|e| e.to_string().contains("SUPERSECRET")));
    }

    async fn the_router_s_own_errors_have_the_error_shape(mut app) {
        app.login_admin().await;
        // A known address with a method it does not take: a code of its own, not a 400's.
        let res = app.admin(Method::POST, "/api/user/current").send().await.unwrap();
        assert_error(res, 405, "method_not_allowed").await;
        // A path segment that is not UTF-8 once decoded.
        for method in [Method::GET, Method::PUT] {
            let res = app.admin(method, "/api/setting/%FF").json(&json!({"value": 1})).send().await.unwrap();
            let err = assert_error(res, 400, "validation_failed").await;
            assert_eq!(err["field"], json!("key"));
        }
        let res = app.client.get(app.url("/assets/%FF")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = app.client.get(app.url("/api/docs/%FF")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    async fn settings_are_validated_masked_and_all_or_nothing(mut app) {
        app.login_admin().await;
        // Too short, and only blanks (research J-08), including Unicode ones.
        for value in ["short".to_owned(), " ".repeat(40), "\t \u{3000}".repeat(12)] {
            let res = app.put_setting("jwt-shared-secret", json!(value)).await;
            let body = assert_error(res, 400, "validation_failed").await;
            assert_eq!(body["field"], json!("jwt-shared-secret"));
        }
        assert_eq!(app.stored_setting("jwt-shared-secret").await, None);
        let res = app.put_setting("no-such-setting", json!(1)).await;
        assert_error(res, 400, "validation_failed").await;
        let res = app.admin(Method::GET, "/api/setting/no-such-setting").send().await.unwrap();
        assert_error(res, 404, "not_found").await;
        let before = app.count("settings").await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-clock-skew-seconds": 9999})).await;
        assert_error(res, 400, "validation_failed").await;
        assert_eq!(app.count("settings").await, before, "nothing partially applied");
        let res = app.put_setting("jwt-shared-secret", json!(SECRET)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let all = app.admin(Method::GET, "/api/setting").send().await.unwrap().text().await.unwrap();
        assert!(!all.contains(SECRET), "secret never returned");
        let one = body_json(app.admin(Method::GET, "/api/setting/jwt-shared-secret").send().await.unwrap()).await;
        assert_eq!(one["value"], json!("**********cdef"));
        assert_eq!(one["env_var"], json!("LATCHKEY_JWT_SHARED_SECRET"));
        let audit = app.audit_events("kind=setting_changed").await;
        assert!(!serde_json::to_string(&audit).unwrap().contains(SECRET), "secret never audited");
        // API answers that carry secrets (and every other one) are not to be cached.
        for path in ["/api/util/random_token", "/api/setting", "/api/user/current", "/api/audit"] {
            let res = app.admin(Method::GET, path).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            assert_eq!(res.headers()["cache-control"], "no-store", "{path}");
        }
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": "nobody@example.com", "password": "x"})).send().await.unwrap();
        assert_eq!(res.headers()["cache-control"], "no-store", "an error too");
        let token = body_json(app.admin(Method::GET, "/api/util/random_token").send().await.unwrap()).await;
        assert_eq!(token["token"].as_str().unwrap().len(), 64);
    }

    async fn a_setting_changed_on_one_instance_reaches_the_other_within_two_seconds(mut app) {
        app.login_admin().await;
        let mut other = spawn_instance(&app).await;
        other.admin_token = app.admin_token.clone();
        let res = app.put_setting("jwt-attribute-email", json!("mail")).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let seen = body_json(other.admin(Method::GET, "/api/setting/jwt-attribute-email").send().await.unwrap()).await;
        assert_eq!(seen["value"], json!("mail"));
    }

    async fn bad_bodies_are_400_and_huge_bodies_413(mut app) {
        app.login_admin().await;
        let res = app.admin(Method::PUT, "/api/setting").header("content-type", "application/json").body("{not json").send().await.unwrap();
        let body = assert_error(res, 400, "validation_failed").await;
        assert_eq!(body["field"], json!("body"));
        // JSON that is not an object: serde would fill a struct from an array, by position.
        let before = app.count("users").await;
        for (method, path, body) in [
            (Method::POST, "/api/user", r#"["seq@example.com", "Seq", "User", null, true]"#),
            (Method::POST, "/api/permissions/group", r#"["ArrayGroup"]"#),
            (Method::PUT, "/api/setting/jwt-issuer", r#"["x"]"#),
            (Method::PUT, "/api/setting", r#""text""#),
            (Method::POST, "/api/session", "5"),
        ] {
            let res = app.admin(method, path).header("content-type", "application/json").body(body).send().await.unwrap();
            let err = assert_error(res, 400, "validation_failed").await;
            assert_eq!(err["field"], json!("body"), "{path} {body}");
            assert_eq!(err["message"], json!("The request body must be a JSON object."));
        }
        assert_eq!(app.count("users").await, before);
        assert_eq!(app.count("groups").await, 2);
        assert_eq!(app.stored_setting("jwt-issuer").await, None);
        let big = format!("{{\"x\": \"{}\"}}", "a".repeat(1_100_000));
        let res = app.admin(Method::PUT, "/api/setting").header("content-type", "application/json").body(big).send().await.unwrap();
        // The body was not read, so the connection closes, and the answer says so: the next
        // request must not be sent on it.
        assert_eq!(res.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
        assert_error(res, 413, "body_too_large").await;
        let res = app.client.get(app.url("/no/such/page")).send().await.unwrap();
        assert_error(res, 404, "not_found").await;
    }

    // PostgreSQL cannot store a NUL; a request carrying one is a 400 naming the field (or,
    // from the sign-in form, a failed sign-in), never a 500, on both backends.
    async fn nul_characters_are_refused_not_a_server_error(mut app) {
        let admin = app.login_admin().await;
        let nul_bodies = [
            (Method::PUT, format!("/api/user/{admin}"), json!({"first_name": "a\u{0}b"}), "first_name"),
            (Method::POST, "/api/user".to_owned(), json!({"email": "n@example.com", "last_name": "\u{0}"}), "last_name"),
            (Method::POST, "/api/session".to_owned(), json!({"username": "a\u{0}@example.com", "password": "x"}), "username"),
            (Method::POST, "/api/setup".to_owned(), json!({"token": "t", "user": {"email": "s@example.com", "first_name": "\u{0}", "password": "password123"}}), "user.first_name"),
            (Method::PUT, "/api/setting/jwt-group-mappings".to_owned(), json!({"value": {"eng\u{0}": [1]}}), "jwt-group-mappings"),
            (Method::PUT, "/api/setting".to_owned(), json!({"jwt-group-mappings": {"eng": [1, "\u{0}"]}}), "jwt-group-mappings"),
        ];
        for (method, path, body, field) in nul_bodies {
            let res = app.admin(method, &path).json(&body).send().await.unwrap();
            let err = assert_error(res, 400, "validation_failed").await;
            assert_eq!(err["field"], json!(field), "{path}");
        }
        for (path, field) in [("/api/user?query=%00", "query"), ("/api/audit?kind=a%00", "kind"), ("/api/audit?outcome=%00", "outcome"), ("/api/audit?outcome=bogus", "outcome")] {
            let res = app.admin(Method::GET, path).send().await.unwrap();
            let err = assert_error(res, 400, "validation_failed").await;
            assert_eq!(err["field"], json!(field), "{path}");
        }
        // The sign-in form takes any text: a NUL matches no account.
        let res = app.client.post(app.url("/auth/login")).header("origin", app.base.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body("username=a%00%40example.com&password=x").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(app.count("users").await, 1);
    }

    async fn audit_log_pages_newest_first(mut app) {
        app.login_admin().await;
        for i in 0..5 {
            app.create_user(&format!("p{i}@example.com"), Some("password123"), false).await;
            app.login(&format!("p{i}@example.com"), "password123").await;
        }
        let page1 = body_json(app.admin(Method::GET, "/api/audit?kind=password_login&limit=3").send().await.unwrap()).await;
        let events = page1["events"].as_array().unwrap();
        assert_eq!(events.len(), 3);
        assert!(events[0]["id"].as_i64() > events[1]["id"].as_i64());
        let before = page1["next_before"].as_i64().unwrap();
        let page2 = body_json(app.admin(Method::GET, &format!("/api/audit?kind=password_login&limit=3&before={before}")).send().await.unwrap()).await;
        assert_eq!(page2["events"].as_array().unwrap().len(), 3, "5 users + the admin = 6 logins");
        assert_eq!(page2["next_before"], json!(null));
        let res = app.admin(Method::GET, "/api/audit?limit=abc").send().await.unwrap();
        assert_error(res, 400, "validation_failed").await;
    }
}

/// Recording a session's last use is best effort: while the database cannot take the write
/// (here another process holds SQLite's write lock past the call's deadline), the session
/// still works, and its use is recorded at the next request.
#[tokio::test]
async fn a_session_stays_usable_while_its_last_use_cannot_be_recorded() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    app.create_user("busy-db@example.com", Some("password123"), false)
        .await;
    let token = app.login("busy-db@example.com", "password123").await;
    let before = now() - 120;
    app.set_session_time(&token, "last_seen_at", before).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let path = app
        .database_url
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let holder = std::thread::spawn(move || {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch("BEGIN IMMEDIATE").unwrap();
        std::thread::sleep(std::time::Duration::from_secs(11));
        db.execute_batch("ROLLBACK").unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let res = app
        .as_user(&token, Method::GET, "/api/user/current")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the session works while its use cannot be written"
    );
    assert_eq!(
        app.session_last_seen(&token).await,
        Some(before),
        "nothing was written"
    );
    holder.join().unwrap();
    let res = app
        .as_user(&token, Method::GET, "/api/user/current")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = app.session_last_seen(&token).await.expect("the session");
    assert!(seen >= now() - 5, "recorded at the next request: {seen}");
}

#[tokio::test]
async fn env_fixed_settings_are_read_only() {
    let mut env = std::collections::HashMap::new();
    env.insert("LATCHKEY_JWT_ATTRIBUTE_EMAIL".to_owned(), "mail".to_owned());
    let mut app = spawn_app_with_env(Backend::Sqlite, env).await.unwrap();
    app.login_admin().await;
    let view = body_json(
        app.admin(Method::GET, "/api/setting/jwt-attribute-email")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(view["value"], json!("mail"));
    assert_eq!(view["is_env_setting"], json!(true));
    let res = app.put_setting("jwt-attribute-email", json!("email")).await;
    let body = assert_error(res, 409, "setting_locked").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("LATCHKEY_JWT_ATTRIBUTE_EMAIL")
    );
}

both_backends! {
    async fn expired_and_idle_sessions_stop_working(app) {
        app.create_user("s@example.com", Some("password123"), false).await;
        let expired = app.login("s@example.com", "password123").await;
        let idle = app.login("s@example.com", "password123").await;
        app.set_session_time(&expired, "expires_at", now() - 10).await;
        app.set_session_time(&idle, "last_seen_at", now() - 3600).await;
        let res = app.as_user(&expired, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
        // Without an idle timeout, an hour of inactivity is fine, and the use is recorded.
        let res = app.as_user(&idle, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = app.session_last_seen(&idle).await.expect("the session");
        assert!(seen >= now() - 5, "last_seen_at {seen} is kept without an idle timeout too");
        // Then an hour away, and a 30-minute timeout set meanwhile.
        app.set_session_time(&idle, "last_seen_at", now() - 3600).await;
        app.store
            .write_settings(&[("session-idle-timeout-minutes".to_owned(), Some("30".to_owned()))], &[])
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let res = app.as_user(&idle, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
    }

    async fn lowering_the_session_max_age_shortens_sessions_already_issued(app) {
        app.create_user("old@example.com", Some("password123"), false).await;
        let token = app.login("old@example.com", "password123").await;
        // Issued two hours ago, valid for the default two weeks.
        app.set_session_time(&token, "created_at", now() - 2 * 3600).await;
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // A three-hour lifetime keeps it; a one-hour lifetime ends it.
        for (minutes, works) in [("180", true), ("60", false)] {
            app.store
                .write_settings(&[("session-max-age-minutes".to_owned(), Some(minutes.to_owned()))], &[])
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
            if works {
                assert_eq!(res.status(), StatusCode::OK, "{minutes} minutes");
            } else {
                assert_error(res, 401, "unauthenticated").await;
            }
        }
    }

    async fn sessions_ended_by_a_setting_stay_ended_when_it_is_relaxed(mut app) {
        app.login_admin().await;
        app.create_user("gone@example.com", Some("password123"), false).await;
        let old = app.login("gone@example.com", "password123").await;
        let away = app.login("gone@example.com", "password123").await;
        let fresh = app.login("gone@example.com", "password123").await;
        app.set_session_time(&old, "created_at", now() - 2 * 3600).await;
        app.set_session_time(&away, "last_seen_at", now() - 3600).await;
        let works = |token: String| {
            let req = app.as_user(&token, Method::GET, "/api/user/current");
            async move { req.send().await.unwrap().status() == StatusCode::OK }
        };
        assert!(works(old.clone()).await && works(away.clone()).await);
        app.set_session_time(&away, "last_seen_at", now() - 3600).await;
        // A one-hour lifetime ends the old session; a 30-minute idle timeout the one away.
        for (key, value) in [("session-max-age-minutes", json!(60)), ("session-idle-timeout-minutes", json!(30))] {
            let res = app.put_setting(key, value).await;
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        }
        assert!(!works(old.clone()).await && !works(away.clone()).await);
        // Back to two weeks and no timeout: they stay ended; the fresh one never ended.
        for (key, value) in [("session-max-age-minutes", json!(20160)), ("session-idle-timeout-minutes", json!(null))] {
            let res = app.put_setting(key, value).await;
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        }
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        assert!(!works(old).await, "the lifetime's ended session came back");
        assert!(!works(away).await, "the idle session came back");
        assert!(works(fresh).await);
    }

    async fn a_short_idle_timeout_never_ends_a_session_used_within_it(app) {
        app.create_user("busy@example.com", Some("password123"), false).await;
        let token = app.login("busy@example.com", "password123").await;
        app.store
            .write_settings(&[("session-idle-timeout-minutes".to_owned(), Some("1".to_owned()))], &[])
            .await
            .unwrap();
        // A request 50 s after the last recorded one: fine, and recorded (a one-minute timeout
        // records uses 15 s apart or more).
        app.set_session_time(&token, "last_seen_at", now() - 50).await;
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = app.session_last_seen(&token).await.expect("the session");
        assert!(seen >= now() - 5, "last_seen_at {seen} was refreshed");
        // Recorded 70 s ago: the last use may have been up to 15 s later, so not yet idle.
        app.set_session_time(&token, "last_seen_at", now() - 70).await;
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // Recorded 80 s ago: idle for more than the minute whatever happened since.
        app.set_session_time(&token, "last_seen_at", now() - 80).await;
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
    }

    async fn an_idle_timeout_refreshes_the_last_seen_time_of_a_used_session(app) {
        app.create_user("seen@example.com", Some("password123"), false).await;
        let token = app.login("seen@example.com", "password123").await;
        app.store
            .write_settings(&[("session-idle-timeout-minutes".to_owned(), Some("30".to_owned()))], &[])
            .await
            .unwrap();
        // Seen two minutes ago: within the idle timeout, and old enough to be refreshed.
        let before = now() - 120;
        app.set_session_time(&token, "last_seen_at", before).await;
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let seen = app.session_last_seen(&token).await.expect("the session");
        assert!(seen >= now() - 5, "last_seen_at {seen} was not refreshed (set to {before})");
    }

    async fn sessions_are_stored_under_their_issue_time_and_hash(mut app) {
        use base64::Engine;
        use sha2::Digest;
        app.login_admin().await;
        app.configure_jwt().await;
        app.create_user("k@example.com", Some("password123"), false).await;
        let by_password = app.login("k@example.com", "password123").await;
        let res = app.sso_callback(&sign(login_claims("k-sso@example.com")), None).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap();
        let by_sso = cookie["latchkey.session=".len()..].split(';').next().unwrap().to_owned();
        let later = app.login("k@example.com", "password123").await;
        let expected = |token: &str| {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap();
            assert_eq!(raw.len(), 40, "8 bytes of issue time and 32 random: {token}");
            let mut key = raw[..8].to_vec();
            key.extend_from_slice(&sha2::Sha256::digest(token.as_bytes()));
            (key, raw[8..].to_vec())
        };
        let keys = app.stored_session_keys().await;
        // The admin's session, then the three above, in the order they were issued.
        assert_eq!(keys.len(), 4);
        let mine: Vec<Vec<u8>> = [&by_password, &by_sso, &later].iter().map(|t| expected(t).0).collect();
        assert_eq!(keys[1..], mine[..]);
        for token in [&by_password, &by_sso, &later] {
            // Neither the token nor its random part is stored.
            let random = expected(token).1;
            assert!(keys.iter().all(|k| !k.windows(random.len()).any(|w| w == random)));
            let res = app.as_user(token, Method::GET, "/api/user/current").send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
    }

    async fn admins_revoke_every_session_of_a_user(mut app) {
        app.login_admin().await;
        let id = app.create_user("r@example.com", Some("password123"), false).await;
        let a = app.login("r@example.com", "password123").await;
        let b = app.login("r@example.com", "password123").await;
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}/sessions")).send().await.unwrap();
        assert_eq!(body_json(res).await["revoked"], json!(2));
        for t in [a, b] {
            let res = app.as_user(&t, Method::GET, "/api/user/current").send().await.unwrap();
            assert_error(res, 401, "unauthenticated").await;
        }
        let events = app.audit_events("kind=session_revoked").await;
        assert_eq!(events[0]["user_id"], json!(id));
        assert_eq!(events[0]["email"], json!("r@example.com"), "the event names whose sessions");
        let res = app.admin(Method::PUT, &format!("/api/user/{id}/password")).json(&json!({"password": "short"})).send().await.unwrap();
        assert_error(res, 400, "validation_failed").await;
        let res = app.admin(Method::PUT, &format!("/api/user/{id}/password")).json(&json!({"password": "a-new-password"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let events = app.audit_events(&format!("kind=user_updated&user_id={id}")).await;
        assert_eq!(events[0]["email"], json!("r@example.com"), "the password change names whose");
        app.login("r@example.com", "a-new-password").await;
    }
}

both_backends! {
    async fn a_session_revoked_on_one_instance_stops_working_on_another_within_two_seconds(mut app) {
        app.login_admin().await;
        let id = app.create_user("multi@example.com", Some("password123"), false).await;
        let token = app.login("multi@example.com", "password123").await;
        let other = spawn_instance(&app).await;
        // The other instance has served (and cached) this session.
        let res = other.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}/sessions")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // This instance stops at once; the other within the cache's second.
        let res = app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let res = other.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
    }

    async fn group_changes_show_at_once_on_the_instance_that_made_them(mut app) {
        app.login_admin().await;
        let id = app.create_user("g@example.com", Some("password123"), false).await;
        let token = app.login("g@example.com", "password123").await;
        let me = body_json(app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap()).await;
        assert_eq!(me["group_ids"], json!([1]));
        let g = body_json(app.admin(Method::POST, "/api/permissions/group").json(&json!({"name": "Ops"})).send().await.unwrap()).await;
        let gid = g["id"].as_i64().unwrap();
        let res = app.admin(Method::POST, "/api/permissions/membership").json(&json!({"group_id": gid, "user_id": id})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let me = body_json(app.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap()).await;
        assert_eq!(me["group_ids"], json!([1, gid]));
    }

    async fn group_changes_reach_another_instance_within_the_cache_second(mut app) {
        app.login_admin().await;
        let id = app.create_user("g2@example.com", Some("password123"), false).await;
        let token = app.login("g2@example.com", "password123").await;
        let other = spawn_instance(&app).await;
        // The other instance has served (and cached) this session's answer.
        let me = body_json(other.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap()).await;
        assert_eq!(me["group_ids"], json!([1]));
        let g = body_json(app.admin(Method::POST, "/api/permissions/group").json(&json!({"name": "Ops"})).send().await.unwrap()).await;
        let gid = g["id"].as_i64().unwrap();
        let res = app.admin(Method::POST, "/api/permissions/membership").json(&json!({"group_id": gid, "user_id": id})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let me = body_json(other.as_user(&token, Method::GET, "/api/user/current").send().await.unwrap()).await;
        assert_eq!(me["group_ids"], json!([1, gid]));
        assert_eq!(me["groups"][1]["name"], "Ops");
    }
}

/// Builds the database at `$url` as an older release left it: only its first `$n` migrations,
/// then `$seed` with `$pool` naming a pool of it (the seed runs on either database, so it is
/// written out once per pool type here), and the pool closed.
macro_rules! at_version {
    ($backend:expr, $url:expr, $n:expr, |$pool:ident| $seed:block) => {{
        match $backend {
            Backend::Sqlite => {
                let opts = sqlx::sqlite::SqliteConnectOptions::from_str($url)
                    .unwrap()
                    .create_if_missing(true);
                let $pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
                let mut older = sqlx::migrate!("./migrations/sqlite");
                older.migrations = older.migrations.iter().take($n).cloned().collect::<Vec<_>>().into();
                older.run(&$pool).await.expect("older migrations");
                $seed
                $pool.close().await;
            }
            Backend::Postgres => {
                let $pool = sqlx::PgPool::connect($url).await.unwrap();
                let mut older = sqlx::migrate!("./migrations/postgres");
                older.migrations = older.migrations.iter().take($n).cloned().collect::<Vec<_>>().into();
                older.run(&$pool).await.expect("older migrations");
                $seed
                $pool.close().await;
            }
        }
    }};
}

/// Whether the SQLite database has an index of this name (upgrade tests: the migration
/// dropped it).
async fn has_index(pool: &sqlx::SqlitePool, name: &str) -> bool {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name = $1")
            .bind(name)
            .fetch_one(pool)
            .await
            .unwrap();
    n > 0
}

/// Runs an upgrade test, an `async fn(Backend)`, on SQLite and on PostgreSQL:
/// `mod <name> { fn sqlite(); fn postgres(); }`.
macro_rules! on_both_backends {
    ($name:ident: $test:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $test(Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $test(Backend::Postgres).await;
            }
        }
    };
}

/// A session issued before session ids were stored as bytes (migration 0002) still works after
/// the upgrade, and is stored as the 32 bytes of its SHA-256.
async fn a_session_from_before_binary_ids_survives_the_upgrade(backend: Backend) {
    let Some((url, dir)) = crate::support::database_url(backend) else {
        return;
    };
    let token = "pre-upgrade-session-token-0123456789abcdefg"; // 43, as then issued
    let hex_hash = latchkey::auth::session::hash_token(token);
    let at = now();
    // The schema as the first release left it, with a user and one of its sessions.
    at_version!(backend, &url, 1, |pool| {
        sqlx::query("INSERT INTO users (email, is_active, is_superuser, login_attributes, created_at, updated_at) \
                     VALUES ('before@example.com', TRUE, FALSE, '{}', $1, $1)")
            .bind(at).execute(&pool).await.expect("user");
        sqlx::query("INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen_at, auth_method) \
                     SELECT $1, id, $2, $3, $2, 'password' FROM users WHERE email = 'before@example.com'")
            .bind(&hex_hash).bind(at).bind(at + 3600).execute(&pool).await.expect("session");
    });

    let app = crate::support::spawn_on(backend, &url, dir, Default::default()).await;
    let res = app
        .as_user(token, Method::GET, "/api/user/current")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body_json(res).await["email"], "before@example.com");
    // The one session, stored under the 32 bytes of its SHA-256.
    assert_eq!(app.count("sessions").await, 1);
    assert!(app.session_last_seen(token).await.is_some());
    // Signing out finds it by its new key.
    let res = app
        .as_user(token, Method::DELETE, "/api/session")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .as_user(token, Method::GET, "/api/user/current")
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "unauthenticated").await;
}

on_both_backends!(
    a_session_from_before_binary_ids_survives_the_upgrade_on:
    a_session_from_before_binary_ids_survives_the_upgrade
);

/// Audit events written before migration 0005 (which copies SQLite's table into one without
/// `AUTOINCREMENT`, and replaces the partial indexes by outcome) keep their ids and every field,
/// are still found by each filter, and newer events get larger ids.
async fn audit_events_from_before_0005_survive_the_upgrade(backend: Backend) {
    let Some((url, dir)) = crate::support::database_url(backend) else {
        return;
    };
    let at: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z
    // The schema of migrations 0001–0004, with a user (id 1) and three events about them: a
    // success, a failure and a skipped group removal.
    at_version!(backend, &url, 4, |pool| {
        sqlx::query("INSERT INTO users (email, is_active, is_superuser, login_attributes, created_at, updated_at) \
                     VALUES ('old@example.com', TRUE, FALSE, '{}', $1, $1)")
            .bind(at).execute(&pool).await.expect("user");
        for (kind, outcome, reason) in [
            ("sso_login", "success", None),
            ("sso_login", "failure", Some("bad_signature")),
            ("group_removed", "skipped", Some("last_admin_kept")),
        ] {
            sqlx::query("INSERT INTO audit_events (at, kind, outcome, reason, user_id, email, ip, request_id, details) \
                         VALUES ($1, $2, $3, $4, 1, 'old@example.com', '192.0.2.1', 'req-old', '{\"group_id\":2}')")
                .bind(at).bind(kind).bind(outcome).bind(reason)
                .execute(&pool).await.expect("audit event");
        }
    });

    let mut app = crate::support::spawn_on(backend, &url, dir, Default::default()).await;
    app.login_admin().await;
    let ids = |events: &Value| -> Vec<i64> {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let list = |query: &str| {
        let req = app.admin(Method::GET, &format!("/api/audit?{query}"));
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            body_json(res).await
        }
    };
    let all = list("limit=100").await;
    let all_ids = ids(&all);
    // The admin's creation and login came after the upgrade, with larger ids.
    assert!(all_ids.len() >= 5, "{all}");
    assert_eq!(all_ids[all_ids.len() - 3..], [3, 2, 1]);
    assert!(
        all_ids[..all_ids.len() - 3].iter().all(|&id| id > 3),
        "{all}"
    );
    let old = &all["events"][all_ids.len() - 2];
    assert_eq!(old["kind"], "sso_login");
    assert_eq!(old["outcome"], "failure");
    assert_eq!(old["reason"], "bad_signature");
    assert_eq!(old["at"], "2026-01-01T00:00:00Z");
    assert_eq!(old["user_id"], 1);
    assert_eq!(old["email"], "old@example.com");
    assert_eq!(old["ip"], "192.0.2.1");
    assert_eq!(old["request_id"], "req-old");
    assert_eq!(old["details"], json!({"group_id": 2}));
    // Each filter through the new indexes.
    assert_eq!(ids(&list("outcome=failure").await), [2]);
    assert_eq!(ids(&list("outcome=skipped&kind=group_removed").await), [3]);
    assert_eq!(
        ids(&list("outcome=skipped&kind=sso_login").await),
        Vec::<i64>::new()
    );
    assert_eq!(ids(&list("kind=sso_login&before=3").await), [2, 1]);
    assert_eq!(ids(&list("user_id=1").await), [3, 2, 1]);
    assert_eq!(ids(&list("outcome=success&user_id=1").await), [1]);
    if backend == Backend::Sqlite {
        // No `AUTOINCREMENT` left, and no counter row for the table.
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let sql: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'audit_events'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!sql.to_uppercase().contains("AUTOINCREMENT"), "{sql}");
        let counters: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_sequence WHERE name = 'audit_events'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(counters, 0);
    }
}

on_both_backends!(
    audit_events_from_before_0005_survive_the_upgrade_on:
    audit_events_from_before_0005_survive_the_upgrade
);

/// Audit events written before migration 0006 (which drops SQLite's index of them by user
/// and chains each user's events instead) are still listed by user, page by page and with
/// the other filters, and the events written after the upgrade join the same lists.
async fn audit_events_from_before_0006_are_listed_by_user(backend: Backend) {
    let Some((url, dir)) = crate::support::database_url(backend) else {
        return;
    };
    let at: i64 = 1_767_225_600;
    // Two users (ids 1 and 2), events about each in turn, and one about no user.
    at_version!(backend, &url, 5, |pool| {
        for email in ["one@example.com", "two@example.com"] {
            sqlx::query("INSERT INTO users (email, is_active, is_superuser, login_attributes, created_at, updated_at) \
                         VALUES ($1, TRUE, FALSE, '{}', $2, $2)")
                .bind(email).bind(at).execute(&pool).await.expect("user");
        }
        for (user, kind, outcome) in [
            (Some(1), "user_created", "success"),
            (Some(2), "user_created", "success"),
            (Some(1), "sso_login", "success"),
            (None, "sso_login", "failure"),
            (Some(2), "sso_login", "success"),
            (Some(1), "sso_login", "failure"),
            (Some(1), "sso_login", "success"),
        ] {
            sqlx::query("INSERT INTO audit_events (at, kind, outcome, user_id, details) VALUES ($1, $2, $3, $4, '{}')")
                .bind(at).bind(kind).bind(outcome).bind(user)
                .execute(&pool).await.expect("audit event");
        }
    });

    let mut app = crate::support::spawn_on(backend, &url, dir, Default::default()).await;
    app.login_admin().await;
    let ids = |events: Vec<Value>| -> Vec<i64> {
        events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
    };
    assert_eq!(ids(app.audit_events("user_id=1").await), [7, 6, 3, 1]);
    assert_eq!(ids(app.audit_events("user_id=2").await), [5, 2]);
    assert_eq!(ids(app.audit_events("user_id=1&limit=2").await), [7, 6]);
    assert_eq!(
        ids(app.audit_events("user_id=1&limit=2&before=6").await),
        [3, 1]
    );
    assert_eq!(ids(app.audit_events("user_id=1&before=5").await), [3, 1]);
    assert_eq!(
        ids(app.audit_events("user_id=1&kind=sso_login").await),
        [7, 6, 3]
    );
    assert_eq!(
        ids(app.audit_events("user_id=1&outcome=failure").await),
        [6]
    );
    assert_eq!(
        ids(app
            .audit_events("user_id=2&kind=user_created&before=5")
            .await),
        [2]
    );
    // A change of user 1 after the upgrade comes first in their list, and not in user 2's.
    let res = app
        .admin(Method::PUT, "/api/user/1")
        .json(&json!({"last_name": "After"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let one = app.audit_events("user_id=1").await;
    assert_eq!(one.len(), 5, "{one:?}");
    assert_eq!(one[0]["kind"], "user_updated");
    assert!(one[0]["id"].as_i64().unwrap() > 7);
    assert_eq!(ids(one[1..].to_vec()), [7, 6, 3, 1]);
    assert_eq!(ids(app.audit_events("user_id=2").await), [5, 2]);
    if backend == Backend::Sqlite {
        // The chain as the migration made it, and no index by user left.
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let chain: Vec<(i64, Option<i64>)> =
            sqlx::query_as("SELECT id, user_prev FROM audit_events WHERE id <= 7 ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        let prev = [Some(0), Some(0), Some(1), None, Some(2), Some(3), Some(6)];
        let expected: Vec<(i64, Option<i64>)> = (1..=7).zip(prev).collect();
        assert_eq!(chain, expected);
        let newest: Vec<Option<i64>> =
            sqlx::query_scalar("SELECT last_event_id FROM users WHERE id IN (1, 2) ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(newest, [one[0]["id"].as_i64(), Some(5)]);
        assert!(!has_index(&pool, "audit_events_user").await);
    }
}

on_both_backends!(
    audit_events_from_before_0006_are_listed_by_user_on:
    audit_events_from_before_0006_are_listed_by_user
);

/// Sessions issued before migration 0007 (which drops SQLite's index of sessions by user and
/// chains each user's sessions instead) keep working, and ending one of them, or all of a
/// user's, ends exactly those.
async fn sessions_from_before_0007_end_one_at_a_time_and_all_together(backend: Backend) {
    let Some((url, dir)) = crate::support::database_url(backend) else {
        return;
    };
    let at = now();
    // Two users (ids 1 and 2), and sessions of each in turn: 1, 2, 1, 1, 2.
    let sessions: Vec<(i64, String, Vec<u8>)> = [1, 2, 1, 1, 2]
        .into_iter()
        .map(|user| {
            let (token, key) = latchkey::auth::session::new_token();
            (user, token, key.as_bytes().to_vec())
        })
        .collect();
    at_version!(backend, &url, 6, |pool| {
        for email in ["one@example.com", "two@example.com"] {
            sqlx::query("INSERT INTO users (email, is_active, is_superuser, login_attributes, created_at, updated_at) \
                         VALUES ($1, TRUE, FALSE, '{}', $2, $2)")
                .bind(email).bind(at).execute(&pool).await.expect("user");
        }
        for (user, _, key) in &sessions {
            sqlx::query("INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen_at, auth_method) \
                         VALUES ($1, $2, $3, $4, $3, 'password')")
                .bind(key).bind(user).bind(at).bind(at + 3600)
                .execute(&pool).await.expect("session");
        }
    });

    let mut app = crate::support::spawn_on(backend, &url, dir, Default::default()).await;
    app.login_admin().await;
    let works = |token: &str| {
        let req = app.as_user(token, Method::GET, "/api/user/current");
        async move { req.send().await.unwrap().status() == StatusCode::OK }
    };
    for (_, token, _) in &sessions {
        assert!(works(token).await);
    }
    assert_eq!(app.sessions_of(1).await, 3);
    assert_eq!(app.sessions_of(2).await, 2);
    // User 1 signs out of the middle one of their three; then all of theirs are revoked.
    let res = app
        .as_user(&sessions[2].1, Method::DELETE, "/api/session")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.sessions_of(1).await, 2);
    let res = app
        .admin(Method::DELETE, "/api/user/1/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(res).await["revoked"], json!(2));
    assert_eq!(app.sessions_of(1).await, 0);
    for (user, token, _) in &sessions {
        assert_eq!(works(token).await, *user == 2, "a session of user {user}");
    }
    assert_eq!(app.sessions_of(2).await, 2);
    if backend == Backend::Sqlite {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        assert!(!has_index(&pool, "sessions_user").await);
    }
}

on_both_backends!(
    sessions_from_before_0007_end_one_at_a_time_and_all_together_on:
    sessions_from_before_0007_end_one_at_a_time_and_all_together
);

/// Audit events written before migration 0008 (which drops SQLite's index of them by kind
/// and chains the events of each kind instead) are still listed by kind, page by page and
/// with the other filters, and the events written after the upgrade join the same lists.
async fn audit_events_from_before_0008_are_listed_by_kind(backend: Backend) {
    let Some((url, dir)) = crate::support::database_url(backend) else {
        return;
    };
    let at: i64 = 1_767_225_600;
    at_version!(backend, &url, 7, |pool| {
        for (kind, outcome) in [
            ("setting_changed", "success"),
            ("sso_login", "failure"),
            ("group_created", "success"),
            ("sso_login", "success"),
            ("setting_changed", "success"),
            ("sso_login", "success"),
            ("sso_login", "failure"),
        ] {
            sqlx::query(
                "INSERT INTO audit_events (at, kind, outcome, details) VALUES ($1, $2, $3, '{}')",
            )
            .bind(at)
            .bind(kind)
            .bind(outcome)
            .execute(&pool)
            .await
            .expect("audit event");
        }
    });

    let mut app = crate::support::spawn_on(backend, &url, dir, Default::default()).await;
    let ids = |events: Vec<Value>| -> Vec<i64> {
        events.iter().map(|e| e["id"].as_i64().unwrap()).collect()
    };
    app.login_admin().await;
    for (query, expected) in [
        ("kind=sso_login", &[7, 6, 4, 2][..]),
        ("kind=sso_login&limit=2", &[7, 6]),
        ("kind=sso_login&limit=2&before=6", &[4, 2]),
        ("kind=sso_login&before=5", &[4, 2]),
        ("kind=sso_login&outcome=success", &[6, 4]),
        ("kind=sso_login&outcome=failure", &[7, 2]),
        ("kind=group_created", &[3]),
    ] {
        assert_eq!(ids(app.audit_events(query).await), expected, "{query}");
    }
    // A setting changed after the upgrade comes first in its kind's list, and in no other.
    let changed = app.audit_events("kind=setting_changed").await;
    assert_eq!(ids(changed.clone()), [5, 1]);
    let res = app
        .put_settings(json!({"jwt-clock-skew-seconds": 30}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let changed = app.audit_events("kind=setting_changed").await;
    assert_eq!(changed.len(), 3, "{changed:?}");
    assert!(changed[0]["id"].as_i64().unwrap() > 7);
    assert_eq!(ids(changed[1..].to_vec()), [5, 1]);
    assert_eq!(ids(app.audit_events("kind=sso_login").await), [7, 6, 4, 2]);
    if backend == Backend::Sqlite {
        // The chain as the migration made it, the kinds' newest, and no index by kind left.
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let chain: Vec<(i64, i64)> =
            sqlx::query_as("SELECT id, kind_prev FROM audit_events WHERE id <= 7 ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            chain,
            [(1, 0), (2, 0), (3, 0), (4, 2), (5, 1), (6, 4), (7, 6)]
        );
        let newest: Vec<(String, i64)> =
            sqlx::query_as("SELECT kind, last_id FROM audit_kinds WHERE kind IN ('group_created', 'setting_changed', 'sso_login') ORDER BY kind")
                .fetch_all(&pool)
                .await
                .unwrap();
        let setting = changed[0]["id"].as_i64().unwrap();
        assert_eq!(
            newest,
            [
                ("group_created".to_owned(), 3),
                ("setting_changed".to_owned(), setting),
                ("sso_login".to_owned(), 7)
            ]
        );
        assert!(!has_index(&pool, "audit_events_kind").await);
        // Failures and skipped events of a kind are still listed through their partial index.
        assert!(has_index(&pool, "audit_events_outcome_kind").await);
    }
}

on_both_backends!(
    audit_events_from_before_0008_are_listed_by_kind_on:
    audit_events_from_before_0008_are_listed_by_kind
);

/// Replay records written before migration 0009 (which copies SQLite's table into one ordered by
/// the key alone, without the index by expiry) still refuse their tokens, and the sweep still
/// deletes the expired ones and only those.
async fn replay_records_from_before_0009_still_refuse_their_tokens(backend: Backend) {
    let Some((url, dir)) = crate::support::database_url(backend) else {
        return;
    };
    let at = now();
    at_version!(backend, &url, 8, |pool| {
        for (key, expires) in [
            ("jti:before-upgrade", at + 3_600),
            ("jti:expired-before-upgrade", at - 60),
            ("sha256:0123", at + 3_600),
        ] {
            sqlx::query("INSERT INTO replay_records (token_key, expires_at) VALUES ($1, $2)")
                .bind(key)
                .bind(expires)
                .execute(&pool)
                .await
                .expect("replay record");
        }
    });

    let mut app = crate::support::spawn_on(backend, &url, dir, Default::default()).await;
    // The server sweeps at its start too: either sweep deletes the expired record alone.
    app.store.sweep_expired(at, true).await.unwrap();
    assert_eq!(app.count("replay_records").await, 2);
    let gone = "SELECT COUNT(*) FROM replay_records WHERE token_key = 'jti:expired-before-upgrade'";
    assert_eq!(app.ids(gone).await, [0]);
    app.login_admin().await;
    app.configure_jwt().await;
    let mut claims = login_claims("upgraded@example.com");
    claims["jti"] = json!("before-upgrade");
    assert_error(
        app.sso_callback(&sign(claims), None).await,
        401,
        "token_replayed",
    )
    .await;
    // A new token is recorded next to them, and kept by the next sweep.
    let res = app
        .sso_callback(&sign(login_claims("upgraded@example.com")), None)
        .await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(app.count("replay_records").await, 3);
    app.store.sweep_expired(at, true).await.unwrap();
    assert_eq!(app.count("replay_records").await, 3);
    if backend == Backend::Sqlite {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        assert!(!has_index(&pool, "replay_records_expires").await);
        let sql: String = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'replay_records'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(sql.ends_with("WITHOUT ROWID"), "{sql}");
    }
}

on_both_backends!(
    replay_records_from_before_0009_still_refuse_their_tokens_on:
    replay_records_from_before_0009_still_refuse_their_tokens
);

/// A session lifetime fixed by this instance's environment is not the one a writer elsewhere
/// changed: the cutoff that writer recorded does not end this instance's sessions.
#[tokio::test]
async fn session_cutoffs_do_not_apply_to_a_lifetime_fixed_by_the_environment() {
    let env = std::collections::HashMap::from([(
        "LATCHKEY_SESSION_MAX_AGE_MINUTES".to_owned(),
        "43200".to_owned(),
    )]);
    let app = spawn_app_with_env(Backend::Sqlite, env).await.unwrap();
    app.create_user("long@example.com", Some("password123"), false)
        .await;
    let token = app.login("long@example.com", "password123").await;
    // Twenty days old: within this instance's 30 days.
    app.set_session_time(&token, "created_at", now() - 20 * 86_400)
        .await;
    // What a `settings set session-max-age-minutes` run elsewhere (seeing the default of 14
    // days) records: sessions created more than 14 days ago ended.
    let cutoff = (now() - 14 * 86_400).to_string();
    app.store
        .write_settings(
            &[(
                latchkey::settings::SESSIONS_ENDED_CREATED.to_owned(),
                Some(cutoff),
            )],
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let res = app
        .as_user(&token, Method::GET, "/api/user/current")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Sends `head` (and nothing more) on a new connection and returns what the server answers
/// before it closes the connection, and when it closed it; `None` if it stays open 10 s.
async fn answer_to_a_stalled_request(
    app: &TestApp,
    head: &str,
) -> Option<(String, std::time::Duration)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let sent = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut answer),
    )
    .await;
    // A reset after the answer (the body was never read) ends the read too.
    read.ok().map(|_| {
        (
            String::from_utf8_lossy(&answer).into_owned(),
            sent.elapsed(),
        )
    })
}

/// Clients that stall (slowloris): a request's headers, and then its body, must arrive within
/// `LATCHKEY_CLIENT_TIMEOUT_SECONDS`, and a body declared too large is refused at once.
#[tokio::test]
async fn stalled_clients_are_cut_off_after_the_client_timeout() {
    let env = std::collections::HashMap::from([(
        "LATCHKEY_CLIENT_TIMEOUT_SECONDS".to_owned(),
        "1".to_owned(),
    )]);
    let app = spawn_app_with_env(Backend::Sqlite, env).await.unwrap();
    // Not before the limit (a timer does not fire early), and within the test's 10 s.
    let after_the_limit = |took: std::time::Duration| took >= std::time::Duration::from_millis(900);
    // A connection that sends nothing, and headers that never end: closed, with no answer.
    for head in ["", "GET /api/health HTTP/1.1\r\nHost: x\r\n"] {
        let (answer, took) = answer_to_a_stalled_request(&app, head)
            .await
            .expect("closed");
        assert!(answer.is_empty(), "{head:?}: {answer}");
        assert!(after_the_limit(took), "{head:?}: closed after {took:?}");
    }
    // An idle keep-alive connection is closed too, after its answer.
    let (answer, took) =
        answer_to_a_stalled_request(&app, "GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("closed once idle");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(after_the_limit(took), "closed after {took:?}");
    // A body that stops coming: 400 naming the body.
    let head = "POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":";
    let (answer, took) = answer_to_a_stalled_request(&app, head)
        .await
        .expect("answered");
    assert!(after_the_limit(took), "answered after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"validation_failed\"") && answer.contains("did not arrive within 1 s"),
        "{answer}"
    );
    // A body declared over 1 MiB: 413 before any of it is sent, on a server whose client
    // time limit (the default, 130 s) is far longer than the answer may take here (10 s).
    let patient = spawn_app(Backend::Sqlite).await.unwrap();
    let head = "POST /api/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n";
    let (answer, _) = answer_to_a_stalled_request(&patient, head)
        .await
        .expect("answered at once");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"body_too_large\""), "{answer}");
    // An unusable value stops the start.
    for bad in ["0", "3601", "soon"] {
        let env = std::collections::HashMap::from([(
            "LATCHKEY_CLIENT_TIMEOUT_SECONDS".to_owned(),
            bad.to_owned(),
        )]);
        let (url, _dir) = database_url(Backend::Sqlite).unwrap();
        let err =
            latchkey::app::App::build_with_env("127.0.0.1:0", &url, move |k| env.get(k).cloned())
                .await
                .err()
                .expect("refused");
        assert!(
            err.to_string().contains("LATCHKEY_CLIENT_TIMEOUT_SECONDS"),
            "{err}"
        );
    }
}

/// An address stored before the current rules (here fullwidth letters) can be sent back
/// unchanged with an edit of the rest, as the admin page does; a new one must follow them.
#[tokio::test]
async fn an_address_stored_before_the_current_rules_can_be_kept_on_edit() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    app.login_admin().await;
    let old = "\u{FF4F}ld@example.com";
    let id = app.create_user(old, None, false).await;
    let res = app
        .admin(Method::PUT, &format!("/api/user/{id}"))
        .json(&json!({"email": old, "first_name": "Kept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = body_json(res).await;
    assert_eq!(
        (body["email"].as_str(), body["first_name"].as_str()),
        (Some(old), Some("Kept"))
    );
    let res = app
        .admin(Method::PUT, &format!("/api/user/{id}"))
        .json(&json!({"email": "\u{FF4E}ew@example.com"}))
        .send()
        .await
        .unwrap();
    let err = assert_error(res, 400, "validation_failed").await;
    assert_eq!(err["field"], json!("email"));
}

/// An account stored under an address that today's rules refuse is still throttled by that
/// address: ten wrong guesses, then even the right password waits.
#[tokio::test]
async fn an_account_under_a_legacy_address_is_throttled_by_it() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    app.login_admin().await;
    let legacy = "e\u{0301}lodie@exemple.fr";
    app.create_user(legacy, Some("password123"), false).await;
    let login = |password: &'static str| {
        app.client
            .post(app.url("/api/session"))
            .json(&json!({"username": legacy, "password": password}))
            .send()
    };
    assert_eq!(login("password123").await.unwrap().status(), StatusCode::OK);
    for _ in 0..10 {
        assert_error(
            login("wrong-password").await.unwrap(),
            401,
            "invalid_credentials",
        )
        .await;
    }
    assert_error(
        login("password123").await.unwrap(),
        429,
        "too_many_attempts",
    )
    .await;
    assert_eq!(app.login_failures(&format!("email:{legacy}")).await, 10);
    // The failures are recorded under the account's address.
    let rows = app
        .audit_events("kind=password_login&outcome=failure&limit=1")
        .await;
    assert_eq!(rows[0]["email"], json!(legacy));
}
