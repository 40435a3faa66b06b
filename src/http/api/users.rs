//! Users: the current user and the admin endpoints of SPEC §6.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::session::clean_name;
use super::{int_param, user_json};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, password};
use crate::domain::email::Email;
use crate::error::{Error, Result};
use crate::http::audit;
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, ApiQuery, Id};
use crate::store::{NewUser, UserPatch, UserQuery};

pub async fn current(State(state): State<AppState>, current: CurrentUser) -> Result<Json<Value>> {
    let groups = state.store.user_groups(current.user.id).await?;
    Ok(Json(user_json(&current.user, Some(&groups))))
}

#[derive(Deserialize)]
pub struct ListQuery {
    query: Option<String>,
    include_deactivated: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>> {
    let limit = int_param("limit", q.limit.as_deref(), 1, 1000)?.unwrap_or(50);
    let offset = int_param("offset", q.offset.as_deref(), 0, i64::MAX)?.unwrap_or(0);
    let query = UserQuery {
        search: q.query.map(|s| s.chars().take(200).collect()),
        include_inactive: matches!(q.include_deactivated.as_deref(), Some("true") | Some("1")),
        limit,
        offset,
    };
    let (users, total) = state.store.list_users(&query).await?;
    let data: Vec<Value> = users.iter().map(|u| user_json(u, None)).collect();
    Ok(Json(
        json!({"data": data, "total": total, "limit": limit, "offset": offset}),
    ))
}

pub async fn get_one(
    State(state): State<AppState>,
    _admin: AdminUser,
    Id(id): Id,
) -> Result<Json<Value>> {
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?;
    let groups = state.store.user_groups(id).await?;
    Ok(Json(user_json(&user, Some(&groups))))
}

#[derive(Deserialize)]
pub struct CreateBody {
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    password: Option<String>,
    #[serde(default)]
    is_superuser: bool,
}

pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Json<Value>> {
    let email = Email::parse(&body.email)
        .map_err(|_| Error::validation("email", "Enter a valid email address."))?;
    let password_hash = match body.password {
        Some(p) => {
            password::check_new_password(&p)?;
            Some(state.passwords.hash(p).await?)
        }
        None => None,
    };
    let new = NewUser {
        email: email.as_str().to_owned(),
        first_name: clean_name(body.first_name),
        last_name: clean_name(body.last_name),
        password_hash,
        is_superuser: body.is_superuser,
        now: crate::clock::now(),
    };
    let mut row = audit(&ctx, "user_created", "success");
    row.actor_id = Some(admin.user.id);
    row.details = json!({"source": "admin", "is_superuser": body.is_superuser});
    let user = state.store.create_user(&new, &row).await?;
    let groups = state.store.user_groups(user.id).await?;
    Ok(Json(user_json(&user, Some(&groups))))
}

/// A name field of a PUT body: absent (unchanged), null or "" (cleared), or a string.
fn name_field(body: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(clean_name(Some(s.clone())))),
        Some(_) => Err(Error::validation(
            key,
            format!("{key} must be a string or null."),
        )),
    }
}

fn bool_field(body: &Map<String, Value>, key: &str) -> Result<Option<bool>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Error::validation(
            key,
            format!("{key} must be true or false."),
        )),
    }
}

pub async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    for key in body.keys() {
        if ![
            "email",
            "first_name",
            "last_name",
            "is_superuser",
            "is_active",
        ]
        .contains(&key.as_str())
        {
            return Err(Error::validation(
                key.as_str(),
                format!("{key} cannot be changed here."),
            ));
        }
    }
    let email = match body.get("email") {
        None => None,
        Some(Value::String(s)) => Some(
            Email::parse(s)
                .map_err(|_| Error::validation("email", "Enter a valid email address."))?
                .as_str()
                .to_owned(),
        ),
        Some(_) => return Err(Error::validation("email", "email must be a string.")),
    };
    let patch = UserPatch {
        email,
        first_name: name_field(&body, "first_name")?,
        last_name: name_field(&body, "last_name")?,
        is_superuser: bool_field(&body, "is_superuser")?,
        is_active: bool_field(&body, "is_active")?,
        now: crate::clock::now(),
    };
    update_with(&state, &admin, &ctx, id, patch).await
}

async fn update_with(
    state: &AppState,
    admin: &CurrentUser,
    ctx: &RequestContext,
    id: i64,
    patch: UserPatch,
) -> Result<Json<Value>> {
    let mut row = audit(ctx, "user_updated", "success");
    row.actor_id = Some(admin.user.id);
    let user = state.store.update_user(id, &patch, &row).await?;
    let groups = state.store.user_groups(id).await?;
    Ok(Json(user_json(&user, Some(&groups))))
}

pub async fn deactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<Json<Value>> {
    let patch = UserPatch {
        is_active: Some(false),
        now: crate::clock::now(),
        ..Default::default()
    };
    let _user = update_with(&state, &admin, &ctx, id, patch).await?;
    Ok(Json(json!({"success": true})))
}

pub async fn reactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<Json<Value>> {
    let patch = UserPatch {
        is_active: Some(true),
        now: crate::clock::now(),
        ..Default::default()
    };
    update_with(&state, &admin, &ctx, id, patch).await
}

#[derive(Deserialize)]
pub struct PasswordBody {
    password: String,
}

pub async fn set_password(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<StatusCode> {
    password::check_new_password(&body.password)?;
    let hash = state.passwords.hash(body.password).await?;
    let mut row = audit(&ctx, "user_updated", "success");
    row.actor_id = Some(admin.user.id);
    row.details = json!({"password": "changed"});
    state.store.set_password_hash(id, &hash, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_sessions(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<Json<Value>> {
    let mut row = audit(&ctx, "session_revoked", "success");
    row.actor_id = Some(admin.user.id);
    let n = state.store.delete_user_sessions(id, &row).await?;
    Ok(Json(json!({"revoked": n})))
}
