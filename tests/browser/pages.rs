//! HTTP-level checks of the pages (no browser needed): headers, redirects, access rules,
//! assets, the error page and the login form's round trip.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::app;
use crate::support::*;

const HTML: &str = "text/html,application/xhtml+xml";

async fn get_html(app: &TestApp, path: &str, session: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url(path)).header("accept", HTML);
    if let Some(token) = session {
        req = req.header("cookie", format!("latchkey.session={token}"));
    }
    req.send().await.expect("page")
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The asset version the pages link to.
fn asset_version(html: &str) -> String {
    let start = html.find("/assets/").expect("an asset link") + "/assets/".len();
    html[start..].split('/').next().unwrap().to_owned()
}

#[tokio::test]
async fn every_page_carries_the_security_headers_and_no_inline_script() {
    let mut app = app().await;
    app.login_admin().await;
    let admin = app.admin_token.clone().unwrap();
    for path in [
        "/auth/login",
        "/setup",
        "/",
        "/admin/settings/authentication",
        "/admin/settings/authentication/jwt",
        "/admin/people",
        "/admin/people/groups",
        "/admin/people/groups/1",
        "/admin/audit",
        "/auth/sso?jwt=garbage",
        "/no/such/page",
    ] {
        let res = get_html(&app, path, Some(&admin)).await;
        let csp = header(&res, "content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&res, "x-frame-options"), "DENY", "{path}");
        assert!(!header(&res, "referrer-policy").is_empty(), "{path}");
        assert_eq!(header(&res, "cache-control"), "no-store", "{path}");
        assert!(
            header(&res, "content-type").starts_with("text/html"),
            "{path}"
        );
        let html = res.text().await.unwrap();
        // CSP forbids inline script and style attributes: the pages must not need them.
        for (i, _) in html.match_indices("<script") {
            let tag = &html[i..i + html[i..].find('>').unwrap()];
            assert!(
                tag.contains(" src=\"/assets/") || tag.contains("type=\"application/json\""),
                "{path}: inline script {tag}"
            );
        }
        assert!(!html.contains(" style="), "{path}: a style attribute");
        assert!(!html.contains("<style"), "{path}: an inline stylesheet");
        assert!(!html.contains(" onclick="), "{path}: an inline handler");
    }
}

#[tokio::test]
async fn samesite_none_lets_allowed_origins_frame_the_sign_in_pages_and_nothing_else() {
    let mut app = app().await;
    app.login_admin().await;
    let res = app
        .put_settings(json!({"session-cookie-samesite": "None",
            "redirect-allowed-origins": ["https://app.example"]}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = get_html(&app, "/auth/login", None).await;
    let csp = header(&res, "content-security-policy");
    assert!(
        csp.contains("frame-ancestors 'self' https://app.example"),
        "{csp}"
    );
    assert!(res.headers().get("x-frame-options").is_none());
    let admin = app.admin_token.clone().unwrap();
    let res = get_html(&app, "/", Some(&admin)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(&res, "content-security-policy")
            .contains("frame-ancestors 'self' https://app.example")
    );
    // Admin pages, the setup page and the API docs never.
    for (path, session) in [
        ("/admin/people", Some(&admin)),
        ("/setup?token=x", None),
        ("/api/docs/", None),
    ] {
        let res = get_html(&app, path, session.map(String::as_str)).await;
        assert!(
            header(&res, "content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(header(&res, "x-frame-options"), "DENY", "{path}");
    }
}

#[tokio::test]
async fn assets_are_served_with_their_types_and_cache_rules() {
    let app = app().await;
    let html = get_html(&app, "/auth/login", None)
        .await
        .text()
        .await
        .unwrap();
    let v = asset_version(&html);
    for (file, ct) in [
        ("app.css", "text/css"),
        ("lib.js", "text/javascript"),
        ("jwt.js", "text/javascript"),
        ("people.js", "text/javascript"),
        ("groups.js", "text/javascript"),
        ("authentication.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let res = app
            .client
            .get(app.url(&format!("/assets/{v}/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{file}");
        assert!(header(&res, "content-type").starts_with(ct), "{file}");
        assert_eq!(
            header(&res, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&res, "x-content-type-options"), "nosniff");
        let etag = header(&res, "etag");
        assert!(!res.bytes().await.unwrap().is_empty());
        // An old or missing version revalidates; a matching ETag answers 304.
        let res = app
            .client
            .get(app.url(&format!("/assets/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(header(&res, "cache-control"), "no-cache");
        let res = app
            .client
            .get(app.url(&format!("/assets/0000/{file}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{file}");
    }
    let res = app
        .client
        .get(app.url(&format!("/assets/{v}/secret.txt")))
        .send()
        .await
        .unwrap();
    assert_error(res, 404, "not_found").await;
    let res = app
        .client
        .get(app.url("/assets/..%2FCargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_pages_send_strangers_to_sign_in_and_members_to_a_403_page() {
    let app = app().await;
    for path in [
        "/admin/people?q=ada",
        "/admin/settings/authentication/jwt",
        "/admin/audit",
    ] {
        let res = get_html(&app, path, None).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{path}");
        let expected = format!(
            "/auth/login?redirect={}",
            url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
        );
        assert_eq!(header(&res, "location"), expected);
    }
    let res = get_html(&app, "/admin", None).await;
    assert_eq!(header(&res, "location"), "/admin/settings/authentication");
    app.create_user("member@example.com", Some("member password"), false)
        .await;
    let member = app.login("member@example.com", "member password").await;
    let res = get_html(&app, "/admin/people", Some(&member)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("You don&#39;t have access")
            || page.contains("You don't have access")
            || page.contains("You don&#x27;t have access"),
        "{page}"
    );
    assert!(page.contains("forbidden"));
    // An API client asking for the same page gets JSON.
    let res = app
        .as_user(&member, Method::GET, "/admin/people")
        .send()
        .await
        .unwrap();
    assert_error(res, 403, "forbidden").await;
}

#[tokio::test]
async fn the_error_page_shows_the_sentence_next_step_and_request_id() {
    let mut app = app().await;
    app.login_admin().await;
    app.configure_jwt().await;
    let res = get_html(&app, "/auth/sso?jwt=garbage", None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let request_id = header(&res, "x-request-id");
    let page = res.text().await.unwrap();
    assert!(page.contains("not a well-formed signed JWT"), "{page}");
    assert!(page.contains("What to do next"));
    assert!(page.contains("href=\"/auth/login\""), "Try again link");
    assert!(page.contains(&request_id), "the request id {request_id}");
    assert!(!page.contains("\"error\":"), "never JSON");
    // API clients still get JSON.
    let res = app
        .client
        .get(app.url("/auth/sso?jwt=garbage"))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_malformed").await;
}

#[tokio::test]
async fn the_login_form_keeps_the_redirect_and_shows_errors_in_place() {
    let mut app = app().await;
    app.login_admin().await;
    let page = sign_in_page(&app, "redirect=%2Fadmin%2Faudit%3Fkind%3Dlogout").await;
    assert!(
        page.contains("name=\"redirect\" value=\"/admin/audit?kind=logout\""),
        "{page}"
    );
    assert!(!page.contains("Sign in with SSO"), "SSO is not configured");
    let form = [
        ("redirect", "/admin/audit?kind=logout"),
        ("username", ADMIN_EMAIL),
        ("password", "wrong password"),
    ];
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("origin", &app.base)
        .header("accept", HTML)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let page = res.text().await.unwrap();
    assert!(page.contains("do not match"), "{page}");
    assert!(
        page.contains("value=\"/admin/audit?kind=logout\""),
        "the redirect is kept"
    );
    assert!(
        page.contains(&format!("value=\"{ADMIN_EMAIL}\"")),
        "the email is kept"
    );
    let form = [
        ("redirect", "/admin/audit?kind=logout"),
        ("username", ADMIN_EMAIL),
        ("password", ADMIN_PASSWORD),
    ];
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("origin", &app.base)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(header(&res, "location").ends_with("/admin/audit?kind=logout"));
    // With SSO on, the SSO button carries the redirect too.
    app.configure_jwt().await;
    let page = sign_in_page(&app, "redirect=%2Fadmin%2Faudit").await;
    assert!(
        page.contains("href=\"/auth/sso?redirect=%2Fadmin%2Faudit\""),
        "{page}"
    );
    // A target the sign-in would refuse is said at once and dropped from the form and button.
    let page = sign_in_page(&app, "redirect=https%3A%2F%2Fevil.example%2F").await;
    assert!(
        page.contains("id=\"redirect-dropped\"") && page.contains("cannot be used"),
        "{page}"
    );
    assert!(page.contains("href=\"/auth/sso\""), "{page}");
    assert!(!page.contains("evil.example"), "{page}");
}

#[tokio::test]
async fn the_login_form_checks_the_origin_before_the_password() {
    let mut app = app().await;
    app.login_admin().await;
    let sessions = app.count("sessions").await;
    let failures = app.count("login_failures").await;
    let form = [("username", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)];
    let post = |origin: Option<&'static str>, site: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url("/auth/login"))
            .header("accept", HTML)
            .form(&form);
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        req.send()
    };
    // Login CSRF: another site's form, a sandboxed one, or a post that says nothing of where
    // it comes from does not sign this browser in, even with the right password.
    for (origin, site) in [
        (Some("https://evil.example"), None),
        (Some("null"), None),
        (None, Some("cross-site")),
        (None, None),
    ] {
        let res = post(origin, site).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin:?} {site:?}");
        assert!(
            res.headers().get("set-cookie").is_none(),
            "{origin:?} {site:?}"
        );
        let page = res.text().await.unwrap();
        assert!(page.contains("csrf_failed"), "{origin:?} {site:?}: {page}");
    }
    // The origin is checked before the password: a wrong one from another site is refused as
    // such, and is no failed attempt either.
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("accept", HTML)
        .header("origin", "https://evil.example")
        .form(&[("username", ADMIN_EMAIL), ("password", "not the password")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("csrf_failed"));
    assert_eq!(app.count("sessions").await, sessions, "no session was made");
    assert_eq!(
        app.count("login_failures").await,
        failures,
        "no attempt was counted"
    );
    // The same form from the page's own origin signs in.
    let res = post(None, Some("same-origin")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res.headers().get("set-cookie").is_some());
    assert_eq!(app.count("sessions").await, sessions + 1);
}

/// The sign-in page's HTML for `/auth/login?<query>`, as an anonymous browser gets it.
async fn sign_in_page(app: &TestApp, query: &str) -> String {
    let res = get_html(app, &format!("/auth/login?{query}"), None).await;
    res.text().await.unwrap()
}

/// A fresh server without an administrator and the setup token it announces.
async fn setup_app() -> (TestApp, String) {
    let app = app().await;
    let token = "5e7up".repeat(13);
    app.store
        .insert_setup_token(&latchkey::auth::session::hash_token(&token), now())
        .await
        .unwrap();
    (app, token)
}

/// Posts the setup form with an `Origin` (none when `None`) as a browser would.
async fn post_setup(
    app: &TestApp,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/setup"))
        .header("accept", HTML)
        .form(form);
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn the_setup_form_shows_its_errors_in_place() {
    let (app, token) = setup_app().await;
    let long = "x".repeat(1025);
    for (email, password, message, not) in [
        (
            "admin@localhost",
            "password123",
            "Enter a valid email address.",
            "The password must",
        ),
        (
            "ada@example.com",
            "short",
            "The password must have at least 8 characters.",
            "at most 1024",
        ),
        (
            "ada@example.com",
            long.as_str(),
            "The password must be at most 1024 bytes long.",
            "must have at least",
        ),
    ] {
        let form = [
            ("token", token.as_str()),
            ("email", email),
            ("first_name", "Ada"),
            ("last_name", "Lovelace"),
            ("password", password),
        ];
        let res = post_setup(&app, Some(&app.base), &form).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{message}");
        assert!(header(&res, "content-type").starts_with("text/html"));
        assert_eq!(header(&res, "cache-control"), "no-store");
        let page = res.text().await.unwrap();
        // The form again, with the error and what was typed (never the password).
        assert!(page.contains("id=\"setup-form\""), "{page}");
        assert!(page.contains(message), "{message} in {page}");
        assert!(!page.contains(not), "{not} in {page}");
        assert!(!page.contains("could not be understood"), "{page}");
        assert!(page.contains(&format!("value=\"{email}\"")), "{page}");
        assert!(page.contains("value=\"Ada\""), "{page}");
        assert!(page.contains("value=\"Lovelace\""), "{page}");
        assert!(page.contains(&format!("value=\"{token}\"")), "{page}");
        assert!(!page.contains("password123"), "{page}");
        assert_eq!(app.count("users").await, 0);
        // The field the error is about has the focus and points to the error.
        let focused: Vec<&str> = page
            .split("<input")
            .filter(|tag| tag.contains(" autofocus"))
            .collect();
        let id = if message.starts_with("Enter") {
            "id=\"email\""
        } else {
            "id=\"password\""
        };
        assert_eq!(focused.len(), 1, "{page}");
        assert!(
            focused[0].contains(id)
                && focused[0].contains("aria-invalid=\"true\" aria-describedby=\"setup-error"),
            "{message}: {}",
            focused[0]
        );
    }
    // A name over 254 characters, and an address an SSO login already took, in place too.
    let long_name = "n".repeat(255);
    let form = [
        ("token", token.as_str()),
        ("email", "ada@example.com"),
        ("first_name", long_name.as_str()),
        ("password", "password123"),
    ];
    let res = post_setup(&app, Some(&app.base), &form).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("id=\"setup-form\"") && page.contains("at most 254 characters"),
        "{page}"
    );
    app.create_user("early@example.com", None, false).await;
    let form = [
        ("token", token.as_str()),
        ("email", "Early@Example.com"),
        ("first_name", "Ada"),
        ("password", "password123"),
    ];
    let res = post_setup(&app, Some(&app.base), &form).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let page = res.text().await.unwrap();
    assert!(page.contains("id=\"setup-form\""), "{page}");
    assert!(
        page.contains("A user with the email early@example.com already exists."),
        "{page}"
    );
    assert!(page.contains("value=\"Early@Example.com\""), "{page}");
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn the_setup_form_checks_the_origin_then_the_token() {
    let (app, token) = setup_app().await;
    // A wrong link says so at once; the right one shows the form.
    let res = get_html(&app, "/setup?token=wrong", None).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("This setup link is not valid") && !page.contains("setup-form"),
        "{page}"
    );
    assert!(
        !page.contains("administrator account"),
        "not the generic 403 advice: {page}"
    );
    let res = get_html(&app, &format!("/setup?token={token}"), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("id=\"setup-form\""));
    let form = [
        ("token", token.as_str()),
        ("email", "Ada@Example.com"),
        ("first_name", "Ada"),
        ("password", "password123"),
    ];
    // Another origin, or a post without Origin or Sec-Fetch-Site, is refused.
    for origin in [Some("https://evil.example"), Some("null"), None] {
        let res = post_setup(&app, origin, &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin:?}");
        let page = res.text().await.unwrap();
        assert!(page.contains("csrf_failed"), "{origin:?}: {page}");
        assert_eq!(app.count("users").await, 0);
    }
    // A wrong token is refused before the form is looked at.
    for email in ["ada@example.com", "admin@localhost"] {
        let wrong = [
            ("token", "wrong"),
            ("email", email),
            ("password", "password123"),
        ];
        let res = post_setup(&app, Some(&app.base), &wrong).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{email}");
        let page = res.text().await.unwrap();
        assert!(page.contains("forbidden"), "{email}: {page}");
        assert!(!page.contains("setup-form"), "{email}: {page}");
        assert_eq!(app.count("users").await, 0);
    }
    // From the same origin the token still works (Sec-Fetch-Site counts without Origin).
    let res = app
        .client
        .post(app.url("/setup"))
        .header("accept", HTML)
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(&res, "location"), "/");
    let cookie = header(&res, "set-cookie");
    let session = cookie
        .strip_prefix("latchkey.session=")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie");
    let me = body_json(
        app.as_user(session, Method::GET, "/api/user/current")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(me["email"], json!("ada@example.com"));
    assert_eq!(me["is_superuser"], json!(true));
    // Setup is done: the token works no more.
    let res = post_setup(&app, Some(&app.base), &form).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.count("users").await, 1);
}

#[tokio::test]
async fn admin_pages_render_what_is_stored() {
    let mut app = app().await;
    app.login_admin().await;
    let admin = app.admin_token.clone().unwrap();
    let res = app
        .admin(Method::POST, "/api/permissions/group")
        .json(&json!({"name": "Data <Team>"}))
        .send()
        .await
        .unwrap();
    let group = body_json(res).await["id"].as_i64().unwrap();
    let res = app
        .put_settings(
            json!({"jwt-group-mappings": {"data-eng": [group]}, "jwt-max-age-seconds": 60}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let page = get_html(&app, "/admin/settings/authentication/jwt", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Data \\u003cTeam\\u003e"),
        "group names are escaped in page data"
    );
    assert!(page.contains("\"data-eng\""));
    assert!(page.contains("value=\"60\""), "a customised value is shown");
    assert!(
        page.contains("placeholder=\"30\""),
        "a default is a placeholder"
    );
    let page = get_html(&app, "/admin/people/groups", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Data &#60;Team&#62;") || page.contains("Data &lt;Team&gt;"),
        "{page}"
    );
    assert!(
        page.contains("<code>data-eng</code>"),
        "mappings are shown per group"
    );
}

#[tokio::test]
async fn env_fixed_settings_are_read_only_in_the_form() {
    let env = std::collections::HashMap::from([(
        "LATCHKEY_JWT_ISSUER".to_owned(),
        "https://idp.example".to_owned(),
    )]);
    let mut app = spawn_app_with_env(Backend::Sqlite, env).await.unwrap();
    app.login_admin().await;
    let admin = app.admin_token.clone().unwrap();
    let page = get_html(&app, "/admin/settings/authentication/jwt", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    let input = page
        .split("<input")
        .find(|i| i.contains("data-setting=\"jwt-issuer\""))
        .expect("the issuer input");
    assert!(input.contains(" disabled"), "{input}");
    assert!(page.contains("<code>LATCHKEY_JWT_ISSUER</code>"));
}

#[tokio::test]
async fn a_large_group_is_shown_a_page_of_members_at_a_time() {
    let mut app = app().await;
    app.login_admin().await;
    let admin = app.admin_token.clone().unwrap();
    // The admin and 500 more: one more than a page of 500.
    for n in 0..500 {
        app.create_user(&format!("person{n:03}@example.com"), None, false)
            .await;
    }
    let first = get_html(&app, "/admin/people/groups/1", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(first.matches("data-membership-id=").count(), 500);
    assert!(first.contains("Showing 500 of 501 members"), "{first}");
    assert!(!first.contains("id=\"first-members\""));
    let start = first
        .find("href=\"/admin/people/groups/1?after=")
        .expect("a next link")
        + "href=\"".len();
    let next = &first[start..start + first[start..].find('"').unwrap()];
    let second = get_html(&app, next, Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    // The page after the first 500 memberships: the last person created, and a way back.
    assert_eq!(second.matches("data-membership-id=").count(), 1);
    assert!(second.contains("person499@example.com"), "{second}");
    assert!(second.contains("id=\"first-members\""));
    assert!(!second.contains("id=\"next-members\""));
    let res = get_html(&app, "/admin/people/groups/1?after=x", Some(&admin)).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // Past the last page: the group is not empty, only that page.
    let past = get_html(&app, "/admin/people/groups/1?after=999999999", Some(&admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(past.contains("id=\"no-more-members\""), "{past}");
    assert!(!past.contains("id=\"no-members\""));
    assert!(past.contains("id=\"first-members\""));
}

#[tokio::test]
async fn empty_admin_lists_say_why() {
    // A people page past the end says so and links to the first page.
    let mut app = app().await;
    app.login_admin().await;
    let admin = app.admin_token.clone().unwrap();
    let res = get_html(&app, "/admin/people?page=999", Some(&admin)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(page.contains("this page is past the end"), "{page}");
    assert!(
        page.contains("No one on this page. <a href=\"/admin/people\">Go to the first page</a>"),
        "{page}"
    );
    assert!(!page.contains("No one yet"), "{page}");
    // "Previous" goes to the last page that has anyone (the first, here), not to page 998.
    assert!(!page.contains("page=998"), "{page}");
    assert!(
        page.contains("href=\"/admin/people\" rel=\"prev\""),
        "{page}"
    );

    // The audit log filtered by an email no account has shows no event, and says where
    // failed sign-ins under it are.
    let res = get_html(&app, "/admin/audit?user=Nobody%40Example.com", Some(&admin)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(
        page.contains("No account has the email nobody@example.com"),
        "{page}"
    );
    assert!(page.contains("No events match these filters."), "{page}");
    assert!(!page.contains("id=\"audit-table\""), "{page}");
    // The admin's own email filters to their events.
    let res = get_html(
        &app,
        &format!("/admin/audit?user={ADMIN_EMAIL}"),
        Some(&admin),
    )
    .await;
    assert!(res.text().await.unwrap().contains("id=\"audit-table\""));
}
