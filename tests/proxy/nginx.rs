//! End to end with a real nginx: `auth_request` to Latchkey's `/auth/verify` in front of a
//! small upstream that echoes the request it received as JSON (`nginx_harness`). Skipped
//! loudly without nginx; a failure with `LATCHKEY_TEST_REQUIRE_ALL=1` (CI).

use std::sync::atomic::Ordering;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;
use crate::nginx_harness::{Nginx, Upstream};
use crate::support::*;

/// Latchkey (SQLite), the upstream and nginx, with `site-url` set to Latchkey's address
/// and nginx's origin allowed as a redirect target.
struct Stack {
    app: TestApp,
    upstream: Upstream,
    nginx: Nginx,
}

async fn stack() -> Option<Stack> {
    let s = bare_stack().await?;
    put_settings(
        &s.app,
        json!({"site-url": s.app.base, "redirect-allowed-origins": [s.nginx.origin()]}),
    )
    .await;
    Some(s)
}

/// As `stack`, with no settings changed yet (an admin is signed in).
async fn bare_stack() -> Option<Stack> {
    let mut app = spawn_app(Backend::Sqlite).await.expect("sqlite app");
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(app.addr, upstream.addr)?;
    app.login_admin().await;
    Some(Stack {
        app,
        upstream,
        nginx,
    })
}

impl Stack {
    /// A request through nginx as a browser sends it.
    fn browse(&self, path: &str) -> reqwest::RequestBuilder {
        self.app
            .client
            .get(self.nginx.url(path))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
    }

    /// The upstream's echo of a request that got through.
    async fn echoed(&self, res: reqwest::Response) -> Value {
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "nginx error log:\n{}",
            self.nginx.error_log()
        );
        body_json(res).await
    }
}

/// The value of the sign-in form's hidden `redirect` field, HTML entities decoded.
fn hidden_redirect(page: &str) -> Option<String> {
    let start = page.find("name=\"redirect\" value=\"")? + "name=\"redirect\" value=\"".len();
    let value = &page[start..start + page[start..].find('"')?];
    Some(
        value
            .replace("&#38;", "&")
            .replace("&amp;", "&")
            .replace("&#39;", "'")
            .replace("&#34;", "\"")
            .replace("&quot;", "\""),
    )
}

fn echoed_header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_passes_identity_headers_and_never_forged_ones() {
    let Some(s) = stack().await else { return };
    let (id, token) = named_user(&s.app, "ada@example.com", "Ada", "Lövelace").await;
    let ops = create_group(&s.app, "Ops, EU").await;
    add_to_group(&s.app, id, ops).await;
    let cookie = format!("theme=dark; latchkey.session={token}; lang=en");

    let res = s
        .browse("/reports/7?x=1&y=2")
        .header("cookie", &cookie)
        .header("x-latchkey-email", "evil@example.net")
        .header("x-latchkey-user-id", "1")
        .header("x-latchkey-groups", "Administrators")
        .header("x-latchkey-name", "Evil")
        .send()
        .await
        .unwrap();
    let echo = s.echoed(res).await;
    assert_eq!(echo["uri"], json!("/reports/7?x=1&y=2"));
    let id = id.to_string();
    assert_eq!(
        echoed_header(&echo, "x-latchkey-user-id"),
        Some(id.as_str())
    );
    assert_eq!(
        echoed_header(&echo, "x-latchkey-email"),
        Some("ada@example.com")
    );
    assert_eq!(
        echoed_header(&echo, "x-latchkey-name"),
        Some("Ada L%C3%B6velace")
    );
    assert_eq!(
        echoed_header(&echo, "x-latchkey-groups"),
        Some("All Users,Ops%2C EU")
    );
    // The app keeps its own cookies but never sees the Latchkey session.
    let cookies = echoed_header(&echo, "cookie").unwrap_or("");
    assert!(
        cookies.contains("theme=dark") && cookies.contains("lang=en"),
        "{cookies}"
    );
    assert!(!cookies.contains("latchkey.session"), "{cookies}");

    // Signed in by header: the header does not reach the app either.
    let res = s
        .browse("/x")
        .header("x-latchkey-session", &token)
        .send()
        .await
        .unwrap();
    let echo = s.echoed(res).await;
    assert_eq!(
        echoed_header(&echo, "x-latchkey-email"),
        Some("ada@example.com")
    );
    assert_eq!(echoed_header(&echo, "x-latchkey-session"), None);

    // Without a session, forged identity headers get nowhere.
    let hits = s.upstream.hits.load(Ordering::SeqCst);
    for accept in ["text/html", "application/json"] {
        let res = s
            .app
            .client
            .get(s.nginx.url("/admin"))
            .header("accept", accept)
            .header("x-latchkey-email", "evil@example.net")
            .header("x-latchkey-user-id", "1")
            .header("cookie", "latchkey.session=forged")
            .send()
            .await
            .unwrap();
        assert!(
            matches!(res.status().as_u16(), 302 | 401),
            "{accept}: {}",
            res.status()
        );
    }
    assert_eq!(s.upstream.hits.load(Ordering::SeqCst), hits);

    // The verify location is internal.
    let res = s
        .app
        .client
        .get(s.nginx.url("/_latchkey_verify"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_answers_api_clients_with_401() {
    let Some(s) = stack().await else { return };
    let hits = s.upstream.hits.load(Ordering::SeqCst);
    let res = s
        .app
        .client
        .get(s.nginx.url("/api/data"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.headers().get("location").is_none());
    // A POST too: the check itself is always a GET.
    let res = s
        .app
        .client
        .post(s.nginx.url("/api/data"))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.upstream.hits.load(Ordering::SeqCst), hits);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sends_a_browser_through_the_sign_in_form_and_back() {
    let Some(s) = stack().await else { return };
    let app = &s.app;
    named_user(app, "grace@example.com", "Grace", "Hopper").await;
    let wanted = s.nginx.url("/reports/7?x=1&y=two%20words");

    // 1. Not signed in: nginx sends the browser to Latchkey's sign-in page.
    let hits = s.upstream.hits.load(Ordering::SeqCst);
    let res = s
        .browse("/reports/7?x=1&y=two%20words")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FOUND,
        "nginx error log:\n{}",
        s.nginx.error_log()
    );
    let login = location(&res);
    assert_eq!(login, login_url_for(&app.base, &wanted));
    assert_eq!(s.upstream.hits.load(Ordering::SeqCst), hits);

    // 2. The sign-in page keeps the target in its form.
    let res = app
        .client
        .get(&login)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let redirect = redirect_param(&login);
    assert_eq!(redirect, wanted);
    let page = res.text().await.unwrap();
    assert_eq!(
        hidden_redirect(&page).as_deref(),
        Some(wanted.as_str()),
        "{page}"
    );

    // 3. Posting the form signs in and sends the browser back to the page it wanted.
    let res = app
        .client
        .post(app.url("/auth/login"))
        .header("origin", app.base.clone())
        .form(&[
            ("username", "grace@example.com"),
            ("password", "password123"),
            ("redirect", redirect.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), wanted);
    let cookie = session_cookie(&res);

    // 4. Back at nginx with the cookie (cookies are per host, not per port): the app
    //    gets the request and who made it.
    let res = app
        .client
        .get(&wanted)
        .header("accept", "text/html")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let echo = s.echoed(res).await;
    assert_eq!(echo["uri"], json!("/reports/7?x=1&y=two%20words"));
    assert_eq!(
        echoed_header(&echo, "x-latchkey-email"),
        Some("grace@example.com")
    );
    assert_eq!(
        echoed_header(&echo, "x-latchkey-name"),
        Some("Grace Hopper")
    );

    // 5. After signing out, nginx sends the browser to sign in again.
    let res = app
        .client
        .get(app.url("/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let res = app
        .client
        .get(&wanted)
        .header("accept", "text/html")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(location(&res), login_url_for(&app.base, &wanted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sends_a_browser_through_sso_and_back() {
    let Some(s) = stack().await else { return };
    let app = &s.app;
    app.configure_jwt().await;
    let wanted = s.nginx.url("/dash?tab=2&q=a%26b");

    let res = s.browse("/dash?tab=2&q=a%26b").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let login = location(&res);
    assert_eq!(redirect_param(&login), wanted);

    // The sign-in page's SSO button carries the target to /auth/sso, which hands it to
    // the identity provider as return_to.
    let res = app.client.get(&login).send().await.unwrap();
    let page = res.text().await.unwrap();
    let sso_href = format!(
        "/auth/sso?redirect={}",
        url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect::<String>()
    );
    assert!(page.contains(&sso_href.replace('&', "&amp;")), "{page}");
    let res = app.client.get(app.url(&sso_href)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let idp = url::Url::parse(&location(&res)).unwrap();
    let return_to = idp
        .query_pairs()
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .expect("return_to for the IdP");
    assert_eq!(return_to, wanted);

    // The IdP signs the user in and sends the browser back with a token.
    let token = sign(json!({
        "email": "linus@example.com", "first_name": "Linus", "last_name": "T",
        "iat": now(), "jti": uuid::Uuid::new_v4().to_string(),
    }));
    let res = app.sso_callback(&token, Some(&return_to)).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(location(&res), wanted);
    let cookie = session_cookie(&res);

    let res = app
        .client
        .get(&wanted)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let echo = s.echoed(res).await;
    assert_eq!(echo["uri"], json!("/dash?tab=2&q=a%26b"));
    assert_eq!(
        echoed_header(&echo, "x-latchkey-email"),
        Some("linus@example.com")
    );
    assert_eq!(echoed_header(&echo, "x-latchkey-name"), Some("Linus T"));
    let user_id = app
        .store
        .find_user_by_email("linus@example.com")
        .await
        .unwrap()
        .unwrap()
        .user
        .id
        .to_string();
    assert_eq!(
        echoed_header(&echo, "x-latchkey-user-id"),
        Some(user_id.as_str())
    );

    // The identity is checked at every request: an admin revoking the sessions ends it.
    let res = app
        .admin(Method::DELETE, &format!("/api/user/{user_id}/sessions"))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    let res = s
        .browse("/dash?tab=2&q=a%26b")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_the_sign_in_pages_on_the_app_host() {
    let Some(s) = bare_stack().await else { return };
    // Latchkey's public address is the app's: its /auth/ pages are served through nginx.
    put_settings(&s.app, json!({"site-url": s.nginx.origin()})).await;
    named_user(&s.app, "joan@example.com", "Joan", "Clarke").await;
    let wanted = s.nginx.url("/private/page?k=v");

    let res = s.browse("/private/page?k=v").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    let login = location(&res);
    assert_eq!(login, login_url_for(&s.nginx.origin(), &wanted));

    let res = s
        .app
        .client
        .get(&login)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert_eq!(hidden_redirect(&page).as_deref(), Some(wanted.as_str()));

    // The form posts to the app's host; the cookie is set there.
    let res = s
        .app
        .client
        .post(s.nginx.url("/auth/login"))
        .header("origin", s.nginx.origin())
        .form(&[
            ("username", "joan@example.com"),
            ("password", "password123"),
            ("redirect", wanted.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "nginx error log:\n{}",
        s.nginx.error_log()
    );
    assert_eq!(location(&res), wanted);
    let cookie = session_cookie(&res);

    let res = s
        .browse("/private/page?k=v")
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let echo = s.echoed(res).await;
    assert_eq!(echo["uri"], json!("/private/page?k=v"));
    assert_eq!(
        echoed_header(&echo, "x-latchkey-email"),
        Some("joan@example.com")
    );
    assert_eq!(echoed_header(&echo, "x-latchkey-name"), Some("Joan Clarke"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_sends_a_browser_to_sign_in_from_urls_the_redirect_check_refuses() {
    let Some(s) = stack().await else { return };
    let hits = s.upstream.hits.load(Ordering::SeqCst);
    // A GET form with a textarea (encoded CR/LF in the query) and a URL over 2048 bytes:
    // nginx turns anything but 2xx/401/403 from the check into a 500, so these must get
    // the sign-in redirect too, with the page's path as the way back.
    let long = format!("/reports?data={}", "x".repeat(3000));
    for (page, back) in [
        ("/search?q=line1%0D%0Aline2", "/search"),
        ("/files?p=C:\\Users", "/files"),
        (long.as_str(), "/reports"),
    ] {
        let res = s.browse(page).send().await.unwrap();
        assert_eq!(
            res.status(),
            StatusCode::FOUND,
            "{page}: nginx error log:\n{}",
            s.nginx.error_log()
        );
        assert_eq!(
            location(&res),
            login_url_for(&s.app.base, &s.nginx.url(back)),
            "{page}"
        );
    }
    assert_eq!(s.upstream.hits.load(Ordering::SeqCst), hits);
}
