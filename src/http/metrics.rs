//! `GET /metrics` (Prometheus text format) and the route label under which
//! `context::finish` times every request.
//!
//! The endpoint is public, like `/api/health`: Prometheus scrapes anonymously, and what it
//! shows is counts only — no emails, user ids, IP addresses or raw paths
//! (docs/decisions.md, "Metrics are public").

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::metrics::UNMATCHED_ROUTE;

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

/// The label of a request's route: its matched template from the route table (never the
/// raw path, which would carry ids and make the label set unbounded), or
/// [`UNMATCHED_ROUTE`]. Static, so counting a request copies no string.
pub fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    static LABELS: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    let labels = LABELS.get_or_init(|| {
        crate::http::ROUTES
            .iter()
            .map(|r| (r.path, r.path))
            .collect()
    });
    matched
        .and_then(|m| labels.get(m.as_str()).copied())
        .unwrap_or(UNMATCHED_ROUTE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_labelled_by_its_route_template_from_the_table() {
        let label = |m: MatchedPath| async move { route_label(Some(&m)) };
        let mut app = axum::Router::new()
            .route("/api/user/{id}", axum::routing::get(label))
            .route("/not/in/the/table", axum::routing::get(label));
        for (uri, want) in [
            ("/api/user/17", "/api/user/{id}"),
            ("/not/in/the/table", UNMATCHED_ROUTE),
        ] {
            let req = axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            let res = tower::Service::call(&mut app, req).await.unwrap();
            let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
            assert_eq!(body, want, "{uri}");
        }
        assert_eq!(route_label(None), UNMATCHED_ROUTE);
    }
}
