//! The admin dry run `POST /api/sso/jwt/test` (SPEC §6): what the callback would do, with
//! nothing written and the token left unused.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

async fn dry_run(app: &TestApp, token: &str) -> Value {
    let res = app
        .admin(Method::POST, "/api/sso/jwt/test")
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await
}

fn check_names(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

both_backends! {
    async fn a_good_token_for_a_new_user_reports_create_and_writes_nothing(mut app) {
        sso_ready(&mut app).await;
        let eng = create_group(&app, "Engineering").await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": {"eng": [eng]}})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let claims = json!({"email": "Dry@Example.com", "first_name": "Dee", "groups": ["eng"], "team": "t1", "iat": now(), "jti": "dry-1"});
        let token = sign(claims);
        let before = Counts::of(&app).await;
        let report = dry_run(&app, &token).await;
        assert_eq!(report["ok"], json!(true), "{report}");
        assert_eq!(report["reason"], json!(null));
        let names = check_names(&report);
        for want in ["size", "structure", "algorithm", "header", "signature", "iat", "issuer", "audience", "purpose", "jti", "single_use"] {
            assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
        }
        assert!(report["checks"].as_array().unwrap().iter().all(|c| c["ok"] == json!(true)));
        assert_eq!(report["user"]["action"], json!("create"));
        assert_eq!(report["user"]["email"], json!("dry@example.com"));
        assert_eq!(report["user"]["first_name"], json!("Dee"));
        assert_eq!(report["login_attributes"], json!({"team": "t1"}));
        assert_eq!(report["groups"]["add"], json!([{"id": eng, "name": "Engineering", "mapped_from": ["eng"]}]));
        assert_eq!(report["groups"]["remove"], json!([]));
        assert_eq!(Counts::of(&app).await, before, "nothing written, not even audit rows");
        let text = report.to_string();
        assert!(!text.contains(SECRET) && !text.contains(&token));
        // The token was not consumed: it still logs in, and the dry run now sees it used.
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        let report = dry_run(&app, &token).await;
        assert_eq!(report["ok"], json!(false));
        assert_eq!(report["reason"], json!("token_replayed"));
        let last = report["checks"].as_array().unwrap().last().unwrap().clone();
        assert_eq!((last["name"].clone(), last["ok"].clone()), (json!("single_use"), json!(false)));
    }

    async fn an_existing_user_reports_update_and_the_group_changes(mut app) {
        sso_ready(&mut app).await;
        let eng = create_group(&app, "Engineering").await;
        let ops = create_group(&app, "Operations").await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": {"eng": [eng], "ops": [ops]}})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (_, u) = sso_login(&app, json!({"email": "upd@example.com", "groups": ["eng"], "iat": now(), "jti": "u-1"})).await;
        let before = Counts::of(&app).await;
        let report = dry_run(&app, &sign(json!({"email": "UPD@example.com", "groups": ["ops"], "iat": now(), "jti": "u-2"}))).await;
        assert_eq!(report["ok"], json!(true), "{report}");
        assert_eq!(report["user"]["action"], json!("update"));
        assert_eq!(report["user"]["id"], u["id"]);
        let ids = |k: &str| -> Vec<i64> { report["groups"][k].as_array().unwrap().iter().map(|g| g["id"].as_i64().unwrap()).collect() };
        assert_eq!(ids("add"), vec![ops]);
        assert_eq!(ids("remove"), vec![eng]);
        assert_eq!(report["groups"]["remove"][0]["name"], json!("Engineering"));
        assert_eq!(report["groups"]["add"][0]["name"], json!("Operations"));
        assert_eq!(Counts::of(&app).await, before);
        assert_eq!(group_ids(&app, u["id"].as_i64().unwrap()).await, vec![1, eng], "memberships unchanged");
        // Without a groups claim, sync is still reported on (the claim is what is missing).
        let report = dry_run(&app, &sign(json!({"email": "upd@example.com", "iat": now(), "jti": "u-3"}))).await;
        assert_eq!(report["groups"], json!({"sync": true, "claim": null, "add": [], "remove": [], "kept_last_admin": []}));
        let res = app.put_setting("jwt-group-sync", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let report = dry_run(&app, &sign(json!({"email": "upd@example.com", "groups": ["ops"], "iat": now(), "jti": "u-4"}))).await;
        assert_eq!(report["groups"]["sync"], json!(false));
        assert_eq!(report["groups"]["add"], json!([]));
    }

    async fn the_last_admin_removal_is_reported_as_kept(mut app) {
        sso_ready(&mut app).await;
        let res = app.put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": {"admins": [2]}})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let report = dry_run(&app, &sign(json!({"email": ADMIN_EMAIL, "groups": [], "iat": now(), "jti": "adm"}))).await;
        assert_eq!(report["ok"], json!(true), "{report}");
        assert_eq!(report["groups"]["remove"], json!([]));
        assert_eq!(report["groups"]["kept_last_admin"][0]["id"], json!(2));
        assert_eq!(report["groups"]["kept_last_admin"][0]["name"], json!("Administrators"));
    }

    async fn a_bad_token_reports_the_reason_and_the_failing_check(mut app) {
        sso_ready(&mut app).await;
        let cases = [
            ("bad_signature", sign_with(login_claims("b@example.com"), OTHER_SECRET)),
            ("token_too_old", sign(json!({"email": "b@example.com", "iat": now() - 3600}))),
            ("alg_not_allowed", forge(r#"{"alg":"none"}"#, &payload("b@example.com"))),
            ("token_malformed", "not.a.token".to_owned()),
            // Surrounding whitespace: the callback refuses it, so the dry run says so too.
            ("token_malformed", format!(" {}\n", sign(login_claims("b@example.com")))),
            ("missing_email", sign(json!({"iat": now()}))),
            ("invalid_email", sign(json!({"email": "nope", "iat": now()}))),
            ("claims_too_large", sign(json!({"email": "b@example.com", "iat": now(), "x": "y".repeat(2000)}))),
            ("claim_invalid", sign(json!({"email": "b@example.com", "iat": now(), "jti": "j\u{0}"}))),
            ("claim_invalid", sign(json!({"email": "b@example.com", "iat": now(), "first_name": "\u{0}"}))),
        ];
        let before = Counts::of(&app).await;
        for (code, token) in cases {
            let report = dry_run(&app, &token).await;
            assert_eq!(report["ok"], json!(false), "{code}: {report}");
            assert_eq!(report["reason"], json!(code), "{report}");
            assert!(report["message"].as_str().is_some_and(|m| !m.is_empty()));
            if report["checks"].as_array().unwrap().iter().any(|c| c["ok"] == json!(false)) {
                let last = report["checks"].as_array().unwrap().last().unwrap();
                assert_eq!(last["ok"], json!(false), "the failing check comes last: {report}");
                assert!(last["detail"].as_str().unwrap().contains(code), "{report}");
            }
            assert!(!report.to_string().contains(SECRET));
        }
        assert_eq!(Counts::of(&app).await, before);
    }

    async fn account_refusals_are_reported(mut app) {
        sso_ready(&mut app).await;
        let id = app.create_user("off@example.com", None, false).await;
        let res = app.admin(Method::DELETE, &format!("/api/user/{id}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let report = dry_run(&app, &sign(login_claims("off@example.com"))).await;
        assert_eq!((report["ok"].clone(), report["reason"].clone()), (json!(false), json!("user_deactivated")));
        assert_eq!(report["user"]["action"], json!("refuse"));
        let res = app.put_setting("jwt-user-provisioning-enabled", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let report = dry_run(&app, &sign(login_claims("new@example.com"))).await;
        assert_eq!((report["ok"].clone(), report["reason"].clone()), (json!(false), json!("user_not_provisioned")));
        assert!(app.store.find_user_by_email("new@example.com").await.unwrap().is_none());
    }

    async fn the_dry_run_is_for_admins_only(mut app) {
        sso_ready(&mut app).await;
        let token = sign(login_claims("peek@example.com"));
        let res = app.client.post(app.url("/api/sso/jwt/test")).json(&json!({"token": token})).send().await.unwrap();
        assert_error(res, 401, "unauthenticated").await;
        let (session, _) = sso_login(&app, login_claims("peek@example.com")).await;
        let res = app.as_user(&session, Method::POST, "/api/sso/jwt/test").json(&json!({"token": token})).send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
        let res = app.admin(Method::POST, "/api/sso/jwt/test").json(&json!({"jwt": token})).send().await.unwrap();
        assert_error(res, 400, "validation_failed").await;
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND, "still unused");
    }
}
