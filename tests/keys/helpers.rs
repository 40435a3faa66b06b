//! Helpers for the key tests: the test-only fixture keys, signing with them, configuring
//! JWT SSO with public keys or a JWKS URI, and a loopback JWKS server that counts requests.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::support::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/keys/", $name))
    };
}

/// A test-only key pair: (public PEM, private PEM).
pub type Pair = (&'static str, &'static str);

pub const RSA_A: Pair = (fixture!("rsa-a.pub.pem"), fixture!("rsa-a.key.pem"));
pub const RSA_B: Pair = (fixture!("rsa-b.pub.pem"), fixture!("rsa-b.key.pem"));
pub const RSA_A_PKCS1: &str = fixture!("rsa-a.rsapub.pem");
pub const EC_A: Pair = (fixture!("ec-p256-a.pub.pem"), fixture!("ec-p256-a.key.pem"));
pub const EC_B: Pair = (fixture!("ec-p256-b.pub.pem"), fixture!("ec-p256-b.key.pem"));
pub const EC384: Pair = (fixture!("ec-p384.pub.pem"), fixture!("ec-p384.key.pem"));
pub const ED: Pair = (fixture!("ed25519.pub.pem"), fixture!("ed25519.key.pem"));
pub const EC_CERT: &str = fixture!("ec-p256-a.cert.pem");
pub const RSA_1024: &str = fixture!("rsa-1024.pub.pem");
pub const EC_P521: &str = fixture!("ec-p521.pub.pem");

pub const IDP: &str = "https://idp.example/login";

/// Every algorithm Latchkey knows.
pub const ALL_ALGS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn alg_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

pub fn encoding_key(private_pem: &str, alg: Algorithm) -> EncodingKey {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(private_pem.as_bytes())
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap()
        }
        Algorithm::EdDSA => EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
    }
}

/// `b64(header).b64(claims).signature` signed with `key` and `alg`; the header is used as
/// given (it says whatever the test wants), with `alg` added when it has none.
pub fn sign_key(key: &EncodingKey, alg: Algorithm, mut header: Value, claims: &Value) -> String {
    if header.get("alg").is_none() {
        header["alg"] = json!(alg_name(alg));
    }
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("sign");
    format!("{input}.{sig}")
}

/// A token for `email` (iat now, a fresh jti) signed with a private PEM key (or, for HS*,
/// the string as the secret); `header` gives `kid` and anything else.
pub fn token(alg: Algorithm, private_pem: &str, header: Value, email: &str) -> String {
    sign_key(
        &encoding_key(private_pem, alg),
        alg,
        header,
        &login_claims(email),
    )
}

/// The public JWK of a private key, with `kid` (and without `alg`, unless given).
pub fn jwk(private_pem: &str, alg: Algorithm, kid: &str) -> Value {
    let key = encoding_key(private_pem, alg);
    let mut v = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, alg).unwrap())
        .unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("alg");
    obj.insert("kid".into(), json!(kid));
    v
}

/// Creates the admin (header auth) and enables JWT SSO with these extra settings.
pub async fn configure(app: &mut TestApp, settings: Value) {
    if app.admin_token.is_none() {
        app.login_admin().await;
    }
    let mut all = json!({"jwt-enabled": true, "jwt-identity-provider-uri": IDP});
    for (k, v) in settings.as_object().unwrap() {
        all[k] = v.clone();
    }
    let res = app.put_settings(all.clone()).await;
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "settings {all}: {}",
        res.text().await.unwrap_or_default()
    );
}

/// Signs in with `token` and returns the user object; panics with the error otherwise.
pub async fn accepted(app: &TestApp, token: &str, what: &str) -> Value {
    let res = sso_json(app, token).await;
    let status = res.status();
    let body = body_json(res).await;
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    body["user"].clone()
}

/// (users, sessions, replay records): what a refused token must not change.
pub async fn state(app: &TestApp) -> (i64, i64, i64) {
    (
        app.count("users").await,
        app.count("sessions").await,
        app.count("replay_records").await,
    )
}

/// The token is refused with 401 and `code`, and writes nothing.
pub async fn refused(app: &TestApp, token: &str, code: &str, what: &str) {
    let before = state(app).await;
    let res = sso_json(app, token).await;
    let status = res.status().as_u16();
    let body = body_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some(code)),
        "{what}: {body}"
    );
    assert_eq!(state(app).await, before, "nothing written for {what}");
}

/// One series of `/metrics`.
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

pub async fn jwks_refreshes(app: &TestApp, outcome: &str) -> f64 {
    metric(
        app,
        &format!("latchkey_jwks_refresh_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// What the loopback JWKS server answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// 200 with the keys and the Cache-Control header.
    Up,
    /// This status and no body.
    Status(u16),
    /// 200 with a body that is not JSON.
    Garbage,
}

struct ServerState {
    keys: Vec<Value>,
    mode: Mode,
    cache_control: String,
}

/// A JWKS endpoint on 127.0.0.1 (plain http is allowed on loopback) that counts requests.
pub struct JwksServer {
    pub url: String,
    state: Arc<Mutex<ServerState>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_jwks(
    State((state, hits)): State<(Arc<Mutex<ServerState>>, Arc<AtomicUsize>)>,
) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    let (keys, mode, cc) = {
        let s = state.lock().unwrap();
        (s.keys.clone(), s.mode.clone(), s.cache_control.clone())
    };
    match mode {
        Mode::Up => {
            let mut res = axum::Json(json!({"keys": keys})).into_response();
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_str(&cc).unwrap());
            res
        }
        Mode::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Mode::Garbage => (StatusCode::OK, "<html>maintenance</html>").into_response(),
    }
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>, cache_control: &str) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ServerState {
            keys,
            mode: Mode::Up,
            cache_control: cache_control.to_owned(),
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve_jwks))
            .with_state((state.clone(), hits.clone()));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        JwksServer {
            url: format!("http://127.0.0.1:{}/.well-known/jwks.json", addr.port()),
            state,
            hits,
            task,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.state.lock().unwrap().keys = keys;
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }
}
