//! Groups and memberships (SPEC §6).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{Error, Result};
use crate::http::audit;
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, Id};

#[derive(Deserialize)]
pub struct GroupBody {
    name: String,
}

fn group_name(raw: &str) -> Result<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(Error::validation(
            "name",
            "A group name must have 1 to 255 characters.",
        ));
    }
    Ok(name.to_owned())
}

pub async fn list(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<Value>> {
    Ok(Json(json!(state.store.list_groups().await?)))
}

pub async fn get_one(
    State(state): State<AppState>,
    _admin: AdminUser,
    Id(id): Id,
) -> Result<Json<Value>> {
    let group = state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| Error::not_found("Group"))?;
    let members = state.store.group_members(id).await?;
    Ok(Json(
        json!({"id": group.id, "name": group.name, "members": members}),
    ))
}

pub async fn create(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    ApiJson(body): ApiJson<GroupBody>,
) -> Result<Json<Value>> {
    let name = group_name(&body.name)?;
    let mut row = audit(&ctx, "group_created", "success");
    row.actor_id = Some(admin.user.id);
    Ok(Json(json!(state.store.create_group(&name, &row).await?)))
}

pub async fn rename(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
    ApiJson(body): ApiJson<GroupBody>,
) -> Result<Json<Value>> {
    let name = group_name(&body.name)?;
    let mut row = audit(&ctx, "group_renamed", "success");
    row.actor_id = Some(admin.user.id);
    Ok(Json(json!(
        state.store.rename_group(id, &name, &row).await?
    )))
}

pub async fn remove(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<StatusCode> {
    let mut row = audit(&ctx, "group_deleted", "success");
    row.actor_id = Some(admin.user.id);
    state.store.delete_group(id, &row).await?;
    state.settings.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub struct MembershipBody {
    group_id: i64,
    user_id: i64,
}

pub async fn add_member(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    ApiJson(body): ApiJson<MembershipBody>,
) -> Result<Json<Value>> {
    let mut row = audit(&ctx, "group_added", "success");
    row.actor_id = Some(admin.user.id);
    let id = state
        .store
        .add_membership(body.group_id, body.user_id, &row)
        .await?;
    Ok(Json(
        json!({"membership_id": id, "group_id": body.group_id, "user_id": body.user_id}),
    ))
}

pub async fn remove_member(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    Id(id): Id,
) -> Result<StatusCode> {
    let mut row = audit(&ctx, "group_removed", "success");
    row.actor_id = Some(admin.user.id);
    state.store.delete_membership(id, &row).await?;
    Ok(StatusCode::NO_CONTENT)
}
