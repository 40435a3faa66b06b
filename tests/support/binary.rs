//! Helpers for tests that drive the real `latchkey` binary.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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

/// What a finished one-shot command did.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    #[track_caller]
    pub fn success(self) -> Outcome {
        assert!(self.status.success(), "command failed: {self:#?}");
        self
    }

    #[track_caller]
    pub fn failure(self) -> Outcome {
        assert!(
            !self.status.success(),
            "command should have failed: {self:#?}"
        );
        self
    }

    /// The one line a command printed (trimmed).
    #[track_caller]
    pub fn line(&self) -> String {
        let lines: Vec<&str> = self.stdout.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line expected: {self:#?}");
        lines[0].trim().to_owned()
    }
}

/// Kills the child on drop unless it was already reaped.
pub struct Reaper(pub Option<Child>);

impl Reaper {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still owned")
    }

    pub fn id(&self) -> u32 {
        self.0.as_ref().expect("child still owned").id()
    }

    /// Waits at most `timeout` for the exit; `None` when it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs a command to completion (at most `deadline`), feeding `stdin` when given.
pub fn run_with(mut cmd: Command, stdin: Option<&str>, deadline: Duration) -> Outcome {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = Reaper(Some(cmd.spawn().expect("spawn latchkey")));
    if let Some(input) = stdin {
        let mut pipe = child.child().stdin.take().expect("stdin pipe");
        // The command may exit before reading (e.g. a bad argument): ignore EPIPE.
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = read_all(child.child().stdout.take().expect("stdout pipe"));
    let err = read_all(child.child().stderr.take().expect("stderr pipe"));
    let Some(status) = child.wait_timeout(deadline) else {
        drop(child); // kills it, which closes the pipes
        panic!(
            "latchkey {:?} did not finish within {deadline:?}; stderr: {}",
            cmd.get_args().collect::<Vec<_>>(),
            err.join().unwrap_or_default()
        );
    };
    Outcome {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}
