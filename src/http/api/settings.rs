//! Settings over the registry (SPEC §6): secrets masked, env-fixed keys refused.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{Error, Result};
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, SettingKey};
use crate::http::openapi::Setting;
use crate::settings::Actor;

fn actor(admin: &AdminUser, ctx: &RequestContext) -> Actor {
    Actor {
        user_id: Some(admin.0.user.id),
        ip: ctx.ip.clone(),
        request_id: Some(ctx.request_id.clone()),
    }
}

/// Every setting with its effective value (secrets masked) (admin).
#[utoipa::path(
    get,
    path = "/api/setting",
    tag = "settings",
    security(("session_cookie" = []), ("session_header" = [])),
    responses((status = 200, body = Vec<Setting>)),
    extensions(("x-error-codes" = json!(["unauthenticated", "forbidden", "database_unavailable"])))
)]
pub async fn list(State(state): State<AppState>, _admin: AdminUser) -> Json<Value> {
    Json(json!(state.settings.list()))
}

/// One setting (admin).
#[utoipa::path(
    get,
    path = "/api/setting/{key}",
    tag = "settings",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("key" = String, Path, description = "A setting's key.")),
    responses((status = 200, body = Setting)),
    extensions(("x-error-codes" = json!(["unauthenticated", "forbidden", "not_found", "database_unavailable"])))
)]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: AdminUser,
    SettingKey(key): SettingKey,
) -> Result<Json<Value>> {
    state
        .settings
        .view(&key)
        .map(|v| Json(json!(v)))
        .ok_or_else(|| Error::NotFound(format!("There is no setting named {key}.")))
}

#[derive(Deserialize, ToSchema)]
pub struct OneBody {
    /// The new value (its type depends on the setting); null unsets it.
    #[schema(value_type = Value)]
    value: Value,
}

/// Changes one setting (admin). An unknown key or an invalid value is a 400 naming the key.
#[utoipa::path(
    put,
    path = "/api/setting/{key}",
    tag = "settings",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("key" = String, Path, description = "A setting's key.")),
    request_body = OneBody,
    responses((status = 204, description = "The setting is changed.")),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "lockout_risk", "setting_locked", "conflict", "body_too_large", "database_unavailable"])))
)]
pub async fn put_one(
    State(state): State<AppState>,
    admin: AdminUser,
    ctx: RequestContext,
    SettingKey(key): SettingKey,
    body: Result<ApiJson<OneBody>, Error>,
) -> Result<StatusCode> {
    // A fault inside the value (e.g. a NUL in a mapping's name) names the setting, as every
    // other invalid value does (SPEC §6).
    let ApiJson(body) = body.map_err(|e| match e {
        Error::Validation { field, message } if field.starts_with("value") => {
            Error::validation(key.clone(), message)
        }
        other => other,
    })?;
    state
        .settings
        .put(vec![(key, body.value)], &actor(&admin, &ctx))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes several settings at once, all or none (admin).
#[utoipa::path(
    put,
    path = "/api/setting",
    tag = "settings",
    security(("session_cookie" = []), ("session_header" = [])),
    request_body(content = Object, description = "`{\"<key>\": <value>, …}`"),
    responses((status = 204, description = "The settings are changed.")),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "lockout_risk", "setting_locked", "conflict", "body_too_large", "database_unavailable"])))
)]
pub async fn put_many(
    State(state): State<AppState>,
    admin: AdminUser,
    ctx: RequestContext,
    body: Result<ApiJson<Map<String, Value>>, Error>,
) -> Result<StatusCode> {
    // A fault inside a value names its setting: `jwt-group-mappings.eng[0]` → the key.
    let ApiJson(body) = body.map_err(|e| match e {
        Error::Validation { field, message } if field != "body" => {
            let key = field.split(['.', '[']).next().unwrap_or(&field).to_owned();
            Error::validation(key, message)
        }
        other => other,
    })?;
    state
        .settings
        .put(body.into_iter().collect(), &actor(&admin, &ctx))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct RandomToken {
    /// 64 hex characters.
    #[schema(pattern = "^[0-9a-f]{64}$")]
    token: String,
}

/// 32 random bytes as 64 hex characters ("Generate key") (admin).
#[utoipa::path(
    get,
    path = "/api/util/random_token",
    tag = "settings",
    security(("session_cookie" = []), ("session_header" = [])),
    responses((status = 200, body = RandomToken)),
    extensions(("x-error-codes" = json!(["unauthenticated", "forbidden", "database_unavailable"])))
)]
pub async fn random_token(_admin: AdminUser) -> Json<RandomToken> {
    Json(RandomToken {
        token: crate::auth::session::random_hex_token(),
    })
}
