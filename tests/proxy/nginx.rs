//! End to end with a real nginx: `auth_request` to Latchkey's `/auth/verify` in front of a
//! small upstream that echoes the request it received as JSON.
//!
//! The nginx configuration is the one the README shows (`NGINX_SERVER` below), with the
//! addresses filled in. Without an nginx binary the tests are skipped loudly; with
//! `LATCHKEY_TEST_REQUIRE_ALL=1` (CI) that is a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::helpers::*;
use crate::support::*;

/// The server part of the README's nginx example. `{LATCHKEY}` and `{APP}` are
/// `host:port` of Latchkey and of the app; `{LISTEN}` is where nginx listens.
const NGINX_SERVER: &str = r#"
# The browser's cookies minus Latchkey's session cookie, for the app.
map $http_cookie $latchkey_app_cookies {
    default $http_cookie;
    "~^(?<lk_before>(?:.*;)?)\s*latchkey\.session=[^;]*;?\s*(?<lk_after>.*)$" "$lk_before$lk_after";
}

server {
    listen {LISTEN};

    # Asks Latchkey about every request; clients cannot call it themselves (internal).
    location = /_latchkey_verify {
        internal;
        proxy_pass http://{LATCHKEY}/auth/verify;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        # The page the browser wanted, for the redirect back after signing in.
        proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
    }

    location / {
        auth_request /_latchkey_verify;
        auth_request_set $latchkey_user_id $upstream_http_x_latchkey_user_id;
        auth_request_set $latchkey_email   $upstream_http_x_latchkey_email;
        auth_request_set $latchkey_name    $upstream_http_x_latchkey_name;
        auth_request_set $latchkey_groups  $upstream_http_x_latchkey_groups;
        auth_request_set $latchkey_login   $upstream_http_location;
        error_page 401 = @latchkey_login;

        # Set (or, when empty, removed) here: whatever the client sent never reaches the app.
        proxy_set_header X-Latchkey-User-Id $latchkey_user_id;
        proxy_set_header X-Latchkey-Email   $latchkey_email;
        proxy_set_header X-Latchkey-Name    $latchkey_name;
        proxy_set_header X-Latchkey-Groups  $latchkey_groups;
        # The app gets neither of the user's Latchkey credentials.
        proxy_set_header X-Latchkey-Session "";
        proxy_set_header Cookie $latchkey_app_cookies;
        proxy_set_header Host $http_host;
        proxy_pass http://{APP};
    }

    # Not signed in: browsers go to the sign-in page, other clients get the 401.
    location @latchkey_login {
        if ($latchkey_login = "") {
            return 401;
        }
        return 302 $latchkey_login;
    }
}
"#;

/// A running nginx, stopped (and waited for) on drop.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// The nginx binary, or `None` after a loud warning (a panic when every suite is required).
fn nginx_binary() -> Option<PathBuf> {
    let found = find_nginx();
    if found.is_none() {
        if std::env::var("LATCHKEY_TEST_REQUIRE_ALL").as_deref() == Ok("1") {
            panic!(
                "nginx is not installed but LATCHKEY_TEST_REQUIRE_ALL=1 (apt-get install nginx-light)"
            );
        }
        eprintln!(
            "\n*** WARNING: nginx not found: the nginx forward-auth test is SKIPPED. \
             Install it with `apt-get install nginx-light`. ***\n"
        );
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Nginx {
    /// Starts nginx in front of `app` with Latchkey at `latchkey`. `None` when nginx is
    /// not installed (see `nginx_binary`).
    pub fn start(latchkey: SocketAddr, app: SocketAddr) -> Option<Nginx> {
        let bin = nginx_binary()?;
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in [
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("nginx temp dirs");
        }
        // The port is free when we look; another process may take it before nginx binds
        // it, so a failed start is retried on a new port a few times.
        let mut last_error = String::new();
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            write_config(dir.path(), addr, latchkey, app);
            match spawn(&bin, dir.path(), addr) {
                Ok(child) => return Some(Nginx { child, addr, dir }),
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn write_config(dir: &Path, listen: SocketAddr, latchkey: SocketAddr, app: SocketAddr) {
    let d = dir.display();
    let server = NGINX_SERVER
        .replace("{LISTEN}", &listen.to_string())
        .replace("{LATCHKEY}", &latchkey.to_string())
        .replace("{APP}", &app.to_string());
    // One process (no master/worker split): nothing is left behind when it is killed, and
    // it runs as whoever runs the tests, root included.
    let conf = format!(
        "master_process off;\n\
         worker_processes 1;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         access_log {d}/access.log;\n\
         client_body_temp_path {d}/tmp/body;\n\
         proxy_temp_path {d}/tmp/proxy;\n\
         fastcgi_temp_path {d}/tmp/fastcgi;\n\
         uwsgi_temp_path {d}/tmp/uwsgi;\n\
         scgi_temp_path {d}/tmp/scgi;\n\
         {server}\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
}

/// Starts nginx and waits (at most 10 s) until it accepts connections.
fn spawn(bin: &Path, dir: &Path, addr: SocketAddr) -> Result<Child, String> {
    let d = dir.display();
    let mut child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-g")
        .arg(format!("daemon off; pid {d}/nginx.pid;"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx exited with {status}: {log}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("nginx did not accept connections within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The app behind nginx: answers every request with what it received, as JSON
/// `{"method", "uri", "headers": {name: value}}`, and counts the requests.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let echo = move |req: axum::extract::Request| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut headers = Map::new();
                for (name, value) in req.headers() {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    headers
                        .entry(name.as_str())
                        .and_modify(|v| {
                            *v = Value::String(format!("{}\n{value}", v.as_str().unwrap_or("")))
                        })
                        .or_insert(Value::String(value));
                }
                axum::Json(json!({
                    "method": req.method().as_str(),
                    "uri": req.uri().to_string(),
                    "headers": headers,
                }))
            }
        };
        let router = axum::Router::new().fallback(echo);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Upstream { addr, hits, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Latchkey (SQLite), the upstream and nginx, with `site-url` set to Latchkey's address
/// and nginx's origin allowed as a redirect target.
struct Stack {
    app: TestApp,
    upstream: Upstream,
    nginx: Nginx,
}

async fn stack() -> Option<Stack> {
    let mut app = spawn_app(Backend::Sqlite).await.expect("sqlite app");
    let upstream = Upstream::start().await;
    let nginx = Nginx::start(app.addr, upstream.addr)?;
    app.login_admin().await;
    put_settings(
        &app,
        json!({"site-url": app.base, "redirect-allowed-origins": [nginx.origin()]}),
    )
    .await;
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
