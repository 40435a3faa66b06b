//! The pieces of the nginx test: a real nginx with the README's configuration
//! (`NGINX_SERVER`, addresses filled in), stopped on drop, and an upstream app that echoes
//! the request it received as JSON. Without an nginx binary `Nginx::start` warns loudly and
//! returns `None`; with `LATCHKEY_TEST_REQUIRE_ALL=1` (CI) it panics instead.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

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

    # Latchkey's sign-in pages on the app's own host name, so the session cookie is set
    # where the app's requests carry it (README: "Where the cookie lives").
    location /auth/ {
        proxy_pass http://{LATCHKEY};
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
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
