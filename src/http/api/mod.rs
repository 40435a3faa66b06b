//! JSON API handlers (SPEC §6).

pub mod audit;
pub mod groups;
pub mod session;
pub mod settings;
pub mod users;

use serde_json::{Value, json};

use crate::store::{Group, User};

/// The user as the API shows it; `groups` is included where the caller has them.
pub fn user_json(u: &User, groups: Option<&[Group]>) -> Value {
    let mut v = json!({
        "id": u.id,
        "email": u.email,
        "first_name": u.first_name,
        "last_name": u.last_name,
        "common_name": u.display_name(),
        "is_superuser": u.is_superuser,
        "is_active": u.is_active,
        "sso_source": u.sso_source,
        "has_password": u.has_password,
        "login_attributes": u.login_attributes,
        "created_at": crate::clock::rfc3339(u.created_at),
        "updated_at": crate::clock::rfc3339(u.updated_at),
        "last_login": u.last_login.map(crate::clock::rfc3339),
    });
    if let Some(groups) = groups {
        v["group_ids"] = json!(groups.iter().map(|g| g.id).collect::<Vec<_>>());
        v["groups"] = json!(groups);
    }
    v
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
