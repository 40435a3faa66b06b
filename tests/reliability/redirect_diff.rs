//! Differential test of redirect-target validation (SPEC §4.6, security.md §2.7): whatever
//! `parse_return_to` accepts must stay on the site's origin (or an allowed origin) under a
//! real WHATWG URL parser — Node's `URL`, the algorithm browsers use for `Location` — and
//! the `Location` Latchkey emits must be exactly the URL it checked.
//!
//! For every input and base:
//!
//! 1. `new URL(input, base).origin` is the base's origin or an allowed one (so even a hop
//!    that used the raw input would stay on-site);
//! 2. `new URL(location, base).href` equals Latchkey's parsed URL (what is sent is what was
//!    checked, relative `Location` included);
//! 3. a later hop that percent-decodes the path (repeatedly) and sends it back as a
//!    path-only `Location` stays on the same origin, and Node's normalised result does not
//!    start with `//` (which a further path-only hop would read as another host).
//!
//! One `node` process answers every input (JSON lines on stdin/stdout). Without node the
//! test is skipped loudly, or fails with `LATCHKEY_TEST_REQUIRE_ALL=1`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use latchkey::domain::return_to::{location, origin_of, parse_return_to};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use url::Url;

use crate::harness::{report, require_all};

/// Generated inputs per base (the §2.3 payloads come on top).
const GENERATED_PER_BASE: usize = 10_000;
/// Upper bound for the whole node run.
const NODE_DEADLINE: Duration = Duration::from_secs(120);

const NODE_SCRIPT: &str = r#"
const readline = require('readline');
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
const resolve = (s, b) => {
  try { const u = new URL(s, b); return { href: u.href, origin: u.origin, pathname: u.pathname }; }
  catch (e) { return null; }
};
const out = [];
rl.on('line', (line) => {
  const q = JSON.parse(line);
  const r = { input: resolve(q.input, q.base) };
  if (q.emitted !== undefined) r.emitted = resolve(q.emitted, q.base);
  if (q.hop !== undefined) r.hop = resolve(q.hop, q.hop_base);
  out.push(JSON.stringify(r));
  if (out.length >= 512) { process.stdout.write(out.join('\n') + '\n'); out.length = 0; }
});
rl.on('close', () => { if (out.length) process.stdout.write(out.join('\n') + '\n'); });
"#;

/// Every payload of security.md §2.3 (decoded), plus the §2.2 / PayloadsAllTheThings
/// variants the validator's docs mention.
const PAYLOADS: &[&str] = &[
    "/",
    "/dashboard/1?x=1#f",
    "https://mb.example.com/x",
    "//evil.com",
    "///evil.com",
    "////evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "https:\\\\evil.com",
    "/%2F%2Fevil.com",
    "/%5Cevil.com",
    "https:evil.com",
    "https:/evil.com",
    "https:///evil.com",
    "http://mb.example.com@evil.com/",
    "//mb.example.com@evil.com",
    "//mb.example.com%2F@evil.com",
    "https://evil.com#@mb.example.com",
    "//evil.com\\@mb.example.com",
    "https://mb.example.com.evil.com/",
    "https://evil.com/mb.example.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java%09script:alert(1)",
    "java%0d%0ascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/\t/evil.com",
    "/%09/evil.com",
    "/\n/evil.com",
    "/%0a/evil.com",
    "\t//evil.com",
    "%09//evil.com",
    " //evil.com",
    "%20//evil.com",
    "\0//evil.com",
    "%00//evil.com",
    "//evil%E3%80%82com",
    "//evil\u{3002}com",
    "/%E3%80%82evil.com",
    "%EF%BC%8F%EF%BC%8Fevil.com",
    "\u{FF0F}\u{FF0F}evil.com",
    "//evil.c\u{2100}.mb.example.com",
    "/..//evil.com",
    "/./evil.com",
    "http://mb.example.com/x",
    "https://mb.example.com:8443/x",
    "https://MB.EXAMPLE.COM./x",
    "localhost:3000",
    "mb.example.com",
    "/a&jwt=x#y",
    "/%0d%0aSet-Cookie:%20x=y",
    "/\r\nSet-Cookie: x=y",
    "/ok",
    "http:www.malicious.com",
    "\\/\\/evil.com/",
    "/\\/evil.com/",
    "https://mb.example.com\\@evil.com",
    "https://mb.example.com%40evil.com",
    "https://mb.example.com:443@evil.com",
    "https://[::1]/",
    "https://mb.example.com/%252F%252Fevil.com",
    "/%252e%252e//evil.com",
    "/a/%252e%252e/%252e%252e//evil.com",
    "/%2e%2e/%2e%2e//evil.com",
    "http://127.0.0.1:3000/x",
    "http://127.0.0.1:3000@evil.com/",
    "//127.0.0.1:3000",
    "https://app.example.com/x",
    "http://localhost:8080/cb?y=1",
    "http://localhost:8081/",
];

/// The pieces tricky inputs are made of.
const PREFIXES: &[&str] = &[
    "",
    "/",
    "//",
    "///",
    "/\\",
    "\\",
    "\\\\",
    "http://",
    "https://",
    "HTTPS://",
    "hTtP://",
    "http:",
    "https:",
    "https:/",
    "https:///",
    "javascript:",
    "data:",
    "ftp://",
    "blob:https://mb.example.com/",
    "ws://",
    "https://mb.example.com",
    "https://mb.example.com/",
    "https://mb.example.com:443",
    "https://mb.example.com:444",
    "http://127.0.0.1:3000",
    "http://127.0.0.1:3000/",
    "http://localhost:3000",
    "https://app.example.com",
    "http://localhost:8080",
    "https://evil.com",
    "//evil.com",
    "/%2F",
    "/%5C",
    "/..",
    "/./",
    "/%2e%2e/",
    "/%252e%252e/",
    " ",
    "\t",
    "%09",
    "%2e%2e/",
    "/\u{3002}",
];

const PIECES: &[&str] = &[
    "/",
    "//",
    "\\",
    "@",
    ":",
    ".",
    "..",
    "/..",
    "/../",
    "%",
    "%2F",
    "%2f",
    "%5C",
    "%5c",
    "%25",
    "%252F",
    "%255C",
    "%2e",
    "%2E%2E",
    "%252e%252e",
    "%00",
    "%0a",
    "%0D",
    "%09",
    "%20",
    "%40",
    "%3A",
    "?",
    "#",
    "&",
    "=",
    "evil.com",
    "mb.example.com",
    "MB.example.COM",
    "mb.example.com.",
    "app.example.com",
    "127.0.0.1",
    "localhost",
    "0x7f.1",
    "2130706433",
    "a",
    "x",
    "path",
    "\u{3002}",
    "\u{FF0E}",
    "\u{FF61}",
    "\u{FF0F}",
    "\u{2100}",
    "\u{200B}",
    "\u{00A0}",
    "\u{0085}",
    "ü",
    " ",
    "\t",
    "\n",
    "\r",
    "\0",
    ":443",
    ":80",
    ":3000",
    ":8080",
    ":0",
    ":65536",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "user:pw@",
    "mb.example.com@",
    "xn--",
    "javascript:",
    "https:",
];

struct Base {
    url: Url,
    allowed: Vec<String>,
}

impl Base {
    fn allowed_origins(&self) -> Vec<String> {
        let mut out = vec![origin_of(&self.url)];
        out.extend(
            self.allowed
                .iter()
                .map(|a| origin_of(&Url::parse(a).expect("allowed origin"))),
        );
        out
    }
}

fn generate(rng: &mut StdRng) -> String {
    let mut s = String::new();
    s.push_str(PREFIXES[rng.random_range(0..PREFIXES.len())]);
    let n = rng.random_range(0..8);
    for _ in 0..n {
        s.push_str(PIECES[rng.random_range(0..PIECES.len())]);
    }
    s
}

/// `application/x-www-form-urlencoded`-style percent-encoding of everything but
/// unreserved characters: the form a client double-encoding a payload sends.
fn percent_encode_all(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a decoding hop (an SPA router, a path-normalising proxy) makes of a path:
/// percent-decoded until it stops changing (at most 8 rounds), lossily as UTF-8.
fn decode_fully(path: &str) -> String {
    let mut current = path.as_bytes().to_vec();
    for _ in 0..8 {
        let mut next = Vec::with_capacity(current.len());
        let mut i = 0;
        while i < current.len() {
            if current[i] == b'%'
                && i + 2 < current.len()
                && let (Some(h), Some(l)) = (
                    char::from(current[i + 1]).to_digit(16),
                    char::from(current[i + 2]).to_digit(16),
                )
            {
                next.push(u8::try_from(h * 16 + l).expect("a byte"));
                i += 3;
                continue;
            }
            next.push(current[i]);
            i += 1;
        }
        if next == current {
            break;
        }
        current = next;
    }
    String::from_utf8_lossy(&current).into_owned()
}

struct Case {
    base: usize,
    input: String,
    /// Latchkey's parsed URL and the `Location` it would send, when accepted.
    accepted: Option<(Url, String)>,
}

#[test]
fn accepted_redirect_targets_stay_on_allowed_origins_under_node() {
    let node = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    if !node.is_ok_and(|o| o.status.success()) {
        assert!(
            !require_all(),
            "LATCHKEY_TEST_REQUIRE_ALL=1 but `node` (Node.js ≥ 18) is not installed: the \
             differential redirect test needs its WHATWG URL parser"
        );
        let bar = "=".repeat(78);
        report(&format!(
            "\n{bar}\nWARNING: the differential redirect test is SKIPPED: `node` was not found.\n\
             Install Node.js (Debian: apt-get install nodejs) to run it.\n{bar}\n"
        ));
        return;
    }

    let bases = [
        Base {
            url: Url::parse("https://mb.example.com/app/").unwrap(),
            allowed: vec![
                "https://app.example.com".into(),
                "http://localhost:8080".into(),
            ],
        },
        // No site-url: the request's own scheme and Host.
        Base {
            url: Url::parse("http://127.0.0.1:3000/").unwrap(),
            allowed: vec![],
        },
    ];

    let seed: u64 = std::env::var("LATCHKEY_REDIRECT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6c61_7463_686b_6579);
    let mut rng = StdRng::seed_from_u64(seed);

    let mut inputs: Vec<String> = Vec::new();
    for p in PAYLOADS {
        inputs.push((*p).to_owned());
        inputs.push(percent_encode_all(p));
    }
    let fixed = inputs.len();
    let mut cases: Vec<Case> = Vec::new();
    for (b, base) in bases.iter().enumerate() {
        let generated = (0..GENERATED_PER_BASE).map(|_| generate(&mut rng));
        for input in inputs[..fixed].iter().cloned().chain(generated) {
            let accepted = parse_return_to(Some(&input), &base.url, &base.allowed)
                .ok()
                .map(|url| {
                    let loc = location(Some(&input), &url);
                    (url, loc)
                });
            cases.push(Case {
                base: b,
                input,
                accepted,
            });
        }
    }

    let answers = run_node(&cases, &bases);
    assert_eq!(answers.len(), cases.len(), "node answered every input");

    let mut failures: Vec<String> = Vec::new();
    let mut accepted = 0usize;
    let mut node_same_origin_but_refused = 0usize;
    for (case, answer) in cases.iter().zip(&answers) {
        let base = &bases[case.base];
        let allowed = base.allowed_origins();
        let Some((url, loc)) = &case.accepted else {
            if answer["input"]["origin"].as_str() == Some(origin_of(&base.url).as_str()) {
                node_same_origin_but_refused += 1;
            }
            continue;
        };
        accepted += 1;
        let mut fail = |why: String| {
            failures.push(format!(
                "base {} input {:?} → {url} (Location {loc:?}): {why}",
                base.url, case.input
            ))
        };
        // 1. The raw input under Node stays on an allowed origin.
        match answer["input"]["origin"].as_str() {
            Some(o) if allowed.iter().any(|a| a == o) => {}
            other => fail(format!("node resolves the input to origin {other:?}")),
        }
        // 2. The emitted Location is what was checked.
        match answer["emitted"]["href"].as_str() {
            Some(h) if h == url.as_str() => {}
            other => fail(format!("node resolves the Location to {other:?}")),
        }
        if reqwest::header::HeaderValue::from_str(loc).is_err() {
            fail("the Location is not a valid header value".into());
        }
        // 3. A decoding, path-only second hop stays on the same origin.
        match (
            answer["hop"]["origin"].as_str(),
            answer["hop"]["pathname"].as_str(),
        ) {
            (Some(o), Some(p)) if o == origin_of(url) && !p.starts_with("//") => {}
            other => fail(format!("a decoding second hop gives {other:?}")),
        }
    }

    let tried = cases.len();
    report(&format!(
        "redirect differential (node {}): {tried} inputs tried over {} bases \
         ({fixed} §2.3 payloads and encodings per base, seed {seed:#x}), {accepted} accepted, \
         {} refused ({node_same_origin_but_refused} of them same-origin under node: \
         refused out of caution), {} violations",
        node_version(),
        bases.len(),
        tried - accepted,
        failures.len()
    ));
    assert!(tried >= 10_000, "at least 10,000 inputs");
    assert!(
        accepted >= 500,
        "the grammar should reach the accepting side too ({accepted} accepted)"
    );
    assert!(
        failures.is_empty(),
        "{} accepted inputs misbehave under node, e.g.:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Sends every case through one node process; one JSON answer per case, in order.
fn run_node(cases: &[Case], bases: &[Base]) -> Vec<Value> {
    let mut lines = String::new();
    for case in cases {
        let base = bases[case.base].url.as_str();
        let mut q = json!({"input": case.input, "base": base});
        if let Some((url, loc)) = &case.accepted {
            q["emitted"] = json!(loc);
            q["hop"] = json!(decode_fully(url.path()));
            q["hop_base"] = json!(url.as_str());
        }
        lines.push_str(&q.to_string());
        lines.push('\n');
    }
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg("-e")
        .arg(NODE_SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn node");
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    // Watchdog: the run is bounded whatever node does.
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            while started.elapsed() < NODE_DEADLINE {
                if done.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        })
    };
    let mut stdin = child.stdin.take().expect("node stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(lines.as_bytes());
        // Dropping stdin closes it: node answers the rest and exits.
    });
    let stdout = child.stdout.take().expect("node stdout");
    let answers: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .map(|l| serde_json::from_str(&l).expect("node answers JSON"))
        .collect();
    let _ = writer.join();
    let status = child.wait().expect("node exits");
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    assert!(
        status.success(),
        "node failed ({status}) or ran over {NODE_DEADLINE:?}"
    );
    answers
}
