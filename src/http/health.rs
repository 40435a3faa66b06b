use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::Result;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ok")]
    status: &'static str,
    /// `sqlite` or `postgres`.
    database: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/api/health",
    tag = "health",
    responses((status = 200, body = Health)),
    extensions(("x-error-codes" = json!([])))
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers (503 `database_unavailable` otherwise).
#[utoipa::path(
    get,
    path = "/api/ready",
    tag = "health",
    responses((status = 200, body = Readiness)),
    extensions(("x-error-codes" = json!(["database_unavailable"])))
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>> {
    state.store.ping().await?;
    Ok(Json(Readiness {
        status: "ok",
        database: state.store.backend_name(),
    }))
}
