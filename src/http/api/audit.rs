//! The audit log (SPEC §6): newest first, filters, keyset paging with `before`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

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

pub async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<Query>,
) -> Result<Json<Value>> {
    let limit = int_param("limit", q.limit.as_deref(), 1, 500)?.unwrap_or(50);
    let query = AuditQuery {
        kind: q.kind.filter(|s| !s.is_empty()),
        outcome: q.outcome.filter(|s| !s.is_empty()),
        user_id: int_param("user_id", q.user_id.as_deref(), 1, i64::MAX)?,
        before: int_param("before", q.before.as_deref(), 1, i64::MAX)?,
        limit: limit + 1,
    };
    let mut events = state.store.list_audit(&query).await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_before = if more {
        events.last().map(|e| e.id)
    } else {
        None
    };
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "at": crate::clock::rfc3339(e.at),
                "kind": e.kind,
                "outcome": e.outcome,
                "reason": e.reason,
                "actor_id": e.actor_id,
                "user_id": e.user_id,
                "email": e.email,
                "ip": e.ip,
                "request_id": e.request_id,
                "details": serde_json::from_str::<Value>(&e.details).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({"events": events, "next_before": next_before})))
}
