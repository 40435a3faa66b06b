//! `GET /metrics` (Prometheus text format) and the middleware that times every request
//! by its route template.
//!
//! The endpoint is public, like `/api/health`: Prometheus scrapes anonymously, and what it
//! shows is counts only — no emails, user ids, IP addresses or raw paths
//! (docs/decisions.md, "Metrics are public").

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::metrics::{UNMATCHED_ROUTE, method_label};

/// Media type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus metrics (text exposition format 0.0.4); public, counts only.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, content_type = "text/plain; version=0.0.4; charset=utf-8", body = String,
        description = "`latchkey_http_requests_total`, `latchkey_http_request_duration_seconds`, `latchkey_logins_total`, `latchkey_active_sessions`, …")),
    extensions(("x-error-codes" = json!([])))
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = Instant::now();
    let active = match state.metrics.cached_active_sessions(now) {
        Some(n) => Some(n),
        None => match state.store.count_active_sessions(crate::clock::now()).await {
            Ok(n) => {
                state.metrics.store_active_sessions(now, n);
                Some(n)
            }
            Err(e) => {
                // The other families are still worth scraping; the gauge goes missing,
                // which an alert on `absent(latchkey_active_sessions)` can catch.
                tracing::warn!(error = %e, "metrics: cannot count active sessions");
                None
            }
        },
    };
    let mut res = state.metrics.render(active).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Middleware (added with `Router::layer`, so it runs after routing and sees the
/// `MatchedPath`): records each request's latency and status under its route template,
/// never the raw path, which would carry ids and make the label set unbounded.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let res = next.run(req).await;
    state.metrics.request_finished(
        method,
        route.as_deref().unwrap_or(UNMATCHED_ROUTE),
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}
