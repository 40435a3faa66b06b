//! Database faults on PostgreSQL (security.md F-06): the real binary under a storm of
//! session checks and SSO logins while its database is stopped (`pg_ctl stop -m fast`,
//! then `-m immediate`) and started again. Every answer must be a success or 503
//! `database_unavailable` — never a 500, never a hang past the client timeout — `/api/ready`
//! must say 503 while the database is down, and the server must recover by itself, without
//! a restart, within a bounded time.
//!
//! It runs on a dedicated throwaway cluster (`support::pg::dedicated_cluster`), so stopping
//! it does not disturb tests using the shared one. A second test on such a cluster connects
//! through its Unix socket instead of TCP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::harness::{
    Server, client, configure_jwt, error_code, heavy, login_token, percentile, report,
    session_cookie,
};
use crate::support::pg;

/// The client gives up after this long; an answer that takes longer is a hang. Twice the
/// server's deadline for a store call (10 s), so that a CPU-starved CI machine does not
/// turn a slow 503 into a false hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the database stays down in each outage.
const OUTAGE: Duration = Duration::from_secs(5);
/// After the database is back, the server must answer successfully within this long.
const RECOVERY_BOUND: Duration = Duration::from_secs(20);
const TASKS: usize = 12;
/// How long the database is frozen (SIGSTOP): longer than the client timeout, so a request
/// that waits for it without a deadline of its own fails the test.
const FREEZE: Duration = Duration::from_secs(22);

#[derive(Debug, Clone)]
struct Sample {
    /// Seconds since the storm started, when the request was sent.
    at: f64,
    kind: &'static str,
    /// HTTP status, or 0 when the client got no answer.
    status: u16,
    code: String,
    latency: Duration,
}

async fn storm_task(
    base: String,
    sessions: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    t0: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    task: usize,
) {
    let http = client(CLIENT_TIMEOUT);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(task as u64);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let sent = Instant::now();
        let (kind, res) = if rng.random_bool(0.5) {
            let token = &sessions[rng.random_range(0..sessions.len())];
            let res = http
                .get(format!("{base}/api/user/current"))
                .header("X-Latchkey-Session", token)
                .send()
                .await;
            ("session", res)
        } else {
            let email = format!("pg-{task}-{}@example.com", n % 20);
            let token = login_token(&email, Some(&["eng"]));
            let res = http
                .get(format!("{base}/auth/sso"))
                .query(&[("jwt", token.as_str())])
                .header("Accept", "application/json")
                .send()
                .await;
            ("login", res)
        };
        let latency = sent.elapsed();
        let (status, code) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                let code = if status >= 400 {
                    error_code(r).await
                } else {
                    String::new()
                };
                (status, code)
            }
            Err(e) => (0, format!("client error: {}", e.without_url())),
        };
        samples.lock().expect("samples").push(Sample {
            at: sent.duration_since(t0).as_secs_f64(),
            kind,
            status,
            code,
            latency,
        });
        if status == 503 {
            // A client backing off a little, as real ones do.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls until `/api/ready` says `want` (bounded); how long it took.
async fn wait_ready(
    http: &reqwest::Client,
    server: &Server,
    want: u16,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(server.url("/api/ready")).send().await {
            let status = r.status().as_u16();
            if status == want {
                if want == 503 {
                    assert_eq!(error_code(r).await, "database_unavailable");
                }
                return start.elapsed();
            }
        }
        assert!(
            start.elapsed() < bound,
            "/api/ready did not answer {want} within {bound:?}:\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until a fresh SSO login and a session check both succeed (bounded).
async fn wait_recovered(http: &reqwest::Client, server: &Server, session: &str) -> Duration {
    let start = Instant::now();
    loop {
        let login = http
            .get(server.url("/auth/sso"))
            .query(&[("jwt", login_token("pg-recovery@example.com", None).as_str())])
            .send()
            .await
            .map(|r| r.status().as_u16());
        let check = http
            .get(server.url("/api/user/current"))
            .header("X-Latchkey-Session", session)
            .send()
            .await
            .map(|r| r.status().as_u16());
        if matches!((&login, &check), (Ok(302), Ok(200))) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < RECOVERY_BOUND,
            "no recovery within {RECOVERY_BOUND:?} of the database's return \
             (login {login:?}, session {check:?}):\n{}",
            server.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_recovers_without_restart() {
    let _heavy = heavy().await;
    let Some(cluster) = pg::dedicated_cluster() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let db_url = cluster.database_url();
    configure_jwt(&db_url);
    crate::harness::settings_set(&db_url, "jwt-group-sync", "true");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(&db_url, &dir.path().join("server.log"), &[]);
    let http = client(CLIENT_TIMEOUT);

    // Sessions to check during the storm.
    let mut sessions = Vec::new();
    for i in 0..8 {
        let res = http
            .get(server.url("/auth/sso"))
            .query(&[(
                "jwt",
                login_token(&format!("pg-user-{i}@example.com"), None).as_str(),
            )])
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), 302, "login before the outage");
        sessions.push(session_cookie(&res).expect("session cookie"));
    }
    let sessions = Arc::new(sessions);

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            tokio::spawn(storm_task(
                server.base.clone(),
                sessions.clone(),
                stop.clone(),
                t0,
                samples.clone(),
                t,
            ))
        })
        .collect();

    let mut outages = Vec::new();
    for mode in ["fast", "immediate"] {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let down_at = t0.elapsed().as_secs_f64();
        let c = cluster.clone();
        let mode_owned = mode.to_owned();
        tokio::task::spawn_blocking(move || c.stop(&mode_owned))
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{e}"));
        let ready_503 = wait_ready(&http, &server, 503, Duration::from_secs(15)).await;
        tokio::time::sleep(OUTAGE.saturating_sub(ready_503)).await;
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || c.start())
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{e}"));
        let up_at = t0.elapsed().as_secs_f64();
        let recovery = wait_recovered(&http, &server, &sessions[0]).await;
        wait_ready(&http, &server, 200, RECOVERY_BOUND).await;
        outages.push((mode, down_at, up_at, ready_503, recovery));
    }
    // A hung database: every PostgreSQL process stopped (SIGSTOP), connections open but
    // silent, for longer than the client waits. In-flight queries must not hang the
    // requests past the server's own deadline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frozen_at = t0.elapsed().as_secs_f64();
    let frozen = cluster.signal_all("STOP").unwrap_or_else(|e| panic!("{e}"));
    let ready_503 = wait_ready(&http, &server, 503, CLIENT_TIMEOUT).await;
    tokio::time::sleep(FREEZE.saturating_sub(ready_503)).await;
    cluster.signal_all("CONT").unwrap_or_else(|e| panic!("{e}"));
    let thawed_at = t0.elapsed().as_secs_f64();
    let recovery = wait_recovered(&http, &server, &sessions[0]).await;
    outages.push(("freeze", frozen_at, thawed_at, ready_503, recovery));
    assert!(frozen > 1, "postmaster and backends frozen ({frozen})");

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        tokio::time::timeout(CLIENT_TIMEOUT + Duration::from_secs(5), t)
            .await
            .expect("storm task ends")
            .expect("storm task");
    }
    assert!(
        server.alive(),
        "the server survived the outages:\n{}",
        server.log_tail(30)
    );

    let samples = samples.lock().expect("samples").clone();
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad: Vec<&Sample> = Vec::new();
    for s in &samples {
        let key = if s.code.is_empty() {
            format!("{} {}", s.kind, s.status)
        } else {
            format!("{} {} {}", s.kind, s.status, s.code)
        };
        *by_status.entry(key).or_default() += 1;
        let fine = match (s.kind, s.status) {
            ("session", 200) | ("login", 200) => true,
            (_, 503) => s.code == "database_unavailable",
            _ => false,
        };
        if !fine {
            bad.push(s);
        }
    }
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let in_outage = samples
        .iter()
        .filter(|s| s.status == 503)
        .map(|s| s.latency)
        .max()
        .unwrap_or_default();
    let successes = samples.iter().filter(|s| s.status == 200).count();
    let unavailable: Vec<f64> = samples
        .iter()
        .filter(|s| s.status == 503)
        .map(|s| s.at)
        .collect();
    for (mode, down, up, ready, recovery) in &outages {
        if *mode == "freeze" {
            report(&format!(
                "database fault (PostgreSQL frozen by SIGSTOP): frozen at {down:.1} s, thawed at \
                 {up:.1} s; /api/ready said 503 after {:.2} s; recovered {:.2} s after the thaw \
                 (no server restart)",
                ready.as_secs_f64(),
                recovery.as_secs_f64()
            ));
            continue;
        }
        report(&format!(
            "database fault (PostgreSQL, pg_ctl stop -m {mode}): down at {down:.1} s, back at \
             {up:.1} s; /api/ready said 503 after {:.2} s; recovered {:.2} s after the restart \
             (no server restart)",
            ready.as_secs_f64(),
            recovery.as_secs_f64()
        ));
    }
    report(&format!(
        "database fault storm: {} requests ({successes} succeeded), by answer {by_status:?}; \
         503s sent between {:.1} s and {:.1} s; slowest answer {:.2} s (slowest 503 {:.2} s, \
         p99 {:.2} s); {} unexpected",
        samples.len(),
        unavailable.iter().copied().fold(f64::INFINITY, f64::min),
        unavailable.iter().copied().fold(0.0, f64::max),
        latencies.last().copied().unwrap_or_default().as_secs_f64(),
        in_outage.as_secs_f64(),
        percentile(&latencies, 0.99).as_secs_f64(),
        bad.len()
    ));
    assert!(
        bad.is_empty(),
        "{} answers other than success or 503 database_unavailable: {:#?}\nserver warnings:\n{}",
        bad.len(),
        &bad[..bad.len().min(10)],
        server.log_problems(40)
    );
    assert!(
        by_status.keys().any(|k| k.contains("503")),
        "the outage was visible to clients"
    );
    server.kill9();
}

/// A PostgreSQL on the same machine reached through its Unix socket (README, "Deployment with
/// PostgreSQL"): the CLI and the server connect with `?host=SOCKET_DIR`, an SSO login is
/// written and its session answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_url_serves_logins_and_sessions() {
    let _heavy = heavy().await;
    let Some(cluster) = pg::dedicated_cluster() else {
        return;
    };
    let db_url = cluster.socket_database_url();
    configure_jwt(&db_url);

    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&db_url, &dir.path().join("server.log"), &[]);
    let http = client(CLIENT_TIMEOUT);
    let res = http
        .get(server.url("/auth/sso"))
        .query(&[("jwt", login_token("socket@example.com", None).as_str())])
        .send()
        .await
        .expect("login");
    assert_eq!(
        res.status(),
        302,
        "login over the socket:\n{}",
        server.log_tail(20)
    );
    let session = session_cookie(&res).expect("session cookie");
    let me = http
        .get(server.url("/api/user/current"))
        .header("Cookie", format!("latchkey.session={session}"))
        .send()
        .await
        .expect("current user");
    assert_eq!(me.status(), 200);
    let body: serde_json::Value = me.json().await.expect("body");
    assert_eq!(body["email"], "socket@example.com");
}
