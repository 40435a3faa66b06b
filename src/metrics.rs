//! A small in-process metrics registry, rendered in the Prometheus text format by
//! `GET /metrics` (`http::metrics`).
//!
//! Hand-written on atomics rather than a metrics crate: the few families we have need no
//! more, it compiles in no time, and every `App` owns its own registry (no global
//! recorder), so tests that start many servers in one process never share counters.
//!
//! Every label value is bounded: login methods and reason codes are `&'static str` codes
//! from the error enum, routes are axum's matched route templates (never the raw path),
//! HTTP methods outside the standard set count as `other`. Nothing personal (emails, ids,
//! IP addresses, paths with ids in them) ever becomes a label.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the request latency histogram buckets (Prometheus' defaults).
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long a counted number of active sessions is reused: `/metrics` is public, and
/// counting sessions is a range scan, so scrapes more frequent than this cost nothing.
pub const ACTIVE_SESSIONS_TTL: Duration = Duration::from_secs(10);

/// Label value for successful logins, which have no reason code.
pub const NO_REASON: &str = "none";

/// Route label of requests that matched no route (the 404 fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

type LoginKey = (&'static str, &'static str, &'static str);
type RequestKey = (&'static str, &'static str);
type StatusKey = (&'static str, &'static str, u16);

/// The registry one `App` owns (in its state).
pub struct Metrics {
    logins: RwLock<BTreeMap<LoginKey, Arc<AtomicU64>>>,
    latency: RwLock<BTreeMap<RequestKey, Arc<Histogram>>>,
    responses: RwLock<BTreeMap<StatusKey, Arc<AtomicU64>>>,
    jwks_success: AtomicU64,
    jwks_failure: AtomicU64,
    active_sessions: Mutex<Option<(Instant, i64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            logins: RwLock::default(),
            latency: RwLock::default(),
            responses: RwLock::default(),
            jwks_success: AtomicU64::new(0),
            jwks_failure: AtomicU64::new(0),
            active_sessions: Mutex::new(None),
        };
        // Zero-valued series from the start, so rates and alerts work before the first
        // login rather than appearing out of nowhere.
        for method in ["jwt", "password"] {
            metrics.counter_for_login(method, "success", NO_REASON);
        }
        metrics
    }
}

/// A cumulative histogram: one counter per bucket, a count and a sum (in nanoseconds, so
/// it stays an integer atomic).
#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Finds or inserts the cell for `key`: the read lock serves every request after the
/// first one for a key.
fn cell<K: Ord + Clone, V: Default>(map: &RwLock<BTreeMap<K, Arc<V>>>, key: &K) -> Arc<V> {
    if let Some(v) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return v.clone();
    }
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key.clone())
        .or_default()
        .clone()
}

/// The HTTP method as a bounded label value.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    fn counter_for_login(
        &self,
        method: &'static str,
        outcome: &'static str,
        reason: &'static str,
    ) -> Arc<AtomicU64> {
        cell(&self.logins, &(method, outcome, reason))
    }

    /// A successful login through `method` (`"jwt"` or `"password"`).
    pub fn login_succeeded(&self, method: &'static str) {
        self.counter_for_login(method, "success", NO_REASON)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A refused login through `method`, with the error's stable code as the reason.
    pub fn login_failed(&self, method: &'static str, reason: &'static str) {
        self.counter_for_login(method, "failure", reason)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Records the outcome of a login attempt and hands the result back unchanged.
    pub fn record_login<T>(
        &self,
        method: &'static str,
        result: crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        match &result {
            Ok(_) => self.login_succeeded(method),
            Err(e) => self.login_failed(method, e.code()),
        }
        result
    }

    /// One JWKS fetch: `true` when the keys were fetched and parsed.
    pub fn jwks_refreshed(&self, success: bool) {
        let counter = if success {
            &self.jwks_success
        } else {
            &self.jwks_failure
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One finished HTTP request. `route` is the matched route template.
    pub fn request_finished(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        cell(&self.latency, &(method, route)).observe(elapsed);
        cell(&self.responses, &(method, route, status)).fetch_add(1, Ordering::Relaxed);
    }

    /// The cached number of active sessions, if it is fresh enough to reuse.
    pub fn cached_active_sessions(&self, now: Instant) -> Option<i64> {
        let cached = *self
            .active_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cached
            .filter(|(at, _)| now.duration_since(*at) < ACTIVE_SESSIONS_TTL)
            .map(|(_, n)| n)
    }

    pub fn store_active_sessions(&self, now: Instant, count: i64) {
        *self
            .active_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((now, count));
    }

    /// Every family in the Prometheus text exposition format (version 0.0.4).
    /// `active_sessions` is `None` when the database could not be asked.
    pub fn render(&self, active_sessions: Option<i64>) -> String {
        let mut out = String::with_capacity(4096);
        let read = |m: &AtomicU64| m.load(Ordering::Relaxed);

        family(
            &mut out,
            "latchkey_build_info",
            "gauge",
            "Always 1; the version label names the running build.",
        );
        let _ = writeln!(
            out,
            "latchkey_build_info{{version=\"{}\"}} 1",
            escape_label(env!("CARGO_PKG_VERSION"))
        );

        family(
            &mut out,
            "latchkey_logins_total",
            "counter",
            "Sign-in attempts by method (jwt, password), outcome and reason code.",
        );
        for ((method, outcome, reason), v) in
            self.logins.read().unwrap_or_else(|e| e.into_inner()).iter()
        {
            let _ = writeln!(
                out,
                "latchkey_logins_total{{method=\"{method}\",outcome=\"{outcome}\",reason=\"{}\"}} {}",
                escape_label(reason),
                read(v)
            );
        }

        family(
            &mut out,
            "latchkey_active_sessions",
            "gauge",
            "Sessions that have not reached their absolute expiry (counted at most every 10 s).",
        );
        if let Some(n) = active_sessions {
            let _ = writeln!(out, "latchkey_active_sessions {n}");
        }

        family(
            &mut out,
            "latchkey_jwks_refresh_total",
            "counter",
            "Fetches of the jwt-jwks-uri key set by outcome.",
        );
        let _ = writeln!(
            out,
            "latchkey_jwks_refresh_total{{outcome=\"success\"}} {}",
            read(&self.jwks_success)
        );
        let _ = writeln!(
            out,
            "latchkey_jwks_refresh_total{{outcome=\"failure\"}} {}",
            read(&self.jwks_failure)
        );

        family(
            &mut out,
            "latchkey_http_requests_total",
            "counter",
            "Finished HTTP requests by method, route template and status.",
        );
        for ((method, route, status), v) in self
            .responses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "latchkey_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape_label(route),
                read(v)
            );
        }

        family(
            &mut out,
            "latchkey_http_request_duration_seconds",
            "histogram",
            "Time from receiving a request to having its response ready, by method and route template.",
        );
        for ((method, route), h) in self
            .latency
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape_label(route));
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
                let _ = writeln!(
                    out,
                    "latchkey_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                    read(bucket)
                );
            }
            let count = read(&h.count);
            let _ = writeln!(
                out,
                "latchkey_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "latchkey_http_request_duration_seconds_sum{{{labels}}} {}",
                read(&h.sum_nanos) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "latchkey_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_counters_are_labelled_by_method_outcome_and_reason() {
        let m = Metrics::default();
        m.login_succeeded("jwt");
        m.login_failed("jwt", "token_expired");
        m.login_failed("jwt", "token_expired");
        let _ = m.record_login::<()>("password", Err(crate::error::Error::InvalidCredentials));
        let text = m.render(Some(3));
        assert!(text.contains(
            "latchkey_logins_total{method=\"jwt\",outcome=\"success\",reason=\"none\"} 1\n"
        ));
        assert!(text.contains(
            "latchkey_logins_total{method=\"jwt\",outcome=\"failure\",reason=\"token_expired\"} 2\n"
        ));
        assert!(text.contains(
            "latchkey_logins_total{method=\"password\",outcome=\"failure\",reason=\"invalid_credentials\"} 1\n"
        ));
        assert!(text.contains(
            "latchkey_logins_total{method=\"password\",outcome=\"success\",reason=\"none\"} 0\n"
        ));
        assert!(text.contains("latchkey_active_sessions 3\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.request_finished("GET", "/api/user/{id}", 200, Duration::from_millis(3));
        m.request_finished("GET", "/api/user/{id}", 404, Duration::from_millis(300));
        let text = m.render(None);
        let labels = "method=\"GET\",route=\"/api/user/{id}\"";
        for (le, n) in [
            ("0.005", 1),
            ("0.25", 1),
            ("0.5", 2),
            ("10", 2),
            ("+Inf", 2),
        ] {
            let line = format!(
                "latchkey_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {n}\n"
            );
            assert!(text.contains(&line), "missing {line} in {text}");
        }
        assert!(text.contains(&format!(
            "latchkey_http_request_duration_seconds_count{{{labels}}} 2\n"
        )));
        assert!(text.contains(&format!(
            "latchkey_http_requests_total{{{labels},status=\"404\"}} 1\n"
        )));
        // Without a session count the gauge is declared but has no sample.
        assert!(text.contains("# TYPE latchkey_active_sessions gauge\n"));
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("latchkey_active_sessions"))
        );
    }

    #[test]
    fn jwks_counters_exist_from_the_start() {
        let m = Metrics::default();
        let text = m.render(None);
        assert!(text.contains("latchkey_jwks_refresh_total{outcome=\"success\"} 0\n"));
        assert!(text.contains("latchkey_jwks_refresh_total{outcome=\"failure\"} 0\n"));
        m.jwks_refreshed(false);
        assert!(
            m.render(None)
                .contains("latchkey_jwks_refresh_total{outcome=\"failure\"} 1\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn active_session_count_is_reused_for_a_while() {
        let m = Metrics::default();
        let t0 = Instant::now();
        assert_eq!(m.cached_active_sessions(t0), None);
        m.store_active_sessions(t0, 7);
        assert_eq!(
            m.cached_active_sessions(t0 + Duration::from_secs(1)),
            Some(7)
        );
        assert_eq!(m.cached_active_sessions(t0 + ACTIVE_SESSIONS_TTL), None);
    }
}
