//! Groups and memberships (SPEC §6).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{Error, Result};
use crate::http::api::int_param;
use crate::http::audit;
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, ApiQuery, Id};
use crate::http::openapi::{GroupMember, GroupRef, GroupSummary};

#[derive(Deserialize, ToSchema)]
pub struct GroupBody {
    /// 1 to 255 characters, unique.
    #[schema(example = "Engineering", min_length = 1, max_length = 255)]
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

/// Every group with its member count (admin).
#[utoipa::path(
    get,
    path = "/api/permissions/group",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    responses((status = 200, body = Vec<GroupSummary>)),
    extensions(("x-error-codes" = json!(["unauthenticated", "forbidden", "database_unavailable"])))
)]
pub async fn list(State(state): State<AppState>, _admin: AdminUser) -> Result<Json<Value>> {
    Ok(Json(json!(state.store.list_groups().await?)))
}

/// A group and a page of its members.
#[derive(Serialize, ToSchema)]
pub struct GroupDetail {
    id: i64,
    name: String,
    /// How many members the group has, over all pages.
    member_count: i64,
    /// Members in the order they joined (by membership id).
    #[schema(value_type = Vec<GroupMember>)]
    members: Vec<crate::store::GroupMember>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<i64>,
}

#[derive(Deserialize)]
pub struct MembersQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// The most members one response lists, and the default.
const MEMBERS_PER_PAGE: i64 = 1000;

/// A group with its members and their membership ids (admin), paged with `after`: a group
/// of a million people is a thousand requests, not one response of a hundred megabytes.
#[utoipa::path(
    get,
    path = "/api/permissions/group/{id}",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The group's id."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Default 1000."),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only memberships with a larger id: the previous page's `next_after`."),
    ),
    responses((status = 200, body = GroupDetail)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "not_found", "database_unavailable"])))
)]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: AdminUser,
    Id(id): Id,
    ApiQuery(q): ApiQuery<MembersQuery>,
) -> Result<Json<GroupDetail>> {
    let limit =
        int_param("limit", q.limit.as_deref(), 1, MEMBERS_PER_PAGE)?.unwrap_or(MEMBERS_PER_PAGE);
    let after = int_param("after", q.after.as_deref(), 0, i64::MAX)?.unwrap_or(0);
    let group = state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| Error::not_found("Group"))?;
    let (members, next_after) = state.store.group_members(id, after, limit).await?;
    Ok(Json(GroupDetail {
        id: group.id,
        name: group.name,
        member_count: state.store.count_group_members(id).await?,
        members,
        next_after,
    }))
}

/// Creates a group (admin).
#[utoipa::path(
    post,
    path = "/api/permissions/group",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    request_body = GroupBody,
    responses((status = 200, body = GroupRef)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "conflict", "body_too_large", "database_unavailable"])))
)]
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

/// Renames a group (admin); the built-in groups cannot be renamed.
#[utoipa::path(
    put,
    path = "/api/permissions/group/{id}",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The group's id.")),
    request_body = GroupBody,
    responses((status = 200, body = GroupRef)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "conflict", "body_too_large", "database_unavailable"])))
)]
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

/// Deletes a group (admin); it also leaves `jwt-group-mappings`. The built-in groups
/// cannot be deleted.
#[utoipa::path(
    delete,
    path = "/api/permissions/group/{id}",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The group's id.")),
    responses((status = 204, description = "The group is deleted.")),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "database_unavailable"])))
)]
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

#[derive(Deserialize, ToSchema)]
pub struct MembershipBody {
    group_id: i64,
    user_id: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Membership {
    membership_id: i64,
    group_id: i64,
    user_id: i64,
}

/// Adds a user to a group (admin). Adding to Administrators makes the user an admin.
#[utoipa::path(
    post,
    path = "/api/permissions/membership",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    request_body = MembershipBody,
    responses((status = 200, body = Membership)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "conflict", "body_too_large", "database_unavailable"])))
)]
pub async fn add_member(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ctx: RequestContext,
    ApiJson(body): ApiJson<MembershipBody>,
) -> Result<Json<Membership>> {
    let mut row = audit(&ctx, "group_added", "success");
    row.actor_id = Some(admin.user.id);
    let id = state
        .store
        .add_membership(body.group_id, body.user_id, &row)
        .await?;
    Ok(Json(Membership {
        membership_id: id,
        group_id: body.group_id,
        user_id: body.user_id,
    }))
}

/// Removes a membership (admin). The last active administrator stays in Administrators.
#[utoipa::path(
    delete,
    path = "/api/permissions/membership/{id}",
    tag = "groups",
    security(("session_cookie" = []), ("session_header" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The membership's id.")),
    responses((status = 204, description = "The membership is removed.")),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "not_found", "last_admin", "database_unavailable"])))
)]
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
