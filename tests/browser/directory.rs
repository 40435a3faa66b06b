//! People, groups and the audit log in a real browser.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::Browser;
use crate::helpers::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_groups_and_audit_work_end_to_end() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let mut app = app().await;
    let outcome = tokio::time::timeout(Duration::from_secs(240), scenario(&b, &mut app)).await;
    b.quit().await;
    outcome.expect("finishes within 4 minutes");
}

async fn scenario(b: &Browser, app: &mut TestApp) {
    app.login_admin().await;
    app.configure_jwt().await;
    let res = app.put_settings(json!({"jwt-group-sync": true})).await;
    assert_eq!(res.status(), 204);
    // Some history: SSO sign-ins (one refused), and enough people for two pages.
    for (i, name) in ["Alan Turing", "Barbara Liskov", "Edsger Dijkstra"]
        .iter()
        .enumerate()
    {
        let (first, last) = name.split_once(' ').unwrap();
        let mut claims = login_claims(&format!("{}@example.com", first.to_lowercase()));
        claims["first_name"] = json!(first);
        claims["last_name"] = json!(last);
        claims["department"] = json!(["Research", "Ops", "Theory"][i]);
        let res = app.sso_callback(&sign(claims), None).await;
        assert_eq!(res.status(), 302);
    }
    let res = app.sso_callback("not-a-token", None).await;
    assert_eq!(res.status(), 401);
    for i in 0..26 {
        app.create_user(&format!("person{i:02}@example.com"), None, false)
            .await;
    }

    // --- people: search and paging ---
    sign_in(b, app, ADMIN_EMAIL, ADMIN_PASSWORD, "/admin/people").await;
    b.wait_text("#people-count", "Showing 1–25 of 30 people")
        .await;
    b.click("#next-page").await;
    b.wait_path("/admin/people?page=2").await;
    b.wait_text("#people-count", "Showing 26–30 of 30 people")
        .await;
    b.fill("#q", "liskov").await;
    b.click("#people-search button[type=submit]").await;
    b.wait_path("/admin/people?q=liskov").await;
    b.wait_text("#people-count", "1 person").await;
    b.wait_text("#people-table", "barbara@example.com").await;
    b.wait_text("#people-table", "SSO").await;

    // --- add a person: an invalid email is shown at the field, then a good one ---
    b.goto(&app.url("/admin/people")).await;
    b.click("#add-person").await;
    b.find("#create-dialog[open]").await;
    assert_eq!(b.focused_id().await, "new-email");
    b.fill("#new-email", "not an email").await;
    b.click("#create-submit").await;
    b.wait_text("#err-new-email", "valid email").await;
    b.fill("#new-email", "grace@example.com").await;
    b.fill("#new-first", "Grace").await;
    b.fill("#new-last", "Hopper").await;
    b.fill("#new-password", "cobol forever").await;
    b.click("#create-submit").await;
    b.wait_text("#flash", "grace@example.com was added").await;
    // The list shows the new person (it is in the order people were added).
    b.wait_path("/admin/people?q=grace%40example.com").await;
    b.wait_text("#people-table", "grace@example.com").await;
    let found = body_json(
        app.admin(Method::GET, "/api/user?query=grace")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(found["total"], json!(1));
    let grace = found["data"][0]["id"].as_i64().unwrap();
    assert_eq!(found["data"][0]["has_password"], json!(true));
    let grace_session = app.login("grace@example.com", "cobol forever").await;

    // --- manage Grace: details, password, sessions, deactivate, reactivate ---
    b.goto(&app.url("/admin/people?q=grace")).await;
    b.click(&format!("button.manage-user[data-user-id='{grace}']"))
        .await;
    b.find("#user-dialog[open]").await;
    b.wait_text("#user-source", "email and password").await;
    b.fill("#edit-last", "Hopper (Rear Admiral)").await;
    b.click("#save-user").await;
    b.wait_text("#user-notice", "Details saved").await;
    b.fill("#set-password", "short").await;
    b.click("#set-password-button").await;
    b.wait_text("#err-password", "8").await;
    b.fill("#set-password", "a much longer password").await;
    b.click("#set-password-button").await;
    b.wait_text("#user-notice", "password of grace@example.com is set")
        .await;
    b.click("#revoke-sessions").await;
    b.wait_text("#confirm-dialog", "Sign grace@example.com out everywhere?")
        .await;
    b.click("#confirm-ok").await;
    b.wait_text("#user-notice", "Ended 1 session").await;
    let res = app
        .as_user(&grace_session, Method::GET, "/api/user/current")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "her session ended");
    b.click("#deactivate-user").await;
    b.click("#confirm-ok").await;
    b.wait_text("#user-notice", "is deactivated").await;
    b.wait_text("#user-status", "Deactivated").await;
    let user = body_json(
        app.admin(Method::GET, &format!("/api/user/{grace}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(user["is_active"], json!(false));
    assert_eq!(user["last_name"], json!("Hopper (Rear Admiral)"));
    b.click("#user-dialog .close-dialog").await;
    b.wait_text("#flash", "Changes saved").await;
    b.wait_text("#people-count", "No one to show").await;
    b.click("#inactive").await;
    b.click("#people-search button[type=submit]").await;
    b.wait_text("#people-table", "Deactivated").await;
    b.click(&format!("button.manage-user[data-user-id='{grace}']"))
        .await;
    b.click("#reactivate-user").await;
    b.wait_text("#user-notice", "active again").await;
    b.press(thirtyfour::Key::Escape).await;
    b.wait_text("#flash", "Changes saved").await;
    app.login("grace@example.com", "a much longer password")
        .await;

    // The login attributes and SSO source of an SSO user.
    b.goto(&app.url("/admin/people?q=alan")).await;
    b.click("button.manage-user").await;
    b.wait_text("#user-attributes", "department").await;
    b.wait_text("#user-attributes", "Research").await;
    b.wait_text("#user-source", "JWT single sign-on").await;
    b.press(thirtyfour::Key::Escape).await;
    b.wait_gone("#user-dialog").await;
    b.goto(&app.url("/admin/people")).await;
    b.screenshot("people", 1280, 1000).await;
    b.screenshot("people-mobile", 375, 1400).await;

    // --- groups: create, add and remove members, rename, delete ---
    b.goto(&app.url("/admin/people/groups")).await;
    b.fill("#group-name", "Compilers").await;
    b.click("#create-group").await;
    b.wait_text("#flash", "Compilers was created").await;
    b.click("#groups-table a:not([href$='/1']):not([href$='/2'])")
        .await;
    b.wait_text("#group-heading", "Compilers").await;
    b.find("#no-members").await;
    b.fill("#member-query", "grace").await;
    b.click("#member-search").await;
    b.click("button[aria-label='Add grace@example.com to Compilers']")
        .await;
    b.wait_text("#flash", "grace@example.com was added to Compilers")
        .await;
    b.wait_text("#members-table", "grace@example.com").await;
    b.screenshot("group", 1280, 900).await;
    let me = body_json(
        app.as_user(
            &app.login("grace@example.com", "a much longer password")
                .await,
            Method::GET,
            "/api/user/current",
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert!(me["groups"].to_string().contains("Compilers"));
    b.click("button[aria-label='Remove grace@example.com from Compilers']")
        .await;
    b.click("#confirm-ok").await;
    b.wait_text("#flash", "was removed from Compilers").await;
    b.find("#no-members").await;
    b.fill("#rename-name", "Compiler team").await;
    b.click("#rename-group").await;
    b.wait_text("#flash", "Renamed to Compiler team").await;
    b.wait_text("#group-heading", "Compiler team").await;
    b.click("#delete-group").await;
    b.wait_text("#confirm-dialog", "Delete Compiler team?")
        .await;
    b.click("#confirm-ok").await;
    b.wait_path("/admin/people/groups").await;
    b.wait_text("#flash", "Compiler team was deleted").await;
    assert!(!b.text("#groups-table").await.contains("Compiler team"));
    // The last administrator cannot be removed from Administrators.
    b.goto(&app.url("/admin/people/groups/2")).await;
    b.click(&format!(
        "button[aria-label='Remove {ADMIN_EMAIL} from Administrators']"
    ))
    .await;
    b.click("#confirm-ok").await;
    b.wait_text("#flash", "Nothing was changed").await;

    // --- audit log: filters and paging ---
    b.goto(&app.url("/admin/audit")).await;
    b.wait_text("#audit-table", "SSO sign-in").await;
    b.screenshot("audit", 1280, 1100).await;
    b.select_by_text("#kind", "SSO sign-in").await;
    b.select_by_text("#outcome", "Failure").await;
    b.click("#audit-filters button[type=submit]").await;
    b.wait_path("/admin/audit?kind=sso_login&outcome=failure&user=")
        .await;
    let rows = b
        .driver
        .find_all(thirtyfour::By::Css("#audit-table tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one refused SSO sign-in");
    b.wait_text("#audit-table", "token_malformed").await;
    // By person.
    b.goto(&app.url("/admin/audit?user=grace%40example.com"))
        .await;
    b.wait_text("#audit-table", "Person changed").await;
    for kind in [
        "user_created",
        "user_updated",
        "session_revoked",
        "group_added",
        "group_removed",
    ] {
        assert!(
            b.exists(&format!("#audit-table tr[data-kind='{kind}']"))
                .await,
            "{kind} for grace"
        );
    }
    // Paging: 50 a page, "Older events" continues exactly where the page ended.
    b.goto(&app.url("/admin/audit")).await;
    let first = audit_ids(b).await;
    assert_eq!(first.len(), 50);
    b.click("#older").await;
    let url = b.url().await;
    assert_eq!(url.query(), Some(format!("before={}", first[49]).as_str()));
    let second = audit_ids(b).await;
    let total = app.count("audit_events").await as usize;
    assert_eq!(first.len() + second.len(), total.min(100));
    assert!(second.iter().all(|id| *id < first[49]), "older, no overlap");
    assert!(first.windows(2).all(|w| w[0] > w[1]), "newest first");
}

async fn audit_ids(b: &Browser) -> Vec<i64> {
    let mut ids = Vec::new();
    for row in b
        .driver
        .find_all(thirtyfour::By::Css("#audit-table tbody tr"))
        .await
        .unwrap()
    {
        ids.push(row.attr("data-id").await.unwrap().unwrap().parse().unwrap());
    }
    ids
}
