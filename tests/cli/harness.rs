//! Driving the real `latchkey` binary: one-shot commands with a deadline, long-running
//! processes (server, example IdP) that are killed when dropped, and small HTTP helpers.
//!
//! Every wait is bounded; every child listens on 127.0.0.1 with a port chosen by the OS.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Backend, SECRET, body_json};

/// How long a process may take to start, answer, or exit.
pub const DEADLINE: Duration = Duration::from_secs(20);
/// SPEC §1: a setting changed on one process is in effect on the others within 2 s.
pub const SETTING_PROPAGATION: Duration = Duration::from_secs(2);

pub use crate::support::binary::{Outcome, Reaper, command, listening_addr, session_cookie};
pub use crate::support::location;

/// A database for one test: a SQLite file in a temp dir, or a fresh PostgreSQL database.
pub struct Db {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    /// `None` when PostgreSQL is not available (that variant is then skipped).
    pub fn new(backend: Backend) -> Option<Db> {
        let (url, dir) = crate::support::database_url(backend)?;
        Some(Db {
            url,
            backend,
            _dir: dir,
        })
    }
}

/// Runs each test body on SQLite and on PostgreSQL (skipped when PostgreSQL is missing):
/// `mod <name> { fn sqlite(); fn postgres(); }`.
macro_rules! cli_both_backends {
    ($(async fn $name:ident($db:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                async fn body($db: $crate::harness::Db) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::harness::Db::new($crate::harness::Backend::Sqlite)
                        .expect("sqlite database");
                    body(db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(db) = $crate::harness::Db::new($crate::harness::Backend::Postgres) {
                        body(db).await;
                    }
                }
            }
        )*
    };
}

/// Runs a command to completion (at most `DEADLINE`), feeding `stdin` when given.
pub fn run_with(cmd: Command, stdin: Option<&str>) -> Outcome {
    crate::support::binary::run_with(cmd, stdin, DEADLINE)
}

/// Runs `latchkey ARGS…` (blocking; the commands are short).
pub fn run(args: &[&str]) -> Outcome {
    run_with(command(args), None)
}

pub fn run_stdin(args: &[&str], stdin: &str) -> Outcome {
    run_with(command(args), Some(stdin))
}

/// Drops ANSI escape sequences (`ESC [ … letter`) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A long-running `latchkey` process (server or example IdP). Its stdout and stderr lines
/// are collected as they come; it is killed when dropped.
pub struct Proc {
    child: Reaper,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
    pub base: String,
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            sink.lock().expect("lines lock").push(strip_ansi(&line));
        }
    })
}

impl Proc {
    /// Starts `latchkey ARGS…` and waits for its `listening on http://ADDR` line.
    pub fn start(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = Reaper(Some(cmd.spawn().expect("spawn latchkey")));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect_lines(
                child.child().stdout.take().expect("stdout pipe"),
                lines.clone(),
            ),
            collect_lines(
                child.child().stderr.take().expect("stderr pipe"),
                lines.clone(),
            ),
        ];
        let mut proc = Proc {
            child,
            lines,
            readers,
            addr: "0.0.0.0:0".parse().expect("placeholder"),
            base: String::new(),
        };
        let line = proc.wait_for_line("listening on http://", DEADLINE);
        proc.addr = listening_addr(&line).unwrap_or_else(|| panic!("no address in {line:?}"));
        assert!(proc.addr.ip().is_loopback(), "loopback only: {line}");
        proc.base = format!("http://{}", proc.addr);
        proc
    }

    /// `latchkey serve --listen 127.0.0.1:0 --database-url URL`.
    pub fn serve(db: &Db) -> Proc {
        Proc::start(command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ]))
    }

    pub fn output(&self) -> String {
        self.lines.lock().expect("lines lock").join("\n")
    }

    /// The first output line containing `needle`, waiting at most `timeout`; panics when
    /// the process exits or the time is up first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .expect("lines lock")
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Some(status) = self.child.child().try_wait().expect("try_wait") {
                // Let the readers drain what is left before reporting.
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                if let Some(l) = self
                    .lines
                    .lock()
                    .expect("lines lock")
                    .iter()
                    .find(|l| l.contains(needle))
                {
                    return l.clone();
                }
                panic!(
                    "latchkey exited ({status}) before printing {needle:?}; output:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The one-time setup URL the server printed (`…/setup?token=<64 hex>`).
    pub fn setup_url(&mut self) -> String {
        let line = self.wait_for_line("/setup?token=", DEADLINE);
        let start = line.find("http://").expect("setup URL is absolute");
        line[start..]
            .split_whitespace()
            .next()
            .expect("setup URL")
            .to_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a signal with `kill -SIG <pid>`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.child.wait_timeout(timeout) {
            Some(status) => {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                status
            }
            None => panic!(
                "latchkey did not exit within {timeout:?}; output:\n{}",
                self.output()
            ),
        }
    }
}

/// A client that never follows redirects (the tests look at each hop).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

/// GET /api/session/properties.
pub async fn properties(server: &Proc) -> Value {
    let res = client()
        .get(server.url("/api/session/properties"))
        .send()
        .await
        .expect("properties");
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await
}

/// Polls the server's public properties until `key` equals `want`; returns how long it
/// took. Panics after `timeout`.
pub async fn wait_for_property(
    server: &Proc,
    key: &str,
    want: Value,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let props = properties(server).await;
        if props[key] == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{key} is still {} after {timeout:?} (want {want})",
            props[key]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POST /api/session; returns the response.
pub async fn password_login(server: &Proc, email: &str, password: &str) -> reqwest::Response {
    client()
        .post(server.url("/api/session"))
        .json(&json!({"username": email, "password": password}))
        .send()
        .await
        .expect("login request")
}

/// GET /api/user/current with the session cookie.
pub async fn current_user(server: &Proc, cookie: &str) -> Value {
    let res = client()
        .get(server.url("/api/user/current"))
        .header(
            reqwest::header::COOKIE,
            format!("latchkey.session={cookie}"),
        )
        .send()
        .await
        .expect("current user");
    assert_eq!(res.status(), StatusCode::OK);
    body_json(res).await
}

/// Asserts a redirect to `path` on `server` (the Location may be relative or absolute).
#[track_caller]
pub fn assert_redirects_to(res: &reqwest::Response, server: &Proc, path: &str) {
    assert_eq!(res.status(), StatusCode::FOUND);
    let base = url::Url::parse(&server.base).expect("base URL");
    let target = base.join(&location(res)).expect("Location resolves");
    assert_eq!(
        target.as_str(),
        server.url(path),
        "Location {}",
        location(res)
    );
}

/// `latchkey admin create` with the given password on stdin (plus a newline).
pub fn admin_create(db: &Db, email: &str, password: &str) -> Outcome {
    run_stdin(
        &[
            "admin",
            "create",
            "--email",
            email,
            "--first-name",
            "Ada",
            "--last-name",
            "Lovelace",
            "--password-stdin",
            "--database-url",
            &db.url,
        ],
        &format!("{password}\n"),
    )
}

pub fn settings_set(db: &Db, key: &str, value: &str) -> Outcome {
    run(&["settings", "set", key, value, "--database-url", &db.url])
}

pub fn settings_get(db: &Db, key: &str) -> Outcome {
    run(&["settings", "get", key, "--database-url", &db.url])
}

/// Turns JWT SSO on through the CLI: enabled, the IdP URI, the shared secret.
pub fn configure_jwt(db: &Db, idp_uri: &str, secret: &str) {
    settings_set(db, "jwt-identity-provider-uri", idp_uri).success();
    settings_set(db, "jwt-shared-secret", secret).success();
    settings_set(db, "jwt-enabled", "true").success();
}

/// The decoded header and payload of a compact JWS.
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS has three segments: {token}");
    let decode = |s: &str| -> Value {
        let bytes = B64.decode(s).expect("base64url segment");
        serde_json::from_slice(&bytes).expect("JSON segment")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// HMAC-SHA256 (RFC 2104) over the signing input, base64url without padding.
pub fn hs256_signature(signing_input: &str, key: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(signing_input.as_bytes())
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    B64.encode(outer)
}

/// Asserts that `token` is HS256-signed with `secret`.
#[track_caller]
pub fn assert_signed_with(token: &str, secret: &str) {
    let (input, sig) = token.rsplit_once('.').expect("signature segment");
    assert_eq!(
        sig,
        hs256_signature(input, secret.as_bytes()),
        "HS256 signature with the expected secret"
    );
}

pub fn now() -> i64 {
    crate::support::now()
}

/// A temp dir and a `sqlite://` URL for a database file inside it.
pub fn sqlite_in(dir: &Path, name: &str) -> (String, PathBuf) {
    let path = dir.join(name);
    (format!("sqlite://{}", path.display()), path)
}
