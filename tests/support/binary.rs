//! Helpers for tests that drive the real `latchkey` binary.

use std::net::SocketAddr;
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_latchkey");

/// A `latchkey` command with a clean environment: no inherited `LATCHKEY_*` variables,
/// plain (uncoloured) info-level logs.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LATCHKEY_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("RUST_LOG", "info,sqlx=warn").env("NO_COLOR", "1");
    cmd
}

/// The `ADDR:PORT` after `listening on http://` in a log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("listening on http://").nth(1)?;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    addr.parse().ok()
}

/// The `latchkey.session` cookie value a response sets.
pub fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let first = v.split(';').next()?.trim();
            let value = first.strip_prefix("latchkey.session=")?;
            (!value.is_empty()).then(|| value.to_owned())
        })
}
