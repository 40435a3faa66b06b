//! Helpers of the forward-auth and metrics tests.

#![allow(dead_code)]

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::*;
pub use crate::support::{add_to_group, create_group, location};

/// A user with names, signed in with a password; returns (user id, session token).
pub async fn named_user(app: &TestApp, email: &str, first: &str, last: &str) -> (i64, String) {
    let res = app
        .admin(Method::POST, "/api/user")
        .json(&json!({"email": email, "first_name": first, "last_name": last, "password": "password123"}))
        .send()
        .await
        .expect("create user");
    assert_eq!(res.status(), StatusCode::OK, "create {email}");
    let id = body_json(res).await["id"].as_i64().expect("user id");
    let token = app.login(email, "password123").await;
    (id, token)
}

pub async fn put_settings(app: &TestApp, values: Value) {
    let res = app.put_settings(values).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "settings");
}

/// `latchkey.session=<token>` from a response's `Set-Cookie`.
pub fn session_cookie(res: &Response) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("latchkey.session=") && !c.starts_with("latchkey.session=;"))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_owned()
}

pub fn header<'a>(res: &'a Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The `redirect` parameter of a `/auth/login?redirect=…` URL, decoded.
pub fn redirect_param(login_url: &str) -> String {
    let url = url::Url::parse(login_url).expect("absolute login URL");
    assert_eq!(url.path(), "/auth/login", "{login_url}");
    url.query_pairs()
        .find(|(k, _)| k == "redirect")
        .map(|(_, v)| v.into_owned())
        .expect("a redirect parameter")
}

/// `<base>/auth/login?redirect=<target percent-encoded>`.
pub fn login_url_for(base: &str, target: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    format!("{base}/auth/login?redirect={encoded}")
}

/// Asserts an error answered to a browser: the status, and the HTML page naming the code.
pub async fn assert_html_error(res: Response, status: u16, code: &str) {
    let got = res.status().as_u16();
    let page = res.text().await.expect("body");
    assert_eq!(got, status, "status for {page}");
    assert!(page.contains(code), "{code} in {page}");
}
