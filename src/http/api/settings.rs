//! Settings over the registry (SPEC §6): secrets masked, env-fixed keys refused.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{Error, Result};
use crate::http::context::RequestContext;
use crate::http::extract::ApiJson;
use crate::settings::Actor;

fn actor(admin: &AdminUser, ctx: &RequestContext) -> Actor {
    Actor {
        user_id: Some(admin.0.user.id),
        ip: ctx.ip.clone(),
        request_id: Some(ctx.request_id.clone()),
    }
}

pub async fn list(State(state): State<AppState>, _admin: AdminUser) -> Json<Value> {
    Json(json!(state.settings.list()))
}

pub async fn get_one(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(key): Path<String>,
) -> Result<Json<Value>> {
    state
        .settings
        .view(&key)
        .map(|v| Json(json!(v)))
        .ok_or_else(|| Error::NotFound(format!("There is no setting named {key}.")))
}

#[derive(Deserialize)]
pub struct OneBody {
    value: Value,
}

pub async fn put_one(
    State(state): State<AppState>,
    admin: AdminUser,
    ctx: RequestContext,
    Path(key): Path<String>,
    ApiJson(body): ApiJson<OneBody>,
) -> Result<StatusCode> {
    state
        .settings
        .put(vec![(key, body.value)], &actor(&admin, &ctx))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn put_many(
    State(state): State<AppState>,
    admin: AdminUser,
    ctx: RequestContext,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<StatusCode> {
    state
        .settings
        .put(body.into_iter().collect(), &actor(&admin, &ctx))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// 32 random bytes as 64 hex characters ("Generate key").
pub async fn random_token(_admin: AdminUser) -> Json<Value> {
    Json(json!({"token": crate::auth::session::random_hex_token()}))
}
