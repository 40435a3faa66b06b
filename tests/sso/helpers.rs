//! Helpers shared by the SSO tests: hand-made tokens, state snapshots, and short-hands for
//! the callback, the current user and groups.

#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::*;
pub use crate::support::{add_to_group, create_group, location};

/// The IdP URI `configure_jwt` sets.
pub const IDP: &str = "https://idp.example/login";

/// Another secret of the accepted length, for tokens the server must not trust.
pub const OTHER_SECRET: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

/// The back-channel logout event (OpenID Connect Back-Channel Logout 1.0).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(payload).HMAC-SHA256(secret)`: the header says whatever the test wants,
/// the MAC is always a real HS256 MAC with the test secret.
pub fn forge(header: &str, payload: &str) -> String {
    forge_with(header, payload, SECRET.as_bytes(), Algorithm::HS256)
}

pub fn forge_with(header: &str, payload: &str, key: &[u8], alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(key), alg)
        .expect("hmac");
    format!("{input}.{sig}")
}

/// `b64(header).b64(payload).<signature as given>`.
pub fn unsigned(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}

/// Valid login claims as JSON text (iat now, a fresh jti).
pub fn payload(email: &str) -> String {
    login_claims(email).to_string()
}

/// A logout token's claims for an email (iat now, fresh jti, the back-channel event).
pub fn logout_claims(email: Option<&str>, sub: Option<&str>) -> Value {
    let mut c = json!({
        "iat": now(),
        "jti": uuid::Uuid::new_v4().to_string(),
        "events": {LOGOUT_EVENT: {}},
    });
    if let Some(e) = email {
        c["email"] = json!(e);
    }
    if let Some(s) = sub {
        c["sub"] = json!(s);
    }
    c
}

/// Creates the admin, logs in (header auth) and configures JWT SSO with the test secret.
pub async fn sso_ready(app: &mut TestApp) -> i64 {
    let id = app.login_admin().await;
    app.configure_jwt().await;
    id
}

/// Row counts of every table a login or logout may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub users: i64,
    pub sessions: i64,
    pub memberships: i64,
    pub replay_records: i64,
    pub audit_events: i64,
}

impl Counts {
    pub async fn of(app: &TestApp) -> Counts {
        Counts {
            users: app.count("users").await,
            sessions: app.count("sessions").await,
            memberships: app.count("memberships").await,
            replay_records: app.count("replay_records").await,
            audit_events: app.count("audit_events").await,
        }
    }

    /// Everything but the audit log, which records failures on purpose.
    pub fn state(&self) -> (i64, i64, i64, i64) {
        (
            self.users,
            self.sessions,
            self.memberships,
            self.replay_records,
        )
    }
}

/// Asserts that no user, session, membership or replay record was written since `before`.
pub async fn assert_nothing_written(app: &TestApp, before: &Counts, what: &str) {
    let after = Counts::of(app).await;
    assert_eq!(
        after.state(),
        before.state(),
        "(users, sessions, memberships, replay_records) changed for {what}"
    );
}

/// `/auth/sso` responses keep tokens out of referrers and caches, on success and error.
pub fn assert_sso_headers(headers: &HeaderMap, what: &str) {
    assert_eq!(
        headers.get("referrer-policy").and_then(|v| v.to_str().ok()),
        Some("no-referrer"),
        "Referrer-Policy for {what}"
    );
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "Cache-Control for {what}"
    );
}

/// Sends a callback (GET, `return_to=/after`) and asserts it is refused with `status` +
/// `code`, carries the SSO headers and no cookie, and writes nothing but (for token and
/// account failures) one `sso_login` failure audit row with the same reason code.
/// Returns the error body.
pub async fn expect_refused(
    app: &TestApp,
    token: &str,
    status: u16,
    code: &str,
    what: &str,
) -> Value {
    let before = Counts::of(app).await;
    let res = app.sso_callback(token, Some("/after")).await;
    let got = res.status().as_u16();
    let headers = res.headers().clone();
    let body = body_json(res).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(code)),
        "status and code for {what}: {body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "request id for {what}"
    );
    assert_sso_headers(&headers, what);
    assert!(headers.get("set-cookie").is_none(), "no cookie for {what}");
    assert_nothing_written(app, &before, what).await;
    let after = Counts::of(app).await;
    if status == 400 {
        assert_eq!(after.audit_events, before.audit_events, "audit for {what}");
    } else {
        assert_eq!(
            after.audit_events,
            before.audit_events + 1,
            "one audit row for {what}"
        );
        let newest = &app.audit_events("limit=1").await[0];
        assert_eq!(newest["kind"], json!("sso_login"), "{what}: {newest}");
        assert_eq!(newest["outcome"], json!("failure"), "{what}: {newest}");
        assert_eq!(newest["reason"], json!(code), "{what}: {newest}");
    }
    body
}

/// Logs in through SSO with these claims (JSON answer); returns the session token and the
/// user object.
pub async fn sso_login(app: &TestApp, claims: Value) -> (String, Value) {
    let res = sso_json(app, &sign(claims.clone())).await;
    let status = res.status();
    let body = body_json(res).await;
    assert_eq!(status, StatusCode::OK, "SSO login with {claims}: {body}");
    (
        body["id"].as_str().expect("session id").to_owned(),
        body["user"].clone(),
    )
}

/// `GET /api/user/current` with a session token (header auth).
pub async fn me(app: &TestApp, session: &str) -> Value {
    let res = app
        .as_user(session, Method::GET, "/api/user/current")
        .send()
        .await
        .expect("current user");
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await
}

/// A user as the admin API shows it (`GET /api/user/:id`).
pub async fn user(app: &TestApp, id: i64) -> Value {
    let res = app
        .admin(Method::GET, &format!("/api/user/{id}"))
        .send()
        .await
        .expect("get user");
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await
}

pub async fn user_by_email(app: &TestApp, email: &str) -> latchkey::store::User {
    app.store
        .find_user_by_email(email)
        .await
        .expect("lookup")
        .unwrap_or_else(|| panic!("no user {email}"))
        .user
}

/// The group ids of a user, ascending.
pub async fn group_ids(app: &TestApp, user_id: i64) -> Vec<i64> {
    app.store
        .user_groups(user_id)
        .await
        .expect("groups")
        .iter()
        .map(|g| g.id)
        .collect()
}

pub fn set_cookie(res: &Response) -> Option<String> {
    res.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The session token out of a `Set-Cookie: latchkey.session=…` value.
pub fn cookie_token(set_cookie: &str) -> String {
    set_cookie
        .strip_prefix("latchkey.session=")
        .and_then(|rest| rest.split(';').next())
        .expect("latchkey.session cookie")
        .to_owned()
}

/// Sends a back-channel logout token as a form.
pub async fn backchannel_form(app: &TestApp, token: &str) -> Response {
    app.client
        .post(app.url("/auth/sso/logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .expect("back-channel logout")
}

/// Sends a back-channel logout token as JSON.
pub async fn backchannel_json(app: &TestApp, token: &str) -> Response {
    app.client
        .post(app.url("/auth/sso/logout"))
        .json(&json!({"logout_token": token}))
        .send()
        .await
        .expect("back-channel logout")
}

/// Whether a session token still authenticates.
pub async fn session_works(app: &TestApp, session: &str) -> bool {
    let res = app
        .as_user(session, Method::GET, "/api/user/current")
        .send()
        .await
        .expect("current user");
    match res.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("unexpected status {other}"),
    }
}
