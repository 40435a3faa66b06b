//! The audit log (SPEC §6): newest first, filters, keyset paging with `before`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::int_param;
use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::Result;
use crate::http::extract::ApiQuery;
use crate::store::AuditQuery;

#[derive(Deserialize)]
pub struct Query {
    kind: Option<String>,
    outcome: Option<String>,
    user_id: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    events: Vec<AuditEvent>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next_before: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEvent {
    id: i64,
    /// RFC 3339, UTC.
    at: String,
    /// `sso_login`, `password_login`, `logout`, `user_created`, `user_updated`,
    /// `group_added`, `group_removed`, `setting_changed`, `session_revoked`, …
    kind: String,
    /// `success`, `failure` or `skipped`.
    outcome: String,
    /// The error code of a failure, or why something was skipped.
    reason: Option<String>,
    actor_id: Option<i64>,
    user_id: Option<i64>,
    email: Option<String>,
    ip: Option<String>,
    /// The `X-Request-Id` of the response that wrote it.
    request_id: Option<String>,
    #[schema(value_type = Value)]
    details: Value,
}

/// The audit log, newest first, paged with `before` (admin).
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    security(("session_cookie" = []), ("session_header" = [])),
    params(
        ("kind" = Option<String>, Query, description = "Only events of this kind."),
        ("outcome" = Option<String>, Query, description = "`success`, `failure` or `skipped`; anything else is refused."),
        ("user_id" = Option<i64>, Query, minimum = 1, description = "Only events about this user."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only events older than this id (exclusive)."),
    ),
    responses((status = 200, body = AuditPage)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "database_unavailable"])))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<AuditPage>> {
    let limit = int_param("limit", q.limit.as_deref(), 1, 500)?.unwrap_or(50);
    let query = AuditQuery {
        kind: q.kind.filter(|s| !s.is_empty()),
        outcome: match q.outcome.as_deref() {
            None | Some("") => None,
            Some(o @ ("success" | "failure" | "skipped")) => Some(o.to_owned()),
            Some(_) => {
                return Err(crate::error::Error::validation(
                    "outcome",
                    "outcome must be success, failure or skipped.",
                ));
            }
        },
        user_id: int_param("user_id", q.user_id.as_deref(), 1, i64::MAX)?,
        before: int_param("before", q.before.as_deref(), 1, i64::MAX)?,
        limit,
    };
    let (events, next_before) = state.store.list_audit(&query).await?;
    let events = events
        .into_iter()
        .map(|e| AuditEvent {
            id: e.id,
            at: crate::clock::rfc3339(e.at),
            kind: e.kind,
            outcome: e.outcome,
            reason: e.reason,
            actor_id: e.actor_id,
            user_id: e.user_id,
            email: e.email,
            ip: e.ip,
            request_id: e.request_id,
            details: serde_json::from_str::<Value>(&e.details).unwrap_or(Value::Null),
        })
        .collect();
    Ok(Json(AuditPage {
        events,
        next_before,
    }))
}
