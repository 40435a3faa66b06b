//! Shared test support: `spawn_app` starts the real server in-process on a fresh database
//! (SQLite in a temp dir, or a fresh PostgreSQL database), with a client that does not
//! follow redirects and typed helpers. `both_backends!` runs each test on both databases.

#![allow(dead_code)]

pub mod binary;
pub mod pg;

use std::collections::HashMap;
use std::net::SocketAddr;

use latchkey::app::App;
use latchkey::auth::session::session_key;
use latchkey::store::{NewUser, Store};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Map, Value, json};

pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub database_url: String,
    pub store: Store,
    /// The server's password hasher (to see how much argon2 work requests caused).
    pub passwords: latchkey::auth::password::Passwords,
    pub client: reqwest::Client,
    /// The admin's session token (header auth), once `login_admin` ran.
    pub admin_token: Option<String>,
    pub backend: Backend,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// `$body` with `$p` bound to the store's pools, on either backend: sqlx's query types differ
/// by database, so the body is written once and compiled for each.
macro_rules! on_pools {
    ($store:expr, $p:ident => $body:expr) => {
        match $store {
            Store::Sqlite($p) => $body,
            Store::Postgres($p) => $body,
        }
    };
}

pub fn database_url(backend: Backend) -> Option<(String, Option<tempfile::TempDir>)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
            Some((url, Some(dir)))
        }
        Backend::Postgres => pg::fresh_database_url().map(|u| (u, None)),
    }
}

/// Starts the server on a fresh database; `None` when PostgreSQL is not available (the
/// PostgreSQL variant is then skipped, loudly; in CI it fails instead).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with_env(backend, HashMap::new()).await
}

pub async fn spawn_app_with_env(backend: Backend, env: HashMap<String, String>) -> Option<TestApp> {
    let (url, dir) = database_url(backend)?;
    Some(spawn_on(backend, &url, dir, env).await)
}

/// Another server on the same database (multi-instance tests).
pub async fn spawn_instance(of: &TestApp) -> TestApp {
    spawn_on(of.backend, &of.database_url, None, HashMap::new()).await
}

/// Starts the server on the database at `url` (migrating it first, as `serve` does).
pub async fn spawn_on(
    backend: Backend,
    url: &str,
    dir: Option<tempfile::TempDir>,
    env: HashMap<String, String>,
) -> TestApp {
    let app = App::build_with_env("127.0.0.1:0", url, move |k| env.get(k).cloned())
        .await
        .expect("app builds");
    let addr = app.local_addr();
    let store = app.state().store.clone();
    let passwords = app.state().passwords.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    TestApp {
        addr,
        base: format!("http://{addr}"),
        database_url: url.to_owned(),
        store,
        passwords,
        client,
        admin_token: None,
        backend,
        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// Runs each test on SQLite and on PostgreSQL: `mod <name> { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! both_backends {
    ($(async fn $name:ident($app:pat) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn run($app: $crate::support::TestApp) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::support::spawn_app($crate::support::Backend::Sqlite).await.expect("sqlite app")).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(app) = $crate::support::spawn_app($crate::support::Backend::Postgres).await {
                        run(app).await;
                    }
                }
            }
        )*
    };
}

pub async fn body_json(res: Response) -> Value {
    let text = res.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// Asserts status and error code of a failed request; returns the body.
pub async fn assert_error(res: Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let body = body_json(res).await;
    assert_eq!(got, status, "status for {body}");
    assert_eq!(body["error"], json!(code), "code in {body}");
    assert!(
        body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "request id in {body}"
    );
    body
}

/// The `Location` header of a response (panics without one).
/// The SSO callback over GET asking for JSON (`Accept: application/json`).
pub async fn sso_json(app: &TestApp, token: &str) -> Response {
    app.client
        .get(app.url("/auth/sso"))
        .query(&[("jwt", token)])
        .header("accept", "application/json")
        .send()
        .await
        .expect("sso json")
}

pub fn location(res: &Response) -> String {
    res.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

/// Creates a group through the API (as the admin); returns its id.
pub async fn create_group(app: &TestApp, name: &str) -> i64 {
    let res = app
        .admin(Method::POST, "/api/permissions/group")
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create group");
    assert_eq!(res.status(), StatusCode::OK, "create group {name}");
    body_json(res).await["id"].as_i64().expect("group id")
}

/// Adds a user to a group through the API (as the admin).
pub async fn add_to_group(app: &TestApp, user_id: i64, group_id: i64) {
    let res = app
        .admin(Method::POST, "/api/permissions/membership")
        .json(&json!({"group_id": group_id, "user_id": user_id}))
        .send()
        .await
        .expect("add membership");
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "add user {user_id} to group {group_id}"
    );
}

pub fn now() -> i64 {
    latchkey::clock::now()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request authenticated as the admin (header auth, so no CSRF rules).
    pub fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let token = self.admin_token.as_deref().expect("login_admin first");
        self.client
            .request(method, self.url(path))
            .header("X-Latchkey-Session", token)
    }

    pub fn as_user(&self, token: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("X-Latchkey-Session", token)
    }

    pub async fn create_user(
        &self,
        email: &str,
        password: Option<&str>,
        is_superuser: bool,
    ) -> i64 {
        let hash = password.map(|p| latchkey::auth::password::hash_blocking(p).expect("hash"));
        let new = NewUser {
            email: email.to_owned(),
            first_name: None,
            last_name: None,
            password_hash: hash,
            is_superuser,
            now: now(),
        };
        let audit = audit_stub("user_created");
        self.store
            .create_user(&new, &audit)
            .await
            .expect("create user")
            .id
    }

    /// Password login through the API; returns the session token.
    pub async fn login(&self, email: &str, password: &str) -> String {
        let res = self
            .client
            .post(self.url("/api/session"))
            .json(&json!({"username": email, "password": password}))
            .send()
            .await
            .expect("login request");
        assert_eq!(res.status(), StatusCode::OK, "login of {email}");
        body_json(res).await["id"]
            .as_str()
            .expect("session id")
            .to_owned()
    }

    /// Creates the admin (if needed) and logs in.
    pub async fn login_admin(&mut self) -> i64 {
        let id = match self
            .store
            .find_user_by_email(ADMIN_EMAIL)
            .await
            .expect("lookup")
        {
            Some(u) => u.user.id,
            None => {
                self.create_user(ADMIN_EMAIL, Some(ADMIN_PASSWORD), true)
                    .await
            }
        };
        self.admin_token = Some(self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await);
        id
    }

    pub async fn put_setting(&self, key: &str, value: Value) -> Response {
        self.admin(Method::PUT, &format!("/api/setting/{key}"))
            .json(&json!({"value": value}))
            .send()
            .await
            .expect("put setting")
    }

    pub async fn put_settings(&self, values: Value) -> Response {
        self.admin(Method::PUT, "/api/setting")
            .json(&values)
            .send()
            .await
            .expect("put settings")
    }

    /// Enables JWT SSO with the test secret and an IdP at idp.example.
    pub async fn configure_jwt(&self) {
        let res = self
            .put_settings(json!({
                "jwt-enabled": true,
                "jwt-identity-provider-uri": "https://idp.example/login",
                "jwt-shared-secret": SECRET,
            }))
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }

    pub async fn sso_callback(&self, token: &str, return_to: Option<&str>) -> Response {
        let mut q = vec![("jwt", token)];
        if let Some(r) = return_to {
            q.push(("return_to", r));
        }
        self.client
            .get(self.url("/auth/sso"))
            .query(&q)
            .send()
            .await
            .expect("sso callback")
    }

    /// Rows in a table (tests assert what was or was not written).
    pub async fn count(&self, table: &str) -> i64 {
        let sql: &'static str = match table {
            "users" => "SELECT COUNT(*) FROM users",
            "sessions" => "SELECT COUNT(*) FROM sessions",
            "memberships" => "SELECT COUNT(*) FROM memberships",
            "replay_records" => "SELECT COUNT(*) FROM replay_records",
            "audit_events" => "SELECT COUNT(*) FROM audit_events",
            "groups" => "SELECT COUNT(*) FROM groups",
            "settings" => "SELECT COUNT(*) FROM settings",
            "login_failures" => "SELECT COUNT(*) FROM login_failures",
            other => panic!("unknown table {other}"),
        };
        on_pools!(&self.store, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(&p.read).await)
            .expect("count")
    }

    /// Runs one SQL statement written for both databases (test set-up that the API has no
    /// quick way to make, such as thousands of rows); the rows it changed.
    pub async fn execute(&self, sql: &str) -> u64 {
        on_pools!(&self.store, p => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&p.write).await.map(|r| r.rows_affected()))
            .expect("statement")
    }

    /// The first column of a query's rows, as integers.
    pub async fn ids(&self, sql: &str) -> Vec<i64> {
        on_pools!(&self.store, p => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_all(&p.read).await).expect("query")
    }

    /// The stored sessions of a user. On SQLite, also asserts that the user's chain of sessions
    /// (migration 0007) is whole: the user's row names the newest, and each session the one
    /// before it, down to the oldest, which names none.
    pub async fn sessions_of(&self, user_id: i64) -> i64 {
        let sql = "SELECT COUNT(*) FROM sessions WHERE user_id = $1";
        let n = on_pools!(&self.store, p => sqlx::query_scalar::<_, i64>(sql).bind(user_id).fetch_one(&p.read).await)
            .expect("count sessions");
        if let Store::Sqlite(p) = &self.store {
            let links: Vec<(i64, i64)> = sqlx::query_as(
                "SELECT id, user_prev FROM sessions WHERE user_id = $1 ORDER BY id DESC",
            )
            .bind(user_id)
            .fetch_all(&p.read)
            .await
            .expect("read the chain");
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT last_session_id FROM users WHERE id = $1")
                    .bind(user_id)
                    .fetch_one(&p.read)
                    .await
                    .expect("read the user");
            assert_eq!(
                newest.unwrap_or(0),
                links.first().map_or(0, |l| l.0),
                "user {user_id}'s newest session"
            );
            for (i, &(id, prev)) in links.iter().enumerate() {
                let older = links.get(i + 1).map_or(0, |l| l.0);
                assert_eq!(
                    prev, older,
                    "user {user_id}: session {id} names {prev} as the one before it, not {older}"
                );
            }
        }
        n
    }

    /// Failures counted in a throttle bucket (`email:…` or `ip:…`), at any time.
    pub async fn login_failures(&self, bucket: &str) -> i64 {
        let sql = "SELECT COUNT(*) FROM login_failures WHERE bucket = $1";
        on_pools!(&self.store, p => sqlx::query_scalar::<_, i64>(sql).bind(bucket).fetch_one(&p.read).await)
            .expect("count login failures")
    }

    /// The text stored for a setting, read from the database (not any instance's cache).
    pub async fn stored_setting(&self, key: &str) -> Option<String> {
        self.store
            .load_settings()
            .await
            .expect("load settings")
            .into_iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// Sets a time column (`expires_at`, `last_seen_at` or `created_at`) of the session stored under this
    /// token's key, which must exist.
    pub async fn set_session_time(&self, token: &str, column: &str, at: i64) {
        let sql = match column {
            "expires_at" => "UPDATE sessions SET expires_at = $1 WHERE id_hash = $2",
            "last_seen_at" => "UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2",
            "created_at" => "UPDATE sessions SET created_at = $1 WHERE id_hash = $2",
            other => panic!("not a session time column: {other}"),
        };
        let key = session_key(token).as_bytes().to_vec();
        let updated = on_pools!(&self.store, p => sqlx::query(sql)
            .bind(at)
            .bind(&key)
            .execute(&p.write)
            .await
            .map(|r| r.rows_affected()));
        assert_eq!(updated.expect("update session"), 1, "session {column}");
    }

    /// The `last_seen_at` of the session stored under this token's key, if there is one.
    pub async fn session_last_seen(&self, token: &str) -> Option<i64> {
        let sql = "SELECT last_seen_at FROM sessions WHERE id_hash = $1";
        let key = session_key(token).as_bytes().to_vec();
        on_pools!(&self.store, p => sqlx::query_scalar(sql).bind(&key).fetch_optional(&p.read).await)
            .expect("read session")
    }

    /// The stored keys of all sessions, in the order of the sessions table's key.
    pub async fn stored_session_keys(&self) -> Vec<Vec<u8>> {
        let sql = "SELECT id_hash FROM sessions ORDER BY id_hash";
        on_pools!(&self.store, p => sqlx::query_scalar(sql).fetch_all(&p.read).await)
            .expect("read sessions")
    }

    /// The newest audit events (as the API shows them).
    pub async fn audit_events(&self, query: &str) -> Vec<Value> {
        let res = self
            .admin(Method::GET, &format!("/api/audit?{query}"))
            .send()
            .await
            .expect("audit");
        assert_eq!(res.status(), StatusCode::OK);
        body_json(res).await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

pub fn audit_stub(kind: &'static str) -> latchkey::store::AuditRecord {
    latchkey::store::AuditRecord::success(now(), kind)
}

/// HS256-signs claims with the test secret.
pub fn sign(claims: Value) -> String {
    sign_with(claims, SECRET)
}

pub fn sign_with(claims: Value, secret: &str) -> String {
    let map: Map<String, Value> = claims.as_object().cloned().expect("claims object");
    latchkey::sso::verify::sign_hmac("HS256", &map, secret.as_bytes()).expect("sign")
}

/// Fresh login claims for an email: iat now and a unique jti.
pub fn login_claims(email: &str) -> Value {
    json!({"email": email, "iat": now(), "jti": uuid::Uuid::new_v4().to_string()})
}
