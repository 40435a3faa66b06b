//! JSON API handlers (SPEC §6).

pub mod audit;
pub mod groups;
pub mod session;
pub mod settings;
pub mod users;

use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::http::openapi::GroupRef;
use crate::store::{Group, User};

/// A user as the API shows it (SPEC §6). `group_ids` and `groups` are there where the
/// caller has them (one user), not in lists.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// "First Last", or the email when both names are empty.
    pub common_name: String,
    pub is_superuser: bool,
    pub is_active: bool,
    /// `"jwt"` for users created by SSO, null for others.
    pub sso_source: Option<String>,
    pub has_password: bool,
    /// The non-registered claims of the last SSO login.
    #[schema(value_type = Object)]
    pub login_attributes: Map<String, Value>,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
    pub last_login: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub group_ids: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<GroupRef>>, nullable = false)]
    pub groups: Option<Vec<Group>>,
}

impl UserView {
    pub fn new(u: &User, groups: Option<&[Group]>) -> UserView {
        UserView {
            id: u.id,
            email: u.email.clone(),
            first_name: u.first_name.clone(),
            last_name: u.last_name.clone(),
            common_name: u.display_name(),
            is_superuser: u.is_superuser,
            is_active: u.is_active,
            sso_source: u.sso_source.clone(),
            has_password: u.has_password,
            login_attributes: u.login_attributes.clone(),
            created_at: crate::clock::rfc3339(u.created_at),
            updated_at: crate::clock::rfc3339(u.updated_at),
            last_login: u.last_login.map(crate::clock::rfc3339),
            group_ids: groups.map(|gs| gs.iter().map(|g| g.id).collect()),
            groups: groups.map(<[Group]>::to_vec),
        }
    }
}

/// The user as the API shows it; `groups` is included where the caller has them.
pub fn user_json(u: &User, groups: Option<&[Group]>) -> Value {
    json!(UserView::new(u, groups))
}

/// A whole-number query parameter within bounds.
pub fn int_param(
    name: &str,
    raw: Option<&str>,
    min: i64,
    max: i64,
) -> crate::error::Result<Option<i64>> {
    match raw {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                crate::error::Error::validation(
                    name,
                    format!("{name} must be a whole number from {min} to {max}."),
                )
            }),
    }
}
