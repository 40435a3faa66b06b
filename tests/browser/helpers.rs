//! Helpers shared by the browser scenarios.

use reqwest::Method;
use serde_json::Value;

use crate::harness::Browser;
use crate::support::{Backend, TestApp, body_json, spawn_app};

/// A fresh server on SQLite (the browser tests do not need both backends).
pub async fn app() -> TestApp {
    spawn_app(Backend::Sqlite).await.expect("sqlite app")
}

/// A setting's value as the API shows it (secrets masked).
pub async fn setting(app: &TestApp, key: &str) -> Value {
    let res = app
        .admin(Method::GET, &format!("/api/setting/{key}"))
        .send()
        .await
        .expect("get setting");
    body_json(res).await["value"].clone()
}

/// Signs in through the password form at /auth/login?redirect=… and waits to land there.
pub async fn sign_in(b: &Browser, app: &TestApp, email: &str, password: &str, redirect: &str) {
    let login = format!(
        "/auth/login?redirect={}",
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    b.goto(&app.url(&login)).await;
    b.fill("#username", email).await;
    b.fill("#password", password).await;
    b.click("#password-form button[type=submit]").await;
    b.wait_path(redirect).await;
}

pub async fn sign_out(b: &Browser) {
    b.click("#sign-out").await;
    b.wait_path("/auth/login").await;
}

/// A bound listener for the example identity provider, so its address is known before the
/// signing key exists.
pub async fn idp_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("idp listener");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, base)
}

/// Runs `latchkey example-idp` in-process with `secret`, sending people back to `site`.
pub fn start_idp(listener: tokio::net::TcpListener, secret: &str, site: &str) {
    let router = latchkey::example_idp::router(secret, site);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
}

/// Signs in at the example IdP's form (the browser must be on it).
pub async fn idp_sign_in(b: &Browser, email: &str, first: &str, last: &str, groups: &str) {
    b.fill("#email", email).await;
    b.fill("#first_name", first).await;
    b.fill("#last_name", last).await;
    b.fill("#groups", groups).await;
    b.click("button[type=submit]").await;
}
