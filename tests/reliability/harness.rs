//! Driving the real `latchkey` binary for the reliability tests: one-shot CLI commands with
//! a deadline, a server process that can be SIGKILLed and restarted, its peak memory, and
//! small HTTP helpers. Every wait is bounded; everything listens on 127.0.0.1.

use std::fs::File;
use std::io::Write;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

pub use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, SECRET};

pub use crate::support::binary::{command, listening_addr, session_cookie};
pub use crate::support::pg::require_all;

/// How long a server may take to start, or a one-shot command to finish.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The heavy tests (crash storm, database faults, load) take the two CI cores for
/// themselves: run them one at a time, whatever `--test-threads` says.
/// (An async mutex: each test has its own runtime, and the guard is held across awaits.)
pub async fn heavy() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Prints a line to the real stderr: `eprintln!` in a test is captured and shown only on
/// failure, but these figures are the point of the tests.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs `latchkey ARGS…` to completion (at most `DEADLINE`), with `stdin` when given;
/// panics unless it exits 0.
pub fn cli(args: &[&str], stdin: Option<&str>) -> String {
    crate::support::binary::run_with(command(args), stdin, DEADLINE)
        .success()
        .stdout
}

pub fn settings_set(db_url: &str, key: &str, value: &str) {
    cli(
        &["settings", "set", key, value, "--database-url", db_url],
        None,
    );
}

/// Enables JWT SSO with the test secret through the CLI (the server picks it up at start,
/// or within 2 s when running).
pub fn configure_jwt(db_url: &str) {
    settings_set(
        db_url,
        "jwt-identity-provider-uri",
        "https://idp.example/login",
    );
    settings_set(db_url, "jwt-shared-secret", SECRET);
    settings_set(db_url, "jwt-enabled", "true");
}

/// `latchkey admin create` for the test admin.
pub fn admin_create(db_url: &str) {
    cli(
        &[
            "admin",
            "create",
            "--email",
            ADMIN_EMAIL,
            "--password-stdin",
            "--database-url",
            db_url,
        ],
        Some(&format!("{ADMIN_PASSWORD}\n")),
    );
}

/// A running `latchkey serve`, its output in a log file. Killed (SIGKILL) when dropped.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub log: PathBuf,
    /// How long it took from spawn to the `listening on` line.
    pub startup: Duration,
}

impl Server {
    /// Spawns `latchkey serve` on a free loopback port without waiting for it.
    pub fn spawn(db_url: &str, log: &Path, env: &[(&str, &str)]) -> Child {
        let mut cmd = command(&["serve", "--listen", "127.0.0.1:0", "--database-url", db_url]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let file = File::create(log).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        cmd.spawn().expect("spawn latchkey serve")
    }

    /// Starts the server and waits (bounded) for its `listening on http://ADDR` line.
    pub fn start(db_url: &str, log: &Path, env: &[(&str, &str)]) -> Server {
        let started = Instant::now();
        let mut child = Self::spawn(db_url, log, env);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(addr) = text.lines().find_map(listening_addr) {
                return Server {
                    child: Some(child),
                    base: format!("http://{addr}"),
                    log: log.to_owned(),
                    startup: started.elapsed(),
                };
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("latchkey serve exited ({status}) before listening:\n{text}");
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("latchkey serve did not listen within {DEADLINE:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `VmHWM` (peak resident set) from /proc, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// How many sockets the process has open (its listener, client connections, database
    /// connections).
    pub fn open_sockets(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        dir.flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count()
    }

    /// The last `lines` warnings and errors of the log.
    pub fn log_problems(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
            .collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A client that never follows redirects, with a per-request timeout.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// A fresh HS256 login token for `email` (iat now, random jti), with a groups claim when
/// `groups` is given — signed with the library's own signer and the test secret.
pub fn login_token(email: &str, groups: Option<&[&str]>) -> String {
    let mut claims = Map::new();
    claims.insert("email".into(), json!(email));
    claims.insert("iat".into(), json!(latchkey::clock::now()));
    claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    claims.insert("first_name".into(), json!("Test"));
    if let Some(g) = groups {
        claims.insert("groups".into(), json!(g));
    }
    latchkey::sso::verify::sign_hmac("HS256", &claims, SECRET.as_bytes()).expect("sign")
}

/// The `error` code of a JSON error body (empty when there is none).
pub async fn error_code(res: reqwest::Response) -> String {
    let text = res.text().await.unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Password login of the test admin; the session token.
pub async fn admin_session(client: &reqwest::Client, server: &Server) -> String {
    let res = client
        .post(server.url("/api/session"))
        .json(&json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("admin login");
    assert_eq!(res.status(), 200, "admin login");
    let body: Value = res.json().await.expect("login body");
    body["id"].as_str().expect("session id").to_owned()
}

/// A rough percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}
