//! `GET /metrics` (Prometheus text format), on both backends.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::helpers::*;
use crate::support::*;

async fn scrape(app: &TestApp) -> String {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(&res, "content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(header(&res, "cache-control"), Some("no-store"));
    res.text().await.unwrap()
}

/// The value of one exact series (`name{labels}` as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn logins(text: &str, method: &str, outcome: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!(
            "latchkey_logins_total{{method=\"{method}\",outcome=\"{outcome}\",reason=\"{reason}\"}}"
        ),
    )
    .unwrap_or(0.0)
}

both_backends! {
    async fn metrics_count_logins_by_method_outcome_and_reason(mut app) {
        let before = scrape(&app).await;
        assert_eq!(sample(&before, "latchkey_logins_total{method=\"jwt\",outcome=\"success\",reason=\"none\"}"), Some(0.0));
        assert_eq!(sample(&before, "latchkey_logins_total{method=\"password\",outcome=\"success\",reason=\"none\"}"), Some(0.0));

        app.login_admin().await;
        let res = app.client.post(app.url("/api/session"))
            .json(&json!({"username": ADMIN_EMAIL, "password": "wrong-password"}))
            .send().await.unwrap();
        assert_error(res, 401, "invalid_credentials").await;
        // The sign-in form counts as a password login too.
        let res = app.client.post(app.url("/auth/login"))
            .header("origin", app.base.clone())
            .form(&[("username", ADMIN_EMAIL), ("password", "still-wrong"), ("redirect", "")])
            .send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

        app.configure_jwt().await;
        let res = app.sso_callback(&sign(login_claims("sso@example.com")), None).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        let expired = sign(json!({"email": "sso@example.com", "exp": now() - 3600}));
        assert_error(app.sso_callback(&expired, None).await, 401, "token_expired").await;
        let res = app.sso_callback(&sign(login_claims("sso@example.com")), Some("https://evil.example/")).await;
        assert_error(res, 400, "invalid_redirect").await;
        let token = sign(login_claims("again@example.com"));
        assert_eq!(app.sso_callback(&token, None).await.status(), StatusCode::FOUND);
        assert_error(app.sso_callback(&token, None).await, 401, "token_replayed").await;

        let text = scrape(&app).await;
        assert_eq!(logins(&text, "password", "success", "none"), 1.0);
        assert_eq!(logins(&text, "password", "failure", "invalid_credentials"), 2.0);
        assert_eq!(logins(&text, "jwt", "success", "none"), 2.0);
        assert_eq!(logins(&text, "jwt", "failure", "token_expired"), 1.0);
        assert_eq!(logins(&text, "jwt", "failure", "invalid_redirect"), 1.0);
        assert_eq!(logins(&text, "jwt", "failure", "token_replayed"), 1.0);
        // Counts only: nothing personal.
        for secret in ["example.com", ADMIN_PASSWORD, "wrong-password"] {
            assert!(!text.contains(secret), "{secret} in the metrics");
        }
    }

    async fn metrics_time_requests_by_route_template(mut app) {
        app.login_admin().await;
        for id in [123_456, 654_321] {
            let res = app.admin(Method::GET, &format!("/api/user/{id}")).send().await.unwrap();
            assert_error(res, 404, "not_found").await;
        }
        let res = app.client.get(app.url("/no/such/page/987654")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);

        let text = scrape(&app).await;
        let labels = "method=\"GET\",route=\"/api/user/{id}\"";
        assert_eq!(sample(&text, &format!("latchkey_http_request_duration_seconds_count{{{labels}}}")), Some(2.0));
        assert_eq!(sample(&text, &format!("latchkey_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}}")), Some(2.0));
        assert!(sample(&text, &format!("latchkey_http_request_duration_seconds_sum{{{labels}}}")).is_some());
        assert_eq!(sample(&text, &format!("latchkey_http_requests_total{{{labels},status=\"404\"}}")), Some(2.0));
        assert_eq!(sample(&text, "latchkey_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}"), Some(1.0));
        assert_eq!(sample(&text, "latchkey_http_requests_total{method=\"POST\",route=\"/api/session\",status=\"200\"}"), Some(1.0));
        // Never the raw path.
        for raw in ["123456", "654321", "987654"] {
            assert!(!text.contains(raw), "raw path {raw} in the metrics");
        }
        // Buckets are cumulative and end at the count.
        let mut last = 0.0;
        for le in ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"] {
            let n = sample(&text, &format!("latchkey_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}")).expect(le);
            assert!(n >= last);
            last = n;
        }
    }

    async fn metrics_report_active_sessions_and_declare_jwks_counters(mut app) {
        app.login_admin().await;
        app.create_user("s@example.com", Some("password123"), false).await;
        app.login("s@example.com", "password123").await;
        app.login("s@example.com", "password123").await;
        let text = scrape(&app).await;
        assert_eq!(sample(&text, "latchkey_active_sessions"), Some(3.0));
        assert_eq!(app.count("sessions").await, 3);
        assert!(text.contains("# TYPE latchkey_active_sessions gauge\n"));
        assert!(text.contains("# TYPE latchkey_jwks_refresh_total counter\n"));
        assert_eq!(sample(&text, "latchkey_jwks_refresh_total{outcome=\"success\"}"), Some(0.0));
        assert_eq!(sample(&text, "latchkey_jwks_refresh_total{outcome=\"failure\"}"), Some(0.0));
        assert!(text.contains("# TYPE latchkey_http_request_duration_seconds histogram\n"));
        assert!(text.contains("latchkey_build_info{version=\""));
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        // Anonymous, like Prometheus scrapes.
        let res = app.client.get(app.url("/metrics")).header("accept", "text/html").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}
