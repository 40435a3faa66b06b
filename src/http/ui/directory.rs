//! Admin → People, Groups and the Audit log: lists rendered from the store (search, paging
//! and filters are plain GET forms); changes go through the JSON API from
//! assets/people.js and assets/groups.js.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{AdminPage, Chrome, render, script_json, when};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::extract::{ApiQuery, Id};
use crate::store::{ADMINISTRATORS_GROUP_ID, ALL_USERS_GROUP_ID, AuditQuery, UserQuery};

const PEOPLE_PER_PAGE: i64 = 25;
const EVENTS_PER_PAGE: i64 = 50;
const MEMBERS_SHOWN: i64 = 500;

fn query_string(pairs: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

fn href(path: &str, pairs: &[(&str, String)]) -> String {
    let q = query_string(pairs);
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

struct PersonRow {
    id: i64,
    name: String,
    email: String,
    is_admin: bool,
    is_active: bool,
    is_me: bool,
    sso: bool,
    has_password: bool,
    last_login: String,
}

#[derive(Template)]
#[template(path = "admin/people.html")]
struct PeoplePage {
    chrome: Chrome,
    query: String,
    include_inactive: bool,
    rows: Vec<PersonRow>,
    showing: String,
    prev_href: Option<String>,
    next_href: Option<String>,
    /// The list's first page, when this one is past its end.
    past_end_href: Option<String>,
}

#[derive(Deserialize)]
pub struct PeopleQuery {
    q: Option<String>,
    inactive: Option<String>,
    page: Option<String>,
}

pub async fn people_page(
    State(state): State<AppState>,
    AdminPage(admin): AdminPage,
    ApiQuery(params): ApiQuery<PeopleQuery>,
) -> Result<Response> {
    let query: String = params
        .q
        .unwrap_or_default()
        .trim()
        .chars()
        .take(200)
        .collect();
    let include_inactive = params.inactive.is_some_and(|v| !v.is_empty());
    let page =
        crate::http::api::int_param("page", params.page.as_deref(), 1, 1_000_000)?.unwrap_or(1);
    let (users, total) = state
        .store
        .list_users(&UserQuery {
            search: Some(query.clone()).filter(|q| !q.is_empty()),
            include_inactive,
            limit: PEOPLE_PER_PAGE,
            offset: (page - 1) * PEOPLE_PER_PAGE,
        })
        .await?;
    let last_page = (total + PEOPLE_PER_PAGE - 1) / PEOPLE_PER_PAGE;
    let first = (page - 1) * PEOPLE_PER_PAGE + 1;
    let last = first + users.len() as i64 - 1;
    let showing = match total {
        0 => "No one to show.".to_owned(),
        1 if users.is_empty() => "1 person; this page is past the end.".to_owned(),
        1 => "1 person.".to_owned(),
        _ if users.is_empty() => format!("{total} people; this page is past the end."),
        _ => format!("Showing {first}–{last} of {total} people."),
    };
    let link = |p: i64| {
        href(
            "/admin/people",
            &[
                ("q", query.clone()),
                (
                    "inactive",
                    if include_inactive {
                        "1".into()
                    } else {
                        String::new()
                    },
                ),
                ("page", if p > 1 { p.to_string() } else { String::new() }),
            ],
        )
    };
    let rows = users
        .iter()
        .map(|u| PersonRow {
            id: u.id,
            name: u.display_name(),
            email: u.email.clone(),
            is_admin: u.is_superuser,
            is_active: u.is_active,
            is_me: u.id == admin.user.id,
            sso: u.sso_source.is_some(),
            has_password: u.has_password,
            last_login: when(u.last_login),
        })
        .collect();
    render(&PeoplePage {
        chrome: Chrome::admin("People", "people", &admin, vec!["lib.js", "people.js"]),
        // From past the end, "Previous" goes to the last page that has anyone.
        prev_href: (page > 1).then(|| link((page - 1).min(last_page.max(1)))),
        next_href: (page * PEOPLE_PER_PAGE < total).then(|| link(page + 1)),
        past_end_href: (total > 0 && users.is_empty()).then(|| link(1)),
        query,
        include_inactive,
        rows,
        showing,
    })
}

/// The JWT group names that map to each group, from one pass over the mappings (the groups
/// page lists every group: a pass per group would cost groups × mappings).
fn mapped_from_by_group(state: &AppState) -> HashMap<i64, Vec<String>> {
    let mut by_group: HashMap<i64, Vec<String>> = HashMap::new();
    for (name, ids) in &state.settings.current().group_mappings.0 {
        // A name's ids are distinct (`GroupMappings::parse`), so each name comes once.
        for id in ids {
            by_group.entry(*id).or_default().push(name.clone());
        }
    }
    by_group
}

/// The JWT group names that map to a group.
fn mapped_from(state: &AppState, group_id: i64) -> Vec<String> {
    state
        .settings
        .current()
        .group_mappings
        .0
        .iter()
        .filter(|(_, ids)| ids.contains(&group_id))
        .map(|(name, _)| name.clone())
        .collect()
}

struct GroupRow {
    id: i64,
    name: String,
    members: i64,
    builtin: bool,
    mapped_from: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct GroupsPage {
    chrome: Chrome,
    groups: Vec<GroupRow>,
}

pub async fn groups_page(
    State(state): State<AppState>,
    AdminPage(admin): AdminPage,
) -> Result<Response> {
    let mut mappings = mapped_from_by_group(&state);
    let groups = state
        .store
        .list_groups()
        .await?
        .into_iter()
        .map(|g| GroupRow {
            builtin: g.id == ALL_USERS_GROUP_ID || g.id == ADMINISTRATORS_GROUP_ID,
            mapped_from: mappings.remove(&g.id).unwrap_or_default(),
            id: g.id,
            name: g.name,
            members: g.member_count,
        })
        .collect();
    render(&GroupsPage {
        chrome: Chrome::admin("Groups", "groups", &admin, vec!["lib.js", "groups.js"]),
        groups,
    })
}

struct MemberRow {
    membership_id: i64,
    name: String,
    email: String,
    is_active: bool,
}

#[derive(Template)]
#[template(path = "admin/group.html")]
struct GroupPage {
    chrome: Chrome,
    id: i64,
    name: String,
    builtin: bool,
    member_count: i64,
    members: Vec<MemberRow>,
    /// How much of the group this page shows, when it is not all of it.
    showing: Option<String>,
    first_href: Option<String>,
    next_href: Option<String>,
    mapped_from: Vec<String>,
    group_sync: bool,
    page_data: String,
}

#[derive(Deserialize)]
pub struct GroupQuery {
    after: Option<String>,
}

pub async fn group_page(
    State(state): State<AppState>,
    AdminPage(admin): AdminPage,
    Id(id): Id,
    ApiQuery(params): ApiQuery<GroupQuery>,
) -> Result<Response> {
    let after =
        crate::http::api::int_param("after", params.after.as_deref(), 0, i64::MAX)?.unwrap_or(0);
    let group = state
        .store
        .get_group(id)
        .await?
        .ok_or_else(|| Error::not_found("This group"))?;
    let (page, next) = state.store.group_members(id, after, MEMBERS_SHOWN).await?;
    let member_count = state.store.count_group_members(id).await?;
    let members: Vec<MemberRow> = page
        .into_iter()
        .map(|m| {
            let name = [m.first_name.as_deref(), m.last_name.as_deref()]
                .into_iter()
                .flatten()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            MemberRow {
                membership_id: m.membership_id,
                name: if name.is_empty() {
                    m.email.clone()
                } else {
                    name
                },
                email: m.email,
                is_active: m.is_active,
            }
        })
        .collect();
    let here = format!("/admin/people/groups/{id}");
    let showing = match (after, next) {
        (0, None) => None,
        _ => Some(format!(
            "Showing {} of {member_count} members, in the order they joined.",
            members.len()
        )),
    };
    let page_data = json!({"id": group.id, "name": group.name});
    render(&GroupPage {
        chrome: Chrome::admin(
            format!("{} · Groups", group.name),
            "groups",
            &admin,
            vec!["lib.js", "groups.js"],
        ),
        id: group.id,
        builtin: id == ALL_USERS_GROUP_ID || id == ADMINISTRATORS_GROUP_ID,
        member_count,
        members,
        showing,
        first_href: (after > 0).then(|| here.clone()),
        next_href: next.map(|n| href(&here, &[("after", n.to_string())])),
        mapped_from: mapped_from(&state, id),
        group_sync: state.settings.current().bool("jwt-group-sync"),
        page_data: script_json(&page_data),
        name: group.name,
    })
}

/// The event kinds the filter offers, with their labels.
const KINDS: &[(&str, &str)] = &[
    ("sso_login", "SSO sign-in"),
    ("password_login", "Password sign-in"),
    ("logout", "Sign-out"),
    ("user_created", "Person added"),
    ("user_updated", "Person changed"),
    ("group_added", "Added to a group"),
    ("group_removed", "Removed from a group"),
    ("group_created", "Group created"),
    ("group_renamed", "Group renamed"),
    ("group_deleted", "Group deleted"),
    ("setting_changed", "Setting changed"),
    ("session_revoked", "Sessions ended"),
];

const OUTCOMES: &[(&str, &str)] = &[
    ("success", "Success"),
    ("failure", "Failure"),
    ("skipped", "Skipped"),
];

struct EventRow {
    id: i64,
    at: String,
    kind: String,
    kind_label: String,
    outcome: String,
    outcome_class: &'static str,
    reason: Option<String>,
    email: String,
    actor: String,
    details: String,
    ip: Option<String>,
    request_id: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    chrome: Chrome,
    kinds: &'static [(&'static str, &'static str)],
    outcomes: &'static [(&'static str, &'static str)],
    kind: String,
    outcome: String,
    user: String,
    filtered: bool,
    notice: Option<String>,
    events: Vec<EventRow>,
    is_paged: bool,
    first_href: String,
    older_href: Option<String>,
}

#[derive(Deserialize)]
pub struct AuditParams {
    kind: Option<String>,
    outcome: Option<String>,
    user: Option<String>,
    before: Option<String>,
}

pub async fn audit_page(
    State(state): State<AppState>,
    AdminPage(admin): AdminPage,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Response> {
    let kind = params.kind.unwrap_or_default().trim().to_owned();
    let outcome = params.outcome.unwrap_or_default().trim().to_owned();
    let user = params.user.unwrap_or_default().trim().to_lowercase();
    let before = crate::http::api::int_param("before", params.before.as_deref(), 1, i64::MAX)?;
    // The person filter is by account (the audit log's index); an email no account has
    // matches no event. Failed sign-ins under such an address carry it, but no account: the
    // notice says where to find them.
    let account = match user.as_str() {
        "" => None,
        email => Some(state.store.find_user_by_email(email).await?),
    };
    let notice = matches!(account, Some(None)).then(|| {
        format!(
            "No account has the email {user}. Failed sign-ins under an address without an \
             account are not linked to one: filter by the outcome “failure” to find them."
        )
    });
    let (rows, older) = if notice.is_some() {
        (Vec::new(), None)
    } else {
        state
            .store
            .list_audit(&AuditQuery {
                kind: Some(kind.clone()).filter(|s| !s.is_empty()),
                outcome: Some(outcome.clone()).filter(|s| !s.is_empty()),
                user_id: account.flatten().map(|u| u.user.id),
                before,
                limit: EVENTS_PER_PAGE,
            })
            .await?
    };
    // Who did it and to whom: a handful of distinct people per page, looked up once each.
    let mut actors: HashMap<i64, String> = HashMap::new();
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|e| [e.actor_id, e.user_id])
        .flatten()
        .collect();
    for id in ids {
        if let std::collections::hash_map::Entry::Vacant(slot) = actors.entry(id) {
            let label = match state.store.get_user(id).await? {
                Some(u) => u.email,
                None => format!("user {id}"),
            };
            slot.insert(label);
        }
    }
    let filters = |before: Option<i64>| {
        href(
            "/admin/audit",
            &[
                ("kind", kind.clone()),
                ("outcome", outcome.clone()),
                ("user", user.clone()),
                ("before", before.map(|b| b.to_string()).unwrap_or_default()),
            ],
        )
    };
    let older_href = older.map(|id| filters(Some(id)));
    let events = rows
        .into_iter()
        .map(|e| {
            let details = serde_json::from_str::<serde_json::Value>(&e.details)
                .ok()
                .filter(|d| d.as_object().is_none_or(|o| !o.is_empty()))
                .map(|d| d.to_string())
                .unwrap_or_default();
            EventRow {
                id: e.id,
                at: when(Some(e.at)),
                kind_label: KINDS
                    .iter()
                    .find(|(k, _)| *k == e.kind)
                    .map(|(_, l)| (*l).to_owned())
                    .unwrap_or_else(|| e.kind.clone()),
                outcome_class: match e.outcome.as_str() {
                    "success" => "ok",
                    "failure" => "danger",
                    _ => "warn",
                },
                actor: e
                    .actor_id
                    .and_then(|id| actors.get(&id).cloned())
                    .unwrap_or_default(),
                email: e
                    .email
                    .or_else(|| e.user_id.and_then(|id| actors.get(&id).cloned()))
                    .unwrap_or_default(),
                kind: e.kind,
                outcome: e.outcome,
                reason: e.reason,
                details,
                ip: e.ip,
                request_id: e.request_id.unwrap_or_default(),
            }
        })
        .collect();
    render(&AuditPage {
        chrome: Chrome::admin("Audit log", "audit", &admin, vec![]),
        kinds: KINDS,
        outcomes: OUTCOMES,
        filtered: !kind.is_empty() || !outcome.is_empty() || !user.is_empty(),
        first_href: filters(None),
        is_paged: before.is_some(),
        older_href,
        kind,
        outcome,
        user,
        notice,
        events,
    })
}
