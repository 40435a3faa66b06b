//! Users: the current user and the admin endpoints of SPEC §6.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::session::clean_name;
use super::{UserView, int_param};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, password};
use crate::domain::email::Email;
use crate::error::{Error, Result};
use crate::http::audit;
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, ApiQuery, Id};
use crate::store::{NewUser, UserPatch, UserQuery};

/// The signed-in user, with their groups.
#[utoipa::path(
    get,
    path = "/api/user/current",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    responses((status = 200, body = UserView)),
    extensions(("x-error-codes" = json!(["unauthenticated", "database_unavailable"])))
)]
pub async fn current(current: CurrentUser) -> Result<axum::response::Response> {
    // Serialised once per cache entry: the entry's other requests send the same bytes.
    let body = match current.current_body.get() {
        Some(body) => body.clone(),
        None => {
            let view = UserView::new(&current.user, Some(&current.groups));
            let body = bytes::Bytes::from(serde_json::to_vec(&view).map_err(Error::internal)?);
            current.current_body.get_or_init(|| body).clone()
        }
    };
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ListQuery {
    query: Option<String>,
    include_deactivated: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

/// A page of users (without their groups).
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    data: Vec<UserView>,
    /// How many users match, over all pages.
    total: i64,
    limit: i64,
    offset: i64,
}

/// Users (admin), paged.
#[utoipa::path(
    get,
    path = "/api/user",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(
        ("query" = Option<String>, Query, description = "Part of an email or name."),
        ("include_deactivated" = Option<bool>, Query, description = "`true` or `1` includes deactivated users."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Default 50."),
        ("offset" = Option<i64>, Query, minimum = 0, description = "Default 0."),
    ),
    responses((status = 200, body = UserPage)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "database_unavailable"])))
)]
pub async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<UserPage>> {
    let limit = int_param("limit", q.limit.as_deref(), 1, 1000)?.unwrap_or(50);
    let offset = int_param("offset", q.offset.as_deref(), 0, i64::MAX)?.unwrap_or(0);
    let query = UserQuery {
        // Trimmed as the people page trims it: blanks around a name are not part of it.
        search: q.query.map(|s| s.trim().chars().take(200).collect()),
        include_inactive: matches!(q.include_deactivated.as_deref(), Some("true") | Some("1")),
        limit,
        offset,
    };
    let (users, total) = state.store.list_users(&query).await?;
    Ok(Json(UserPage {
        data: users.iter().map(|u| UserView::new(u, None)).collect(),
        total,
        limit,
        offset,
    }))
}

/// One user with their groups (admin).
#[utoipa::path(
    get,
    path = "/api/user/{id}",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    responses((status = 200, body = UserView)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "not_found", "database_unavailable"])))
)]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: AdminUser,
    Id(id): Id,
) -> Result<Json<UserView>> {
    let user = state
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?;
    let groups = state.store.user_groups(id).await?;
    Ok(Json(UserView::new(&user, Some(&groups))))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateBody {
    #[schema(example = "ada@example.com", format = "email")]
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    /// At least 8 characters (at most 1024 bytes); without one the user can sign in only
    /// through SSO.
    #[schema(min_length = 8)]
    password: Option<String>,
    #[serde(default)]
    is_superuser: bool,
}

/// Creates a user (admin).
#[utoipa::path(
    post,
    path = "/api/user",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    request_body = CreateBody,
    responses((status = 200, body = UserView)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "conflict", "body_too_large", "database_unavailable"])))
)]
pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Json<UserView>> {
    let email = Email::parse(&body.email)
        .map_err(|_| Error::validation("email", "Enter a valid email address."))?;
    let first_name = clean_name(body.first_name, "first_name")?;
    let last_name = clean_name(body.last_name, "last_name")?;
    let password_hash = match body.password {
        Some(p) => {
            password::check_new_password(&p)?;
            Some(state.passwords.hash(p).await?)
        }
        None => None,
    };
    let new = NewUser {
        email: email.as_str().to_owned(),
        first_name,
        last_name,
        password_hash,
        is_superuser: body.is_superuser,
        now: crate::clock::now(),
    };
    let mut row = audit(&ctx, "user_created", "success");
    row.actor_id = Some(admin.user.id);
    row.details = json!({"source": "admin", "is_superuser": body.is_superuser});
    let user = state.store.create_user(&new, &row).await?;
    let groups = state.store.user_groups(user.id).await?;
    Ok(Json(UserView::new(&user, Some(&groups))))
}

/// The fields `PUT /api/user/{id}` can change; absent fields stay as they are.
#[derive(ToSchema)]
#[allow(dead_code)] // The handler reads the body as a map, to tell absent from null.
pub struct UserUpdate {
    #[schema(nullable = false, format = "email")]
    email: Option<String>,
    /// Null or "" clears it.
    first_name: Option<String>,
    last_name: Option<String>,
    #[schema(nullable = false)]
    is_superuser: Option<bool>,
    #[schema(nullable = false)]
    is_active: Option<bool>,
}

/// A name field of a PUT body: absent (unchanged), null or "" (cleared), or a string.
fn name_field(body: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(clean_name(Some(s.clone()), key)?)),
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

/// Updates a user (admin). The last active administrator cannot be demoted or deactivated.
#[utoipa::path(
    put,
    path = "/api/user/{id}",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    request_body = UserUpdate,
    responses((status = 200, body = UserView)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "last_admin", "conflict", "body_too_large", "database_unavailable"])))
)]
pub async fn update(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<UserView>> {
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
        Some(Value::String(s)) => match Email::parse(s) {
            Ok(email) => Some(email.into_string()),
            // An address stored before the current rules, sent back unchanged (the admin page
            // sends every field): kept as it is, so the rest of the edit can be made.
            Err(_)
                if state
                    .store
                    .get_user(id)
                    .await?
                    .is_some_and(|u| u.email == *s) =>
            {
                None
            }
            Err(_) => return Err(Error::validation("email", "Enter a valid email address.")),
        },
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
) -> Result<Json<UserView>> {
    let mut row = audit(ctx, "user_updated", "success");
    row.actor_id = Some(admin.user.id);
    let user = state.store.update_user(id, &patch, &row).await?;
    let groups = state.store.user_groups(id).await?;
    Ok(Json(UserView::new(&user, Some(&groups))))
}

#[derive(Serialize, ToSchema)]
pub struct Success {
    #[schema(example = true)]
    success: bool,
}

/// Deactivates a user and ends their sessions (admin).
#[utoipa::path(
    delete,
    path = "/api/user/{id}",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    responses((status = 200, body = Success)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "last_admin", "database_unavailable"])))
)]
pub async fn deactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<Json<Success>> {
    let patch = UserPatch {
        is_active: Some(false),
        now: crate::clock::now(),
        ..Default::default()
    };
    let _user = update_with(&state, &admin, &ctx, id, patch).await?;
    Ok(Json(Success { success: true }))
}

/// Reactivates a user (admin).
#[utoipa::path(
    put,
    path = "/api/user/{id}/reactivate",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    responses((status = 200, body = UserView)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "database_unavailable"])))
)]
pub async fn reactivate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<Json<UserView>> {
    let patch = UserPatch {
        is_active: Some(true),
        now: crate::clock::now(),
        ..Default::default()
    };
    update_with(&state, &admin, &ctx, id, patch).await
}

#[derive(Deserialize, ToSchema)]
pub struct PasswordBody {
    /// At least 8 characters (at most 1024 bytes).
    #[schema(min_length = 8)]
    password: String,
}

/// Sets a user's password (admin).
#[utoipa::path(
    put,
    path = "/api/user/{id}/password",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    request_body = PasswordBody,
    responses((status = 204, description = "The password is set.")),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "body_too_large", "database_unavailable"])))
)]
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

/// How many sessions were ended.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Ends every session of a user (admin).
#[utoipa::path(
    delete,
    path = "/api/user/{id}/sessions",
    tag = "users",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The user's id.")),
    responses((status = 200, body = Revoked)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "database_unavailable"])))
)]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<Json<Revoked>> {
    let mut row = audit(&ctx, "session_revoked", "success");
    row.actor_id = Some(admin.user.id);
    let revoked = state.store.delete_user_sessions(id, &row).await?;
    Ok(Json(Revoked { revoked }))
}
