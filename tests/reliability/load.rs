//! Load (SPEC §8): 30 s of mixed traffic at saturation over 256 concurrent connections
//! against the real binary on SQLite — SSO logins with group sync, session checks, and
//! admin writes (settings, group creation). No 5xx, no error at all except 429 throttling,
//! and the server's peak memory (VmHWM) stays bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use crate::harness::{
    Server, admin_create, admin_session, client, configure_jwt, heavy, login_token, percentile,
    report, session_cookie,
};

const CONNECTIONS: usize = 256;
const DURATION: Duration = Duration::from_secs(30);
/// Generous for a 2-core machine shared with the load generator; anything slower is a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_PEAK_RSS_MIB: u64 = 300;

#[derive(Default)]
struct Tally {
    /// (kind, status) → count; status 0 = no answer.
    by_status: BTreeMap<(&'static str, u16), u64>,
    errors: Vec<String>,
    latencies: Vec<Duration>,
}

struct Shared {
    base: String,
    admin: String,
    sessions: Vec<String>,
    groups: (i64, i64),
    stop: AtomicBool,
    group_counter: AtomicU64,
    tally: Mutex<Tally>,
}

async fn worker(shared: Arc<Shared>, http: reqwest::Client, seed: u64) {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let base = &shared.base;
    while !shared.stop.load(Ordering::Relaxed) {
        let roll = rng.random_range(0..100);
        let sent = Instant::now();
        let (kind, req) = if roll < 40 {
            let email = format!("load-{}@example.com", rng.random_range(0..2000));
            let groups: &[&str] = match rng.random_range(0..3) {
                0 => &["eng"],
                1 => &["eng", "ops"],
                _ => &[],
            };
            let token = login_token(&email, Some(groups));
            (
                "sso_login",
                http.get(format!("{base}/auth/sso"))
                    .query(&[("jwt", token.as_str()), ("return_to", "/")]),
            )
        } else if roll < 88 {
            let token = &shared.sessions[rng.random_range(0..shared.sessions.len())];
            (
                "session_check",
                http.get(format!("{base}/api/user/current"))
                    .header("X-Latchkey-Session", token),
            )
        } else if roll < 93 {
            (
                "put_settings",
                http.put(format!("{base}/api/setting"))
                    .header("X-Latchkey-Session", &shared.admin)
                    .json(&json!({
                        "jwt-clock-skew-seconds": rng.random_range(20..40),
                        "jwt-max-age-seconds": rng.random_range(170..190),
                    })),
            )
        } else if roll < 96 {
            let (a, b) = shared.groups;
            let mapping = if rng.random_bool(0.5) {
                json!({"eng": [a]})
            } else {
                json!({"eng": [a], "ops": [a, b]})
            };
            (
                "put_mappings",
                http.put(format!("{base}/api/setting/jwt-group-mappings"))
                    .header("X-Latchkey-Session", &shared.admin)
                    .json(&json!({ "value": mapping })),
            )
        } else {
            let n = shared.group_counter.fetch_add(1, Ordering::Relaxed);
            (
                "create_group",
                http.post(format!("{base}/api/permissions/group"))
                    .header("X-Latchkey-Session", &shared.admin)
                    .json(&json!({ "name": format!("Load group {n}") })),
            )
        };
        let res = req.send().await;
        let latency = sent.elapsed();
        let (status, error) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                // Read the body: a response is served when its body arrived.
                let body = r.bytes().await;
                match body {
                    Ok(b) if !(200..400).contains(&status) && status != 429 => (
                        status,
                        Some(format!(
                            "{kind} {status}: {}",
                            String::from_utf8_lossy(&b[..b.len().min(200)])
                        )),
                    ),
                    Ok(_) => (status, None),
                    Err(e) => (0, Some(format!("{kind}: body: {e}"))),
                }
            }
            Err(e) => (0, Some(format!("{kind}: {e}"))),
        };
        let mut t = shared.tally.lock().expect("tally");
        *t.by_status.entry((kind, status)).or_default() += 1;
        t.latencies.push(latency);
        if let Some(e) = error
            && t.errors.len() < 50
        {
            t.errors.push(e);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_seconds_of_mixed_traffic_on_256_connections() {
    let _heavy = heavy().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    admin_create(&db_url);
    configure_jwt(&db_url);
    let mut server = Server::start(&db_url, &dir.path().join("server.log"), &[]);
    let http = client(CLIENT_TIMEOUT);
    let admin = admin_session(&http, &server).await;

    // Two groups, a mapping, group sync on.
    let mut ids = Vec::new();
    for name in ["Engineering", "Operations"] {
        let res = http
            .post(server.url("/api/permissions/group"))
            .header("X-Latchkey-Session", &admin)
            .json(&json!({ "name": name }))
            .send()
            .await
            .expect("create group");
        assert_eq!(res.status(), 200, "create group");
        let body: serde_json::Value = res.json().await.expect("group");
        ids.push(body["id"].as_i64().expect("group id"));
    }
    let res = http
        .put(server.url("/api/setting"))
        .header("X-Latchkey-Session", &admin)
        .json(&json!({
            "jwt-group-mappings": {"eng": [ids[0]], "ops": [ids[0], ids[1]]},
            "jwt-group-sync": true,
        }))
        .send()
        .await
        .expect("settings");
    assert_eq!(res.status(), 204, "group sync settings");

    // Sessions to check: ordinary SSO users.
    let mut sessions = Vec::new();
    for i in 0..64 {
        let res = http
            .get(server.url("/auth/sso"))
            .query(&[(
                "jwt",
                login_token(&format!("load-{i}@example.com"), None).as_str(),
            )])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 302);
        sessions.push(session_cookie(&res).expect("cookie"));
    }
    let idle_rss = server.peak_rss_kib().unwrap_or(0);

    let load_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CLIENT_TIMEOUT)
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let shared = Arc::new(Shared {
        base: server.base.clone(),
        admin,
        sessions,
        groups: (ids[0], ids[1]),
        stop: AtomicBool::new(false),
        group_counter: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(worker(shared.clone(), load_client.clone(), i as u64)))
        .collect();
    // Sample the server's memory while the load runs.
    let mut max_sockets = 0;
    while started.elapsed() < DURATION {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            server.alive(),
            "the server died under load:\n{}",
            server.log_tail(30)
        );
        max_sockets = max_sockets.max(server.open_sockets());
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(CLIENT_TIMEOUT + Duration::from_secs(10), w)
            .await
            .expect("worker ends")
            .expect("worker");
    }
    let elapsed = started.elapsed();
    let peak_kib = server.peak_rss_kib().unwrap_or(0);
    assert!(server.alive(), "server alive after the load");
    server.kill9();

    let mut tally = std::mem::take(&mut *shared.tally.lock().expect("tally"));
    tally.latencies.sort();
    let total: u64 = tally.by_status.values().sum();
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for ((_, status), n) in &tally.by_status {
        *by_status.entry(*status).or_default() += n;
    }
    let fivexx: u64 = by_status
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, n)| n)
        .sum();
    report(&format!(
        "load (SQLite, {CONNECTIONS} connections, {:.1} s; up to {max_sockets} sockets open in \
         the server): {total} requests served \
         ({:.0}/s), by status {by_status:?}; by kind and status {:?}; {fivexx} 5xx, {} errors; \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server peak RSS (VmHWM) {:.1} MiB \
         (before the load {:.1} MiB)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        tally.by_status,
        tally.errors.len(),
        percentile(&tally.latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&tally.latencies, 0.99).as_secs_f64() * 1e3,
        tally
            .latencies
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3,
        peak_kib as f64 / 1024.0,
        idle_rss as f64 / 1024.0,
    ));
    assert_eq!(fivexx, 0, "no 5xx: {:#?}", tally.errors);
    assert!(
        tally.errors.is_empty(),
        "no error except 429 throttling: {:#?}",
        tally.errors
    );
    assert!(total > 1_000, "the load got through ({total} requests)");
    assert!(
        max_sockets > CONNECTIONS,
        "{CONNECTIONS} client connections open at once ({max_sockets} sockets)"
    );
    assert!(peak_kib > 0, "VmHWM readable");
    assert!(
        peak_kib / 1024 < MAX_PEAK_RSS_MIB,
        "peak RSS {} MiB ≥ {MAX_PEAK_RSS_MIB} MiB",
        peak_kib / 1024
    );
}
