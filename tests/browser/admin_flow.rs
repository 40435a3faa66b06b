//! The whole story in a real browser: first-run setup, admin sign-in, JWT configured
//! through the form (generated key, two group mappings), SSO sign-in through the example
//! identity provider, the lock-out guard, and password sign-in switched off.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::harness::Browser;
use crate::helpers::*;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_to_sso_only_sign_in() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let mut app = app().await;
    let outcome = tokio::time::timeout(Duration::from_secs(300), scenario(&b, &mut app)).await;
    b.quit().await;
    outcome.expect("the scenario finishes within 5 minutes");
}

async fn scenario(b: &Browser, app: &mut TestApp) {
    // --- first-run setup: the one-time link creates the first admin and signs them in ---
    let token = "f".repeat(64);
    app.store
        .insert_setup_token(&latchkey::auth::session::hash_token(&token), now())
        .await
        .unwrap();
    b.goto(&app.url(&format!("/setup?token={token}"))).await;
    b.wait_text("h1", "Welcome to Latchkey").await;
    b.screenshot("setup", 1280, 900).await;
    b.fill("#email", ADMIN_EMAIL).await;
    b.fill("#first_name", "Ada").await;
    b.fill("#last_name", "Admin").await;
    b.fill("#password", ADMIN_PASSWORD).await;
    b.click("#setup-form button[type=submit]").await;
    b.wait_path("/").await;
    assert_eq!(b.text("#profile-email").await, ADMIN_EMAIL);
    b.wait_text("#profile-groups", "Administrators").await;
    // The setup link is spent.
    b.goto(&app.url(&format!("/setup?token={token}"))).await;
    b.wait_text("h1", "Setup is done").await;
    app.admin_token = Some(app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await);

    // --- signed out, an admin page sends you to sign in and back again ---
    b.goto(&app.url("/")).await;
    sign_out(b).await;
    b.goto(&app.url("/admin/settings/authentication")).await;
    let at = b.wait_path("/auth/login").await;
    assert_eq!(
        at.query(),
        Some("redirect=%2Fadmin%2Fsettings%2Fauthentication")
    );
    assert!(
        !b.exists("#sso-button").await,
        "no SSO button before SSO is configured"
    );
    b.fill("#username", ADMIN_EMAIL).await;
    b.fill("#password", "not the password").await;
    b.click("#password-form button[type=submit]").await;
    b.wait_text("#login-error", "do not match").await;
    assert_eq!(b.value("#username").await, ADMIN_EMAIL, "the email is kept");
    b.fill("#password", ADMIN_PASSWORD).await;
    b.click("#password-form button[type=submit]").await;
    b.wait_path("/admin/settings/authentication").await;
    b.wait_text("#jwt-status", "Off").await;
    b.wait_text("#password-always-on", "stays on").await;

    // --- two groups to map to ---
    b.click("a[href='/admin/people/groups']").await;
    for name in ["Engineering", "Operations"] {
        b.fill("#group-name", name).await;
        b.click("#create-group").await;
        b.wait_text("#flash", &format!("The group {name} was created"))
            .await;
    }
    b.wait_text("#groups-table", "Operations").await;
    let groups = body_json(
        app.admin(Method::GET, "/api/permissions/group")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let id_of = |name: &str| {
        groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == json!(name))
            .unwrap()["id"]
            .as_i64()
            .unwrap()
    };
    let (eng, ops) = (id_of("Engineering"), id_of("Operations"));

    // --- the JWT form ---
    let (idp_listener, idp_base) = idp_listener().await;
    b.goto(&app.url("/admin/settings/authentication")).await;
    b.click("#configure-jwt").await;
    b.wait_path("/admin/settings/authentication/jwt").await;
    b.wait_text("#jwt-state", "JWT SSO is off").await;
    // Defaults show as placeholders.
    let email_claim = b.find("#f-jwt-attribute-email").await;
    assert_eq!(
        email_claim.attr("placeholder").await.unwrap().as_deref(),
        Some("email")
    );
    assert_eq!(b.value("#f-jwt-attribute-email").await, "");

    // A bad value: the API refuses, the error shows at the field, nothing is saved.
    b.click("#f-jwt-enabled").await;
    b.fill("#f-jwt-identity-provider-uri", "ftp://idp.example/login")
        .await;
    b.click("#save").await;
    b.wait_text("#err-jwt-identity-provider-uri", "http(s)")
        .await;
    b.wait_text("#jwt-form-notice", "Nothing was saved").await;
    let invalid = b.find("#f-jwt-identity-provider-uri").await;
    assert_eq!(
        invalid.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(
        setting(app, "jwt-enabled").await,
        json!(false),
        "all or nothing"
    );

    b.fill("#f-jwt-identity-provider-uri", &format!("{idp_base}/login"))
        .await;
    b.wait_text("#generate-key", "Generate key").await;
    b.click("#generate-key").await;
    b.wait_text("#key-notice", "New key generated").await;
    let secret = b.value("#jwt-key").await;
    assert_eq!(secret.len(), 64, "32 random bytes as hex: {secret}");
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));

    // The mappings dialog, driven by keyboard where a person would use it.
    b.click("#edit-mappings").await;
    b.find("#mappings-dialog[open]").await;
    assert_eq!(
        b.focused_id().await,
        "new-mapping-name",
        "focus starts in the dialog"
    );
    b.press("eng").await;
    b.press(thirtyfour::Key::Enter).await;
    b.find("section[data-mapping-name='eng']").await;
    assert_eq!(
        b.focused_id().await,
        "mapping-select-0",
        "focus moves to the new mapping"
    );
    b.select_by_text("select[data-mapping='eng']", "Engineering")
        .await;
    b.click("button[data-mapping='eng']").await;
    b.wait_text("section[data-mapping-name='eng'] .chips", "Engineering")
        .await;

    b.fill("#new-mapping-name", "ops").await;
    b.click("#add-mapping").await;
    for group in ["Engineering", "Operations", "Administrators"] {
        b.select_by_text("select[data-mapping='ops']", group).await;
        b.click("button[data-mapping='ops']").await;
        b.wait_text("section[data-mapping-name='ops'] .chips", group)
            .await;
    }
    // Remove one group from a mapping, and a whole mapping.
    b.click("button[aria-label='Remove Administrators from ops']")
        .await;
    // A group name that is special to JavaScript objects is a name like any other.
    b.fill("#new-mapping-name", "__proto__").await;
    b.click("#add-mapping").await;
    b.find("section[data-mapping-name='__proto__']").await;
    // A mapping without groups cannot be kept.
    b.click("#mappings-done").await;
    b.wait_text(
        "#mappings-dialog-error",
        "Choose at least one group for __proto__",
    )
    .await;
    b.click("button[aria-label='Remove mapping __proto__']")
        .await;
    b.wait_gone("section[data-mapping-name='__proto__']").await;
    let ops_chips = b.text("section[data-mapping-name='ops'] .chips").await;
    assert!(
        ops_chips.contains("Operations") && !ops_chips.contains("Administrators"),
        "{ops_chips}"
    );
    b.screenshot("jwt-mappings", 1280, 960).await;
    b.click("#mappings-done").await;
    b.wait_gone("#mappings-dialog").await;
    assert_eq!(
        b.focused_id().await,
        "edit-mappings",
        "focus returns to the opener"
    );
    b.wait_text("#mappings-summary", "eng → Engineering").await;
    b.wait_text("#mappings-summary", "ops → Engineering, Operations")
        .await;
    b.wait_text("#mappings-summary", "press Save").await;

    // Escape closes the dialog and keeps the mappings as they were.
    b.click("#edit-mappings").await;
    b.find("#mappings-dialog[open]").await;
    b.press(thirtyfour::Key::Escape).await;
    b.wait_gone("#mappings-dialog").await;

    b.click("#f-jwt-group-sync").await;
    b.click("#save").await;
    b.wait_text("#flash", "Saved.").await;
    b.wait_text("#jwt-state", "JWT SSO is active").await;
    assert_eq!(setting(app, "jwt-enabled").await, json!(true));
    assert_eq!(setting(app, "jwt-group-sync").await, json!(true));
    assert_eq!(
        setting(app, "jwt-identity-provider-uri").await,
        json!(format!("{idp_base}/login"))
    );
    assert_eq!(
        setting(app, "jwt-group-mappings").await,
        json!({"eng": [eng], "ops": [eng, ops]})
    );
    assert_eq!(
        setting(app, "jwt-shared-secret").await,
        json!(format!("**********{}", &secret[60..]))
    );
    b.wait_text("#generate-key", "Regenerate key").await;
    b.wait_text("#mappings-summary", "ops → Engineering, Operations")
        .await;
    b.screenshot("jwt-mobile", 375, 2400).await;

    // Regenerating asks first; cancelling keeps the saved key.
    b.click("#generate-key").await;
    b.wait_text("#confirm-dialog", "stop working").await;
    b.click("#confirm-cancel").await;
    b.wait_gone("#confirm-dialog").await;
    assert_eq!(
        b.value("#jwt-key").await,
        "",
        "no new key without confirmation"
    );

    // --- the dry run, on a good and a bad token ---
    let good = sign_with(
        json!({"email": "Ada@Example.com", "first_name": "Ada", "groups": ["eng"], "team": "core",
               "iat": now(), "jti": "dry-run-1"}),
        &secret,
    );
    b.fill("#test-token", &good).await;
    b.click("#run-test").await;
    b.wait_text("#test-verdict", "would sign in").await;
    b.wait_text("#test-verdict", "ada@example.com").await;
    b.wait_text("#test-user", "would be created").await;
    b.wait_text("#test-groups-add", "Engineering").await;
    b.wait_text("#test-attributes", "team").await;
    b.find("#test-checks li[data-check='signature'][data-ok='true']")
        .await;
    b.screenshot_element("dry-run", "#test-panel", 1100).await;
    let bad = sign_with(
        json!({"email": "ada@example.com", "iat": now()}),
        &"x".repeat(64),
    );
    b.fill("#test-token", &bad).await;
    b.click("#run-test").await;
    b.wait_text("#test-verdict", "would be refused").await;
    b.wait_text("#test-verdict", "bad_signature").await;
    b.find("#test-checks li[data-check='signature'][data-ok='false']")
        .await;
    assert_eq!(app.count("users").await, 1, "the dry run writes nothing");

    // --- SSO through the example identity provider ---
    start_idp(idp_listener, &secret, &app.base);
    sign_out(b).await;
    b.goto(&app.url("/auth/login?redirect=%2F%3Ffrom%3Dsso"))
        .await;
    b.find("#sso-button").await;
    b.find("#password-form").await;
    b.screenshot("login", 1280, 700).await;
    b.screenshot("login-mobile", 375, 700).await;
    b.click("#sso-button").await;
    let at_idp = b.wait_path("/login").await;
    assert!(at_idp.as_str().starts_with(&idp_base), "{at_idp}");
    assert_eq!(at_idp.query(), Some("return_to=%2F%3Ffrom%3Dsso"));
    idp_sign_in(b, "ada@example.com", "Ada", "Lovelace", "eng, ops").await;
    b.wait_path("/?from=sso").await;
    b.wait_text("h1", "Hello, Ada Lovelace").await;
    assert_eq!(b.text("#profile-email").await, "ada@example.com");
    let groups = b.text("#profile-groups").await;
    for g in ["All Users", "Engineering", "Operations"] {
        assert!(groups.contains(g), "{g} in {groups}");
    }
    b.wait_text("main", "through single sign-on").await;
    b.screenshot("home", 1280, 760).await;
    let users = body_json(
        app.admin(Method::GET, "/api/user?query=ada@example.com")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(users["total"], json!(1));
    assert_eq!(users["data"][0]["sso_source"], json!("jwt"));

    // --- the lock-out guard: no admin has signed in through SSO yet ---
    sign_out(b).await;
    sign_in(
        b,
        app,
        ADMIN_EMAIL,
        ADMIN_PASSWORD,
        "/admin/settings/authentication",
    )
    .await;
    b.wait_text(
        "#sso-admin-hint",
        "No administrator has signed in through SSO",
    )
    .await;
    let toggle = b.find("#password-toggle").await;
    assert!(toggle.is_selected().await.unwrap());
    b.click("#password-toggle").await;
    b.wait_text("#confirm-dialog", "Turn off password sign-in?")
        .await;
    b.click("#confirm-ok").await;
    b.wait_text("#password-notice", "Password sign-in is still on")
        .await;
    b.wait_text("#password-notice", "Sign in once through SSO")
        .await;
    b.wait_text("#password-notice", "What to do").await;
    assert!(
        b.find("#password-toggle")
            .await
            .is_selected()
            .await
            .unwrap(),
        "the switch goes back"
    );
    assert_eq!(setting(app, "enable-password-login").await, json!(true));
    let refused = app
        .audit_events("kind=setting_changed&outcome=failure")
        .await;
    assert_eq!(refused[0]["reason"], json!("lockout_risk"));
    b.screenshot("lockout-guard", 1280, 900).await;

    // --- the admin signs in once through SSO, then password sign-in can go ---
    sign_out(b).await;
    b.click("#sso-button").await;
    b.wait_path("/login").await;
    idp_sign_in(b, ADMIN_EMAIL, "Ada", "Admin", "").await;
    b.wait_path("/").await;
    b.wait_text("main", "through single sign-on").await;
    b.click("a[href='/admin/settings/authentication']").await;
    b.wait_path("/admin/settings/authentication").await;
    assert!(!b.exists("#sso-admin-hint").await);
    b.click("#password-toggle").await;
    b.click("#confirm-ok").await;
    b.wait_text("#flash", "Password sign-in is off").await;
    b.wait_text("#password-status", "Off").await;
    assert_eq!(setting(app, "enable-password-login").await, json!(false));
    let props = body_json(
        app.client
            .get(app.url("/api/session/properties"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(props["password_login_enabled"], json!(false));

    // --- the sign-in page now offers only SSO ---
    sign_out(b).await;
    b.find("#sso-button").await;
    assert!(!b.exists("#password-form").await, "no password form");
    b.wait_text("#password-off-note", "Password sign-in is turned off")
        .await;
}
