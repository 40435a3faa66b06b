//! Error pages in a real browser: a human sentence, what to do next, "Try again" and the
//! request id — never raw JSON.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::Browser;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_html_error_pages_with_the_request_id() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let mut app = app().await;
    let outcome = tokio::time::timeout(Duration::from_secs(120), async {
        app.login_admin().await;
        app.configure_jwt().await;

        // A garbage token at the SSO callback.
        b.goto(&app.url("/auth/sso?jwt=garbage")).await;
        b.wait_text("h1", "Sign-in failed").await;
        b.wait_text("#error-message", "not a well-formed signed JWT")
            .await;
        assert_eq!(b.text("#error-code").await, "token_malformed");
        let request_id = b.text("#request-id").await;
        assert_eq!(request_id.len(), 36, "a uuid: {request_id}");
        let body = b.text("body").await;
        assert!(!body.contains("\"error\""), "no JSON in the page: {body}");
        // The id on the page finds the event in the audit log.
        let events = app.audit_events("kind=sso_login&outcome=failure").await;
        assert_eq!(events[0]["reason"], json!("token_malformed"));
        assert_eq!(events[0]["request_id"], json!(request_id));
        b.screenshot("error-page", 1280, 800).await;
        b.click("#try-again").await;
        b.wait_path("/auth/login").await;
        b.find("#sso-button").await;

        // A page that does not exist.
        b.goto(&app.url("/admin/nothing-here")).await;
        b.wait_text("h1", "Page not found").await;
        assert_eq!(b.text("#error-code").await, "not_found");

        // A signed-in member who is not an administrator.
        app.create_user("member@example.com", Some("member password"), false)
            .await;
        sign_in(&b, &app, "member@example.com", "member password", "/").await;
        b.goto(&app.url("/admin/people")).await;
        b.wait_text("h1", "You don't have access to this page")
            .await;
        assert_eq!(b.text("#error-code").await, "forbidden");
        assert!(!b.exists("#people-table").await);
        // The home page has no admin link for members.
        b.goto(&app.url("/")).await;
        b.wait_text("#profile-email", "member@example.com").await;
        assert!(!b.exists("a[href='/admin/settings/authentication']").await);
        let res = app
            .admin(Method::GET, "/api/user/current")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    })
    .await;
    b.quit().await;
    outcome.expect("finishes within 2 minutes");
}
