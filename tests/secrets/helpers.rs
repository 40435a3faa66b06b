//! Helpers shared by the secrets tests: keyed commands, raw rows, a tiny JWKS endpoint.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latchkey::settings::encryption::{EncryptionKey, KEY_ENV};
use latchkey::store::Store;

use crate::harness::{self, DEADLINE, Db};

/// `latchkey ARGS…` with a clean environment plus `vars`.
pub fn command_with(args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut cmd = harness::command(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// `latchkey ARGS…` with `LATCHKEY_ENCRYPTION_KEY` set to `key`.
pub fn keyed(args: &[&str], key: &EncryptionKey) -> Command {
    command_with(args, &[(KEY_ENV, &key.to_hex())])
}

pub fn settings_set_keyed(
    db: &Db,
    key: &EncryptionKey,
    name: &str,
    value: &str,
) -> harness::Outcome {
    harness::run_with(
        keyed(
            &["settings", "set", name, value, "--database-url", &db.url],
            key,
        ),
        None,
    )
}

/// The stored text of one setting, straight from the table.
pub async fn raw_setting(url: &str, name: &str) -> Option<String> {
    let store = Store::connect(url).await.expect("connect");
    let rows = store.load_settings().await.expect("load settings");
    store.close().await;
    rows.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `latchkey serve` on `db` on a free loopback port, with extra environment variables.
fn serve_command(db: &Db, vars: &[(&str, &str)]) -> Command {
    command_with(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ],
        vars,
    )
}

/// `serve` on `db` with extra environment variables; waits for the listening line.
pub fn serve_with(db: &Db, vars: &[(&str, &str)]) -> harness::Proc {
    harness::Proc::start(serve_command(db, vars))
}

/// `serve` that must refuse to start: returns its outcome (non-zero exit asserted).
#[track_caller]
pub fn serve_refused(db: &Db, vars: &[(&str, &str)]) -> harness::Outcome {
    harness::run_with(serve_command(db, vars), None).failure()
}

/// A loopback HTTP endpoint answering every request with `body` (status 200, JSON) until
/// dropped or `DEADLINE` × 3 has passed.
pub struct JwksServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JwksServer {
    pub fn start(body: &'static str) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + DEADLINE * 3;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 8192];
                        let mut seen = Vec::new();
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 8192 {
                            match conn.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        JwksServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}
