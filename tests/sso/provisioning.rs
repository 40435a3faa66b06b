//! Provisioning (SPEC §4.4): new users, names, login attributes and their caps, `sub`,
//! matching by lower-cased email, configured claim names.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

fn with(email: &str, extra: Value) -> Value {
    let mut c = login_claims(email);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

both_backends! {
    async fn a_first_login_creates_an_sso_user_without_password(mut app) {
        sso_ready(&mut app).await;
        let before = Counts::of(&app).await;
        let (session, u) = sso_login(&app, login_claims("New.Person@Example.com")).await;
        let after = Counts::of(&app).await;
        assert_eq!(after.users, before.users + 1);
        assert_eq!(after.memberships, before.memberships + 1, "All Users only");
        assert_eq!(after.sessions, before.sessions + 1);
        let me = me(&app, &session).await;
        assert_eq!(me["id"], u["id"]);
        assert_eq!(me["email"], json!("new.person@example.com"));
        assert_eq!((me["first_name"].clone(), me["last_name"].clone()), (json!(null), json!(null)), "absent names are null for new users");
        assert_eq!(me["sso_source"], json!("jwt"));
        assert_eq!(me["is_superuser"], json!(false));
        assert_eq!(me["group_ids"], json!([1]));
        let stored = user_by_email(&app, "new.person@example.com").await;
        assert!(!stored.has_password && stored.is_active);
        // Without a password the account cannot sign in with one.
        let res = app.client.post(app.url("/api/session")).json(&json!({"username": "new.person@example.com", "password": "any password at all"})).send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        let created = app.audit_events("kind=user_created&limit=1").await;
        assert_eq!(created[0]["email"], json!("new.person@example.com"));
        assert_eq!(created[0]["user_id"], u["id"]);
    }

    async fn names_are_updated_when_present_and_kept_when_absent(mut app) {
        sso_ready(&mut app).await;
        let (_, u) = sso_login(&app, with("names@example.com", json!({"first_name": "Ann", "last_name": "Lee"}))).await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!((u["first_name"].clone(), u["last_name"].clone()), (json!("Ann"), json!("Lee")));
        sso_login(&app, with("names@example.com", json!({"first_name": "Anne"}))).await;
        let v = user(&app, id).await;
        assert_eq!((v["first_name"].clone(), v["last_name"].clone()), (json!("Anne"), json!("Lee")));
        sso_login(&app, login_claims("names@example.com")).await;
        let v = user(&app, id).await;
        assert_eq!((v["first_name"].clone(), v["last_name"].clone()), (json!("Anne"), json!("Lee")), "absent names leave values untouched");
        sso_login(&app, with("names@example.com", json!({"last_name": "Li", "first_name": 42}))).await;
        let v = user(&app, id).await;
        assert_eq!((v["first_name"].clone(), v["last_name"].clone()), (json!("Anne"), json!("Li")), "a non-string name counts as absent");
        assert_eq!(v["login_attributes"], json!({}), "name claims are never attributes");
        // A name over 254 characters is cut, not a refused login.
        let (_, u) = sso_login(&app, with("names@example.com", json!({"first_name": "é".repeat(300)}))).await;
        assert_eq!(u["first_name"], json!("é".repeat(254)));
        assert_eq!(user(&app, id).await["first_name"], json!("é".repeat(254)));
    }

    async fn login_attributes_are_replaced_at_every_login(mut app) {
        sso_ready(&mut app).await;
        let (_, u) = sso_login(&app, with("attrs@example.com", json!({"dept": "eng", "level": 2, "meta": {"a": [1, 2]}}))).await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!(u["login_attributes"], json!({"dept": "eng", "level": 2, "meta": {"a": [1, 2]}}));
        sso_login(&app, with("attrs@example.com", json!({"region": "eu"}))).await;
        assert_eq!(user(&app, id).await["login_attributes"], json!({"region": "eu"}));
        sso_login(&app, login_claims("attrs@example.com")).await;
        assert_eq!(user(&app, id).await["login_attributes"], json!({}), "no attributes now means none stored");
    }

    async fn registered_email_name_and_groups_claims_are_not_attributes(mut app) {
        sso_ready(&mut app).await;
        let claims = with("reg@example.com", json!({
            "iss": "idp", "sub": "s-1", "aud": "x", "nbf": now() - 1, "exp": now() + 60,
            "first_name": "R", "last_name": "G", "groups": ["a"], "ISS": "kept", "subject": "kept",
        }));
        let (_, u) = sso_login(&app, claims).await;
        assert_eq!(u["login_attributes"], json!({"ISS": "kept", "subject": "kept"}));
    }

    async fn one_hundred_attributes_of_one_kib_are_the_limit(mut app) {
        sso_ready(&mut app).await;
        let mut c = login_claims("cap@example.com");
        for i in 0..100 {
            c[format!("a{i}")] = json!(i);
        }
        let (_, u) = sso_login(&app, c.clone()).await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!(u["login_attributes"].as_object().unwrap().len(), 100);
        c["jti"] = json!("cap-101");
        c["a100"] = json!(100);
        expect_refused(&app, &sign(c), 401, "claims_too_large", "101 attributes").await;
        assert_eq!(user(&app, id).await["login_attributes"].as_object().unwrap().len(), 100, "the refused login changed nothing");

        // 1 KiB of JSON per value: a 1022-character string is 1024 bytes with its quotes.
        let (_, u) = sso_login(&app, with("cap@example.com", json!({"note": "x".repeat(1022)}))).await;
        assert_eq!(u["login_attributes"]["note"].as_str().unwrap().len(), 1022);
        expect_refused(&app, &sign(with("cap@example.com", json!({"note": "x".repeat(1023)}))), 401, "claims_too_large", "1025 bytes").await;
        let nested = json!({"deep": {"list": ["y".repeat(1020)]}});
        assert!(nested["deep"].to_string().len() > 1024);
        expect_refused(&app, &sign(with("cap@example.com", nested)), 401, "claims_too_large", "nested value over 1 KiB").await;
        assert_eq!(user(&app, id).await["login_attributes"], json!({"note": "x".repeat(1022)}));
    }

    async fn sub_is_stored_and_updated(mut app) {
        sso_ready(&mut app).await;
        sso_login(&app, with("sub@example.com", json!({"sub": "idp-user-1"}))).await;
        assert_eq!(user_by_email(&app, "sub@example.com").await.sso_subject.as_deref(), Some("idp-user-1"));
        sso_login(&app, login_claims("sub@example.com")).await;
        assert_eq!(user_by_email(&app, "sub@example.com").await.sso_subject.as_deref(), Some("idp-user-1"), "kept when absent");
        sso_login(&app, with("sub@example.com", json!({"sub": "idp-user-2"}))).await;
        assert_eq!(user_by_email(&app, "sub@example.com").await.sso_subject.as_deref(), Some("idp-user-2"));
    }

    async fn an_existing_user_is_found_by_lowercased_email(mut app) {
        sso_ready(&mut app).await;
        let id = app.create_user("mixed@example.com", Some("password123"), false).await;
        let users = app.count("users").await;
        let (_, u) = sso_login(&app, with("MIXED@Example.COM", json!({"first_name": "Max"}))).await;
        assert_eq!(u["id"], json!(id));
        assert_eq!(app.count("users").await, users);
        let v = user(&app, id).await;
        assert_eq!(v["sso_source"], json!("jwt"));
        assert_eq!(v["first_name"], json!("Max"));
        assert_eq!(v["has_password"], json!(true), "the password is left alone");
        let (_, again) = sso_login(&app, login_claims("mixed@EXAMPLE.com")).await;
        assert_eq!(again["id"], json!(id));
    }

    async fn configured_claim_names_are_used(mut app) {
        sso_ready(&mut app).await;
        let g = create_group(&app, "Readers").await;
        let res = app.put_settings(json!({
            "jwt-attribute-email": "mail", "jwt-attribute-firstname": "given_name",
            "jwt-attribute-lastname": "family_name", "jwt-attribute-groups": "roles",
            "jwt-group-sync": true, "jwt-group-mappings": {"reader": [g]},
        })).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let claims = json!({
            "mail": "Cfg@Example.com", "given_name": "Cy", "family_name": "Fig", "roles": ["reader"],
            "email": "other@example.com", "groups": ["ignored"], "iat": now(), "jti": "cfg-1",
        });
        let (_, u) = sso_login(&app, claims).await;
        assert_eq!(u["email"], json!("cfg@example.com"));
        assert_eq!((u["first_name"].clone(), u["last_name"].clone()), (json!("Cy"), json!("Fig")));
        assert_eq!(u["group_ids"], json!([1, g]));
        assert_eq!(u["login_attributes"], json!({"email": "other@example.com", "groups": ["ignored"]}));
        assert!(app.store.find_user_by_email("other@example.com").await.unwrap().is_none());
    }

    async fn provisioning_off_still_updates_known_users(mut app) {
        sso_ready(&mut app).await;
        let id = app.create_user("known@example.com", None, false).await;
        let res = app.put_setting("jwt-user-provisioning-enabled", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (_, u) = sso_login(&app, with("known@example.com", json!({"first_name": "K", "team": "x"}))).await;
        assert_eq!(u["id"], json!(id));
        assert_eq!(u["first_name"], json!("K"));
        assert_eq!(u["login_attributes"], json!({"team": "x"}));
        expect_refused(&app, &sign(login_claims("unknown@example.com")), 403, "user_not_provisioned", "unknown").await;
    }
}
