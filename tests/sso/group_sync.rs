//! Group sync (SPEC §4.5): mapped groups added, managed groups removed, unmanaged groups and
//! All Users untouched, Administrators kept in step with is_superuser, the last active admin
//! kept, and every change audited.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

struct Groups {
    eng: i64,
    ops: i64,
    handmade: i64,
}

/// SSO configured, three groups, sync on, `eng`/`ops`/`both` mapped (Hand-made is not).
async fn sync_ready(app: &mut TestApp, extra_mappings: Value) -> Groups {
    sso_ready(app).await;
    let eng = create_group(app, "Engineering").await;
    let ops = create_group(app, "Operations").await;
    let handmade = create_group(app, "Hand-made").await;
    let mut mappings = json!({"eng": [eng], "ops": [ops], "both": [eng, ops]});
    for (k, v) in extra_mappings.as_object().unwrap() {
        mappings[k] = v.clone();
    }
    let res = app
        .put_settings(json!({"jwt-group-sync": true, "jwt-group-mappings": mappings}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    Groups { eng, ops, handmade }
}

fn claims(email: &str, groups: Option<Value>) -> Value {
    let mut c = login_claims(email);
    if let Some(g) = groups {
        c["groups"] = g;
    }
    c
}

/// Logs in with these groups and returns the user's group ids afterwards.
async fn login_with(app: &TestApp, email: &str, groups: Option<Value>) -> (i64, Vec<i64>) {
    let (_, u) = sso_login(app, claims(email, groups)).await;
    let id = u["id"].as_i64().unwrap();
    let ids = group_ids(app, id).await;
    assert_eq!(
        u["group_ids"],
        json!(ids),
        "the response shows the synced groups"
    );
    (id, ids)
}

async fn group_events(app: &TestApp, kind: &str, user_id: i64) -> Vec<Value> {
    app.audit_events(&format!("kind={kind}&user_id={user_id}&limit=100"))
        .await
}

both_backends! {
    async fn mapped_groups_are_added_and_audited(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (id, ids) = login_with(&app, "dev@example.com", Some(json!(["eng"]))).await;
        assert_eq!(ids, vec![1, g.eng]);
        let added = group_events(&app, "group_added", id).await;
        assert_eq!(added.len(), 1);
        assert_eq!(added[0]["outcome"], json!("success"));
        assert_eq!(added[0]["details"]["group_id"], json!(g.eng));
        let (_, ids) = login_with(&app, "dev@example.com", Some(json!(["both"]))).await;
        assert_eq!(ids, vec![1, g.eng, g.ops]);
        let added = group_events(&app, "group_added", id).await;
        assert_eq!(added.len(), 2, "only the new membership is audited");
        assert_eq!(added[0]["details"]["group_id"], json!(g.ops));
        assert!(group_events(&app, "group_removed", id).await.is_empty());
    }

    async fn managed_groups_no_longer_wanted_are_removed_and_audited(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (id, _) = login_with(&app, "mover@example.com", Some(json!(["eng", "ops"]))).await;
        let (_, ids) = login_with(&app, "mover@example.com", Some(json!(["ops"]))).await;
        assert_eq!(ids, vec![1, g.ops]);
        let removed = group_events(&app, "group_removed", id).await;
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0]["outcome"], json!("success"));
        assert_eq!(removed[0]["details"]["group_id"], json!(g.eng));
    }

    async fn unmanaged_groups_and_all_users_are_never_touched(mut app) {
        let g = sync_ready(&mut app, json!({"everyone": [1]})).await;
        let (id, _) = login_with(&app, "keeper@example.com", Some(json!(["eng"]))).await;
        add_to_group(&app, id, g.handmade).await;
        let (_, ids) = login_with(&app, "keeper@example.com", Some(json!([]))).await;
        assert_eq!(ids, vec![1, g.handmade], "All Users (even when mapped) and Hand-made stay");
        let removed = group_events(&app, "group_removed", id).await;
        assert_eq!(removed.len(), 1, "only Engineering: {removed:?}");
    }

    async fn an_empty_array_removes_every_managed_group(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (id, ids) = login_with(&app, "empty@example.com", Some(json!(["both"]))).await;
        assert_eq!(ids, vec![1, g.eng, g.ops]);
        let memberships = app.count("memberships").await;
        let (_, ids) = login_with(&app, "empty@example.com", Some(json!([]))).await;
        assert_eq!(ids, vec![1]);
        assert_eq!(app.count("memberships").await, memberships - 2);
        assert_eq!(group_events(&app, "group_removed", id).await.len(), 2);
    }

    async fn a_missing_groups_claim_changes_nothing(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (id, _) = login_with(&app, "still@example.com", Some(json!(["eng"]))).await;
        add_to_group(&app, id, g.ops).await;
        let memberships = app.count("memberships").await;
        let (_, ids) = login_with(&app, "still@example.com", None).await;
        assert_eq!(ids, vec![1, g.eng, g.ops]);
        assert_eq!(app.count("memberships").await, memberships);
        assert!(group_events(&app, "group_removed", id).await.is_empty());
    }

    async fn a_single_string_counts_as_a_one_element_array(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        login_with(&app, "single@example.com", Some(json!(["eng"]))).await;
        let (_, ids) = login_with(&app, "single@example.com", Some(json!("ops"))).await;
        assert_eq!(ids, vec![1, g.ops]);
        let (_, ids) = login_with(&app, "single@example.com", Some(json!("both"))).await;
        assert_eq!(ids, vec![1, g.eng, g.ops]);
    }

    async fn names_match_exactly_and_non_strings_and_unknown_names_are_ignored(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        login_with(&app, "exact@example.com", Some(json!(["eng"]))).await;
        let (_, ids) = login_with(&app, "exact@example.com", Some(json!(["ENG", "eng ", "Eng", 3, null, {"name": "eng"}, "ops", "nope"]))).await;
        assert_eq!(ids, vec![1, g.ops], "eng is not wanted by any spelling but the exact one");
    }

    async fn sync_off_ignores_the_groups_claim(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let res = app.put_setting("jwt-group-sync", json!(false)).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (id, ids) = login_with(&app, "nosync@example.com", Some(json!(["eng"]))).await;
        assert_eq!(ids, vec![1]);
        add_to_group(&app, id, g.ops).await;
        let (_, ids) = login_with(&app, "nosync@example.com", Some(json!([]))).await;
        assert_eq!(ids, vec![1, g.ops]);
        assert!(group_events(&app, "group_removed", id).await.is_empty());
    }

    async fn a_logins_audit_rows_are_in_order_and_its_answer_is_the_stored_user(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (_, u) = sso_login(&app, claims("order@example.com", Some(json!(["eng"])))).await;
        let id = u["id"].as_i64().unwrap();
        assert!(u["last_login"].is_string(), "last_login in the answer: {u}");
        let stored = app.admin(Method::GET, &format!("/api/user/{id}")).send().await.unwrap();
        let stored = body_json(stored).await;
        for field in ["email", "first_name", "last_name", "last_login", "is_superuser", "login_attributes"] {
            assert_eq!(u[field], stored[field], "{field}: {u} / {stored}");
        }
        let newest = app.audit_events("limit=3").await;
        let kinds: Vec<&str> = newest.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["sso_login", "group_added", "user_created"], "newest first");
        assert_eq!(newest[1]["details"]["group_id"], json!(g.eng));
        assert!(newest.iter().all(|e| e["request_id"] == newest[0]["request_id"] && e["user_id"] == json!(id)));

        let (_, u) = sso_login(&app, claims("order@example.com", Some(json!(["ops"])))).await;
        assert_eq!(u["id"], json!(id));
        let newest = app.audit_events("limit=3").await;
        let kinds: Vec<&str> = newest.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["sso_login", "group_removed", "group_added"], "newest first");
        assert_eq!(newest[1]["details"]["group_id"], json!(g.eng));
        assert_eq!(newest[2]["details"]["group_id"], json!(g.ops));
        assert_eq!(group_ids(&app, id).await, vec![1, g.ops]);
    }

    async fn mapped_administrators_makes_a_superuser_and_removal_takes_it_away(mut app) {
        sync_ready(&mut app, json!({"admins": [2]})).await;
        let (session, u) = sso_login(&app, claims("boss@example.com", Some(json!(["admins"])))).await;
        let id = u["id"].as_i64().unwrap();
        assert_eq!(u["is_superuser"], json!(true));
        assert_eq!(group_ids(&app, id).await, vec![1, 2]);
        let res = app.as_user(&session, Method::GET, "/api/user").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "the new admin can use admin endpoints");
        let added = group_events(&app, "group_added", id).await;
        assert_eq!(added[0]["details"]["group_id"], json!(2));
        // Another admin exists (the password admin), so removal is allowed.
        let (session, u) = sso_login(&app, claims("boss@example.com", Some(json!([])))).await;
        assert_eq!(u["is_superuser"], json!(false));
        assert_eq!(group_ids(&app, id).await, vec![1]);
        let res = app.as_user(&session, Method::GET, "/api/user").send().await.unwrap();
        assert_error(res, 403, "forbidden").await;
        let removed = group_events(&app, "group_removed", id).await;
        assert_eq!((removed[0]["outcome"].clone(), removed[0]["details"]["group_id"].clone()), (json!("success"), json!(2)));
    }

    async fn the_last_active_admin_is_never_removed_and_the_skip_is_audited(mut app) {
        let g = sync_ready(&mut app, json!({"admins": [2]})).await;
        // The only admin signs in through SSO with groups that do not map to Administrators.
        let admin = user_by_email(&app, ADMIN_EMAIL).await;
        let (_, u) = sso_login(&app, claims(ADMIN_EMAIL, Some(json!(["eng"])))).await;
        assert_eq!(u["is_superuser"], json!(true), "still an admin");
        assert_eq!(group_ids(&app, admin.id).await, vec![1, 2, g.eng], "Engineering added, Administrators kept");
        let removed = group_events(&app, "group_removed", admin.id).await;
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0]["outcome"], json!("skipped"));
        assert_eq!(removed[0]["reason"], json!("last_admin_kept"));
        assert_eq!(removed[0]["details"]["group_id"], json!(2));
        let added: Vec<Value> = group_events(&app, "group_added", admin.id).await.iter().map(|e| e["details"]["group_id"].clone()).collect();
        assert_eq!(added, vec![json!(g.eng), json!(2)], "Engineering by this login, Administrators when the account was made");
        // With a second active admin the same login removes the membership.
        app.create_user("deputy@example.com", Some("deputy password"), true).await;
        let (_, u) = sso_login(&app, claims(ADMIN_EMAIL, Some(json!(["eng"])))).await;
        assert_eq!(u["is_superuser"], json!(false));
        assert_eq!(group_ids(&app, admin.id).await, vec![1, g.eng]);
        assert!(!user_by_email(&app, ADMIN_EMAIL).await.is_superuser);
        app.admin_token = Some(app.login("deputy@example.com", "deputy password").await);
        let removed = group_events(&app, "group_removed", admin.id).await;
        assert_eq!((removed[0]["outcome"].clone(), removed[0]["reason"].clone()), (json!("success"), json!(null)));
    }

    async fn every_change_of_one_login_is_audited_with_its_request_id(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (id, _) = login_with(&app, "trail@example.com", Some(json!(["both"]))).await;
        let res = app.sso_callback(&sign(claims("trail@example.com", Some(json!(["ops", "x"])))), None).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let request_id = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
        let events = app.audit_events(&format!("user_id={id}&limit=100")).await;
        let of_request: Vec<&Value> = events.iter().filter(|e| e["request_id"] == json!(request_id)).collect();
        let kinds: Vec<(String, String)> = of_request.iter().map(|e| (e["kind"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned())).collect();
        assert!(kinds.contains(&("sso_login".to_owned(), "success".to_owned())), "{kinds:?}");
        let removed: Vec<&&Value> = of_request.iter().filter(|e| e["kind"] == json!("group_removed")).collect();
        assert_eq!(removed.len(), 1, "{kinds:?}");
        assert_eq!(removed[0]["details"]["group_id"], json!(g.eng));
        assert!(!kinds.iter().any(|(k, _)| k == "group_added"), "ops was already there");
    }

    async fn a_login_with_a_dozen_group_changes_audits_each_of_them(mut app) {
        sync_ready(&mut app, json!({})).await;
        let mut mappings = serde_json::Map::new();
        let mut ids = vec![1];
        for i in 0..12 {
            let id = create_group(&app, &format!("Team {i}")).await;
            mappings.insert(format!("team-{i}"), json!([id]));
            ids.push(id);
        }
        let names: Vec<String> = mappings.keys().cloned().collect();
        let res = app.put_settings(json!({"jwt-group-mappings": mappings})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        // Fourteen audit rows in one login (user_created, twelve group_added, sso_login), then
        // thirteen (twelve group_removed, sso_login).
        for (groups, kind, want_ids) in [(json!(names), "group_added", ids.clone()), (json!([]), "group_removed", vec![1])] {
            let res = app.sso_callback(&sign(claims("dozen@example.com", Some(groups))), None).await;
            assert_eq!(res.status(), StatusCode::FOUND);
            let request_id = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
            let events = app.audit_events("limit=100").await;
            let of_request: Vec<&Value> = events.iter().filter(|e| e["request_id"] == json!(request_id)).collect();
            let changed: Vec<i64> = of_request.iter().filter(|e| e["kind"] == json!(kind)).map(|e| e["details"]["group_id"].as_i64().unwrap()).collect();
            assert_eq!(changed.len(), 12, "{kind}: {of_request:?}");
            assert!(ids[1..].iter().all(|id| changed.contains(id)), "{kind}: {changed:?}");
            assert_eq!(of_request.iter().filter(|e| e["kind"] == json!("sso_login")).count(), 1);
            let user_id = of_request[0]["user_id"].as_i64().unwrap();
            assert_eq!(group_ids(&app, user_id).await, want_ids);
        }
    }

    async fn a_login_that_changes_thousands_of_groups_writes_every_audit_row(mut app) {
        sync_ready(&mut app, json!({})).await;
        // More audit rows than one statement may have parameters for (SQLite 32,766 at 5 a
        // row, PostgreSQL 65,535 at 10), written 1,000 to a statement.
        const N: i64 = 7000;
        let sql = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {N}) INSERT INTO groups (name) SELECT 'bulk ' || i FROM n");
        assert_eq!(app.execute(&sql).await, N as u64);
        let ids = app.ids("SELECT id FROM groups WHERE name LIKE 'bulk %' ORDER BY id").await;
        let res = app.put_settings(json!({"jwt-group-mappings": {"many": ids}})).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        let (user_id, groups) = login_with(&app, "many@example.com", Some(json!(["many"]))).await;
        assert_eq!(groups.len() as i64, N + 1, "All Users and every mapped group");
        let (_, groups) = login_with(&app, "many@example.com", Some(json!([]))).await;
        assert_eq!(groups, [1]);
        // Every row is listed for the user, newest first, a page at a time (on SQLite through
        // the chain of the user's events, which spans the statements).
        let mut listed = Vec::new();
        let mut query = format!("user_id={user_id}&limit=500");
        loop {
            let page = app.audit_events(&query).await;
            let Some(last) = page.last() else { break };
            query = format!("user_id={user_id}&limit=500&before={}", last["id"]);
            listed.extend(page);
        }
        let kinds = |kind: &str| listed.iter().filter(|e| e["kind"] == json!(kind)).count() as i64;
        assert_eq!((kinds("user_created"), kinds("group_added"), kinds("group_removed"), kinds("sso_login")), (1, N, N, 2));
        assert_eq!(listed.len() as i64, 2 * N + 3);
        assert!(listed.windows(2).all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()), "newest first, no repeats");
        // And through the chain of each kind.
        let added = app.audit_events(&format!("kind=group_added&user_id={user_id}&limit=500")).await;
        assert_eq!(added.len(), 500);
    }

    async fn a_refused_login_syncs_nothing(mut app) {
        let g = sync_ready(&mut app, json!({})).await;
        let (id, _) = login_with(&app, "fail@example.com", Some(json!(["both"]))).await;
        let mut c = claims("fail@example.com", Some(json!([])));
        c["big"] = json!("x".repeat(2000));
        expect_refused(&app, &sign(c), 401, "claims_too_large", "too large with groups []").await;
        assert_eq!(group_ids(&app, id).await, vec![1, g.eng, g.ops]);
        assert!(group_events(&app, "group_removed", id).await.is_empty());
    }

    async fn two_admins_dropped_at_the_same_moment_leave_one_admin(mut app) {
        sync_ready(&mut app, json!({"admins": [2]})).await;
        app.create_user("second@example.com", None, true).await;
        let (a, b) = (sign(claims(ADMIN_EMAIL, Some(json!(["eng"])))), sign(claims("second@example.com", Some(json!(["eng"])))));
        let (ra, rb) = tokio::join!(sso_json(&app, &a), sso_json(&app, &b));
        assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
        let first = user_by_email(&app, ADMIN_EMAIL).await;
        let second = user_by_email(&app, "second@example.com").await;
        assert!(first.is_superuser ^ second.is_superuser, "exactly one admin is left");
        let kept = if first.is_superuser { &first } else { &second };
        assert!(group_ids(&app, kept.id).await.contains(&2), "membership in step with the flag");
        let gone = if first.is_superuser { &second } else { &first };
        assert!(!group_ids(&app, gone.id).await.contains(&2));
    }
}

/// An id in `LATCHKEY_JWT_GROUP_MAPPINGS` that names no group is skipped at login (README,
/// `jwt-group-mappings`; only the API, the UI and the CLI refuse such ids): the login goes
/// through, the groups that exist are synced and audited, and nothing is written for the
/// missing one, when it is wanted or when it is managed and not wanted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_mapping_to_a_missing_group_is_skipped_at_login() {
    let env = std::collections::HashMap::from([(
        "LATCHKEY_JWT_GROUP_MAPPINGS".to_owned(),
        r#"{"eng":[3,99]}"#.to_owned(),
    )]);
    let Some(mut app) = spawn_app_with_env(Backend::Sqlite, env).await else {
        return;
    };
    sso_ready(&mut app).await;
    let eng = create_group(&app, "Engineering").await;
    assert_eq!(eng, 3, "the mapping names the first group created");
    let res = app.put_settings(json!({"jwt-group-sync": true})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let changed = |events: Vec<Value>| -> Vec<i64> {
        events
            .iter()
            .map(|e| e["details"]["group_id"].as_i64().unwrap())
            .collect()
    };
    let (id, ids) = login_with(&app, "env@example.com", Some(json!(["eng"]))).await;
    assert_eq!(ids, vec![1, eng]);
    assert_eq!(
        changed(group_events(&app, "group_added", id).await),
        vec![eng]
    );
    let (_, ids) = login_with(&app, "env@example.com", Some(json!([]))).await;
    assert_eq!(ids, vec![1]);
    assert_eq!(
        changed(group_events(&app, "group_removed", id).await),
        vec![eng]
    );
    assert_eq!(
        app.count("memberships").await,
        3,
        "the admin's All Users and Administrators, and env@'s All Users"
    );
    // The first login wrote one event fewer than its groups to add promised (SQLite counts
    // them before the user's row is written): the user's list still has every event.
    let kinds: Vec<Value> = app
        .audit_events(&format!("user_id={id}"))
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "sso_login",
            "group_removed",
            "sso_login",
            "group_added",
            "user_created"
        ]
    );
}
