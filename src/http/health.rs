use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::error::Result;

/// Liveness: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the database answers (503 `database_unavailable` otherwise).
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>> {
    state.store.ping().await?;
    Ok(Json(
        json!({"status": "ok", "database": state.store.backend_name()}),
    ))
}
