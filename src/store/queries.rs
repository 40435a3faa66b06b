// The queries, written once and compiled once per backend: this file is `include!`d by the
// `sqlite` and `postgres` modules of `store/mod.rs`, each of which defines `Db`, `IS_SQLITE`
// and `BEGIN_WRITE`.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::Row;

use super::{
    ADMINISTRATORS_GROUP_ID, ALL_USERS_GROUP_ID, AuditEvent, AuditQuery, AuditRecord, Group,
    GroupMember, GroupSummary, LoginReservation, NewSession, NewUser, SessionRow, SettingsPlanner,
    SettingsUpdate, SsoLogin, SsoLogoutError, SsoOutcome, User, UserPatch, UserQuery, UserRow,
    UserWithPassword, is_unique_violation,
};
use crate::error::{Error, Result};

type Pool = super::Pools<Db>;
type Conn = <Db as sqlx::Database>::Connection;
type Tx = sqlx::Transaction<'static, Db>;

async fn begin_write(pool: &Pool) -> Result<Tx> {
    Ok(pool.write.begin_with(BEGIN_WRITE).await?)
}

/// Serialises transactions that check "is this the last active admin?" on PostgreSQL
/// (SQLite already serialises writers through BEGIN IMMEDIATE).
async fn lock_admins(conn: &mut Conn) -> Result<()> {
    if !IS_SQLITE {
        sqlx::query("SELECT pg_advisory_xact_lock(74201)")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Locks a user's row on PostgreSQL until the transaction ends (SQLite already serialises
/// writers). Every transaction that changes a user's memberships or admin flag takes its
/// locks in one order, the user's row, then `lock_admins`, then memberships, so that two of
/// them cannot deadlock: an SSO login's update of the row comes first in it too.
async fn lock_user(conn: &mut Conn, user_id: i64) -> Result<()> {
    if !IS_SQLITE {
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE")
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Serialises the transactions that write settings, and group deletion (which edits
/// `jwt-group-mappings`), on PostgreSQL: each then reads what the one before committed.
/// SQLite already serialises writers through BEGIN IMMEDIATE.
async fn lock_settings(conn: &mut Conn) -> Result<()> {
    if !IS_SQLITE {
        sqlx::query("SELECT pg_advisory_xact_lock(74203)")
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

pub async fn ping(pool: &Pool) -> Result<()> {
    sqlx::query("SELECT 1").execute(&pool.read).await?;
    Ok(())
}

/// Writes one audit event. On SQLite the event also becomes the newest of its kind
/// (`audit_kinds`, migration 0008) and, when it is about a user, that user's newest
/// (`users.last_event_id`, migration 0006), so `conn` must then be in a write transaction.
async fn insert_audit(conn: &mut Conn, r: &AuditRecord) -> Result<()> {
    let mut q = sqlx::QueryBuilder::new("");
    push_audit_insert(&mut q, std::slice::from_ref(r), IS_SQLITE);
    q.build().execute(&mut *conn).await?;
    if IS_SQLITE {
        if let Some(user_id) = r.user_id {
            sqlx::query("UPDATE users SET last_event_id = last_insert_rowid() WHERE id = $1")
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
        }
        // `audit_kinds` has no row ids: its insert leaves `last_insert_rowid()` the event's.
        sqlx::query(SET_KIND_HEAD_SQL)
            .bind(r.kind)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Makes the event just inserted the newest of its kind `$1` (SQLite).
const SET_KIND_HEAD_SQL: &str = "INSERT INTO audit_kinds (kind, last_id) VALUES ($1, last_insert_rowid()) \
     ON CONFLICT (kind) DO UPDATE SET last_id = excluded.last_id";

/// Appends `INSERT INTO audit_events … VALUES …` for these rows (at least one) to `q`, in
/// order (their ids follow the order of the rows). With `chained` (SQLite, one row), the row
/// names the newest event of its kind as its previous one of that kind (`kind_prev`) and, when
/// it is about a user, that user's newest as its previous one of the user (`user_prev`).
fn push_audit_insert(q: &mut sqlx::QueryBuilder<Db>, rows: &[AuditRecord], chained: bool) {
    debug_assert!(!chained || rows.len() == 1, "one chained row at a time");
    let by_user = chained && rows.iter().any(|r| r.user_id.is_some());
    q.push(format_args!(
        "INSERT INTO audit_events ({}{}{}) ",
        super::AUDIT_COLUMNS,
        if chained { ", kind_prev" } else { "" },
        if by_user { ", user_prev" } else { "" }
    ));
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.at)
            .push_bind(r.kind)
            .push_bind(r.outcome)
            .push_bind(&r.reason)
            .push_bind(r.actor_id)
            .push_bind(r.user_id)
            .push_bind(&r.email)
            .push_bind(&r.ip)
            .push_bind(&r.request_id)
            .push_bind(r.details.to_string());
        if chained {
            b.push("COALESCE((SELECT last_id FROM audit_kinds WHERE kind = ")
                .push_bind_unseparated(r.kind)
                .push_unseparated("), 0)");
        }
        if by_user {
            b.push("COALESCE((SELECT last_event_id FROM users WHERE id = ")
                .push_bind_unseparated(r.user_id)
                .push_unseparated("), 0)");
        }
    });
}

/// A copy of `template` for another kind of event about `user_id`.
#[allow(dead_code)] // used by `sso_login`, which only PostgreSQL calls
fn audit_row(
    template: &AuditRecord,
    kind: &'static str,
    outcome: &'static str,
    details: Value,
) -> AuditRecord {
    AuditRecord {
        kind,
        outcome,
        details,
        ..template.clone()
    }
}

pub async fn insert_audit_standalone(pool: &Pool, r: &AuditRecord) -> Result<()> {
    if IS_SQLITE {
        // Several statements on SQLite (the event, and the newest of its kind and of its
        // user): one transaction.
        let mut tx = begin_write(pool).await?;
        insert_audit(&mut tx, r).await?;
        tx.commit().await?;
        return Ok(());
    }
    let mut conn = pool.write.acquire().await?;
    insert_audit(&mut conn, r).await
}

// --- users ---------------------------------------------------------------------------------

pub async fn admin_exists(pool: &Pool) -> Result<bool> {
    let row =
        sqlx::query("SELECT COUNT(*) FROM users WHERE is_superuser = TRUE AND is_active = TRUE")
            .fetch_one(&pool.read)
            .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

/// The columns of a `UserRow`, for `SELECT` and `RETURNING` (a macro, for `concat!`).
macro_rules! user_fields {
    () => {
        "id, email, first_name, last_name, password_hash, sso_source, sso_subject, is_active, is_superuser, login_attributes, created_at, updated_at, last_login"
    };
}
const SELECT_USER_BY_ID: &str = concat!("SELECT ", user_fields!(), " FROM users WHERE id = $1");
const SELECT_USER_BY_EMAIL: &str =
    concat!("SELECT ", user_fields!(), " FROM users WHERE email = $1");

async fn user_in(conn: &mut Conn, id: i64) -> Result<Option<UserWithPassword>> {
    let row: Option<UserRow> = sqlx::query_as(SELECT_USER_BY_ID)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(UserRow::into_user))
}

async fn user_by_email_in(conn: &mut Conn, email: &str) -> Result<Option<UserWithPassword>> {
    let row: Option<UserRow> = sqlx::query_as(SELECT_USER_BY_EMAIL)
        .bind(email)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(UserRow::into_user))
}

pub async fn get_user(pool: &Pool, id: i64) -> Result<Option<User>> {
    let mut conn = pool.read.acquire().await?;
    Ok(user_in(&mut conn, id).await?.map(|u| u.user))
}

pub async fn find_user_by_email(pool: &Pool, email: &str) -> Result<Option<UserWithPassword>> {
    let mut conn = pool.read.acquire().await?;
    user_by_email_in(&mut conn, email).await
}

async fn insert_user(conn: &mut Conn, new: &NewUser, sso_source: Option<&str>) -> Result<i64> {
    let res = sqlx::query(
        "INSERT INTO users (email, first_name, last_name, password_hash, sso_source, is_active, is_superuser, login_attributes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, TRUE, $6, '{}', $7, $7) RETURNING id",
    )
    .bind(&new.email)
    .bind(&new.first_name)
    .bind(&new.last_name)
    .bind(&new.password_hash)
    .bind(sso_source)
    .bind(new.is_superuser)
    .bind(new.now)
    .fetch_one(&mut *conn)
    .await;
    let id: i64 = match res {
        Ok(row) => row.try_get(0)?,
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::Conflict(format!(
                "A user with the email {} already exists.",
                new.email
            )));
        }
        Err(e) => return Err(e.into()),
    };
    add_member(conn, id, ALL_USERS_GROUP_ID).await?;
    if new.is_superuser {
        add_member(conn, id, ADMINISTRATORS_GROUP_ID).await?;
    }
    Ok(id)
}

/// The audit row of a user added to or removed from Administrators by `is_superuser`, in
/// the shape the membership endpoints write, with the `source` of `audit`'s details (`admin`
/// when it names none).
fn administrators_change(
    kind: &'static str,
    user_id: i64,
    email: &str,
    audit: &AuditRecord,
) -> AuditRecord {
    AuditRecord {
        kind,
        outcome: "success",
        reason: None,
        user_id: Some(user_id),
        email: Some(email.to_owned()),
        details: serde_json::json!({
            "group_id": ADMINISTRATORS_GROUP_ID,
            "group": "Administrators",
            "source": audit.details.get("source").cloned().unwrap_or_else(|| "admin".into()),
        }),
        ..audit.clone()
    }
}

/// Adds a membership if the group exists; returns whether a row was added.
async fn add_member(conn: &mut Conn, user_id: i64, group_id: i64) -> Result<bool> {
    // On PostgreSQL the group's row is locked against deletion while the membership goes in:
    // a group deleted meanwhile is then not found, instead of failing the insert's foreign
    // key check.
    let sql = if IS_SQLITE {
        "INSERT INTO memberships (user_id, group_id) SELECT $1, id FROM groups WHERE id = $2 \
         ON CONFLICT (user_id, group_id) DO NOTHING"
    } else {
        "INSERT INTO memberships (user_id, group_id) SELECT $1, id FROM groups WHERE id = $2 \
         FOR KEY SHARE ON CONFLICT (user_id, group_id) DO NOTHING"
    };
    let res = sqlx::query(sql)
        .bind(user_id)
        .bind(group_id)
        .execute(&mut *conn)
        .await?;
    Ok(res.rows_affected() > 0)
}

async fn remove_member(conn: &mut Conn, user_id: i64, group_id: i64) -> Result<bool> {
    let res = sqlx::query("DELETE FROM memberships WHERE user_id = $1 AND group_id = $2")
        .bind(user_id)
        .bind(group_id)
        .execute(&mut *conn)
        .await?;
    Ok(res.rows_affected() > 0)
}

async fn set_superuser(conn: &mut Conn, user_id: i64, value: bool, now: i64) -> Result<()> {
    sqlx::query("UPDATE users SET is_superuser = $2, updated_at = $3 WHERE id = $1")
        .bind(user_id)
        .bind(value)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn other_active_admins(conn: &mut Conn, user_id: i64) -> Result<i64> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM users WHERE is_superuser = TRUE AND is_active = TRUE AND id <> $1",
    )
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get(0)?)
}

pub async fn create_user(pool: &Pool, new: &NewUser, audit: &AuditRecord) -> Result<User> {
    let mut tx = begin_write(pool).await?;
    let id = insert_user(&mut tx, new, None).await?;
    insert_audit(
        &mut tx,
        &AuditRecord {
            user_id: Some(id),
            email: Some(new.email.clone()),
            ..audit.clone()
        },
    )
    .await?;
    if new.is_superuser {
        insert_audit(
            &mut tx,
            &administrators_change("group_added", id, &new.email, audit),
        )
        .await?;
    }
    let user = user_in(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?;
    tx.commit().await?;
    Ok(user.user)
}

pub async fn list_users(pool: &Pool, q: &UserQuery) -> Result<(Vec<User>, i64)> {
    let pattern = q.search.as_ref().filter(|s| !s.is_empty()).map(|s| {
        let escaped = crate::store::fold_case(s)
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    // SQLite's `lower()` folds ASCII letters only; `latchkey_lower` (`sqlite_functions`) folds
    // as the pattern was, by Unicode's rules. PostgreSQL's follows the database's locale. A
    // name matches as "first last", which contains each part on its own.
    macro_rules! matching {
        ($lower:literal) => {
            concat!(
                "WHERE (CAST($1 AS TEXT) IS NULL OR ",
                $lower,
                "(email) LIKE CAST($1 AS TEXT) ESCAPE '\\' \
                 OR ",
                $lower,
                // The name as the pages show it, so that "Ada Lovelace" finds her too.
                "(COALESCE(first_name || ' ' || last_name, first_name, last_name, '')) \
                 LIKE CAST($1 AS TEXT) ESCAPE '\\') \
                 AND ($2 = TRUE OR is_active = TRUE)"
            )
        };
    }
    let (list, count) = if IS_SQLITE {
        (
            concat!(
                "SELECT ",
                user_fields!(),
                " FROM users ",
                matching!("latchkey_lower"),
                " ORDER BY id LIMIT $3 OFFSET $4"
            ),
            concat!("SELECT COUNT(*) FROM users ", matching!("latchkey_lower")),
        )
    } else {
        (
            concat!(
                "SELECT ",
                user_fields!(),
                " FROM users ",
                matching!("lower"),
                " ORDER BY id LIMIT $3 OFFSET $4"
            ),
            concat!("SELECT COUNT(*) FROM users ", matching!("lower")),
        )
    };
    let rows: Vec<UserRow> = sqlx::query_as(list)
        .bind(&pattern)
        .bind(q.include_inactive)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&pool.read)
        .await?;
    let total = sqlx::query(count)
        .bind(&pattern)
        .bind(q.include_inactive)
        .fetch_one(&pool.read)
        .await?
        .try_get::<i64, _>(0)?;
    Ok((
        rows.into_iter().map(|r| r.into_user().user).collect(),
        total,
    ))
}

pub async fn update_user(
    pool: &Pool,
    id: i64,
    patch: &UserPatch,
    audit: &AuditRecord,
) -> Result<User> {
    let mut tx = begin_write(pool).await?;
    lock_user(&mut tx, id).await?;
    lock_admins(&mut tx).await?;
    let before = user_in(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?
        .user;
    let email = patch.email.clone().unwrap_or_else(|| before.email.clone());
    let first_name = patch
        .first_name
        .clone()
        .unwrap_or_else(|| before.first_name.clone());
    let last_name = patch
        .last_name
        .clone()
        .unwrap_or_else(|| before.last_name.clone());
    let is_superuser = patch.is_superuser.unwrap_or(before.is_superuser);
    let is_active = patch.is_active.unwrap_or(before.is_active);

    let loses_admin = before.is_superuser && before.is_active && (!is_superuser || !is_active);
    if loses_admin && other_active_admins(&mut tx, id).await? == 0 {
        return Err(last_admin_error());
    }
    let res = sqlx::query(
        "UPDATE users SET email = $2, first_name = $3, last_name = $4, is_superuser = $5, is_active = $6, updated_at = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(&email)
    .bind(&first_name)
    .bind(&last_name)
    .bind(is_superuser)
    .bind(is_active)
    .bind(patch.now)
    .execute(&mut *tx)
    .await;
    match res {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::Conflict(format!(
                "A user with the email {email} already exists."
            )));
        }
        Err(e) => return Err(e.into()),
    }
    if is_superuser != before.is_superuser {
        let (changed, kind) = if is_superuser {
            (
                add_member(&mut tx, id, ADMINISTRATORS_GROUP_ID).await?,
                "group_added",
            )
        } else {
            (
                remove_member(&mut tx, id, ADMINISTRATORS_GROUP_ID).await?,
                "group_removed",
            )
        };
        if changed {
            insert_audit(&mut tx, &administrators_change(kind, id, &email, audit)).await?;
        }
    }
    if before.is_active && !is_active {
        end_user_sessions(&mut tx, id).await?;
    }
    let mut changes = serde_json::Map::new();
    if email != before.email {
        changes.insert("email".into(), serde_json::json!([before.email, email]));
    }
    if first_name != before.first_name {
        changes.insert(
            "first_name".into(),
            serde_json::json!([before.first_name, first_name]),
        );
    }
    if last_name != before.last_name {
        changes.insert(
            "last_name".into(),
            serde_json::json!([before.last_name, last_name]),
        );
    }
    if is_superuser != before.is_superuser {
        changes.insert(
            "is_superuser".into(),
            serde_json::json!([before.is_superuser, is_superuser]),
        );
    }
    if is_active != before.is_active {
        changes.insert(
            "is_active".into(),
            serde_json::json!([before.is_active, is_active]),
        );
    }
    if !changes.is_empty() {
        let record = AuditRecord {
            user_id: Some(id),
            email: Some(email.clone()),
            details: Value::Object(changes),
            ..audit.clone()
        };
        insert_audit(&mut tx, &record).await?;
    }
    let after = user_in(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?;
    tx.commit().await?;
    Ok(after.user)
}

pub async fn set_password_hash(
    pool: &Pool,
    id: i64,
    hash: &str,
    audit: &AuditRecord,
) -> Result<()> {
    let mut tx = begin_write(pool).await?;
    let email: String = sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1 RETURNING email",
    )
    .bind(id)
    .bind(hash)
    .bind(audit.at)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::not_found("User"))?;
    insert_audit(
        &mut tx,
        &AuditRecord {
            user_id: Some(id),
            email: Some(email),
            ..audit.clone()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn group_ids_of(conn: &mut Conn, user_id: i64) -> Result<BTreeSet<i64>> {
    let rows = sqlx::query("SELECT group_id FROM memberships WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>(0).map_err(Error::from))
        .collect()
}

pub async fn user_groups(pool: &Pool, user_id: i64) -> Result<Vec<Group>> {
    Ok(sqlx::query_as(super::USER_GROUPS_SQL)
        .bind(user_id)
        .fetch_all(&pool.read)
        .await?)
}

pub async fn count_other_active_admins(pool: &Pool, user_id: i64) -> Result<i64> {
    let mut conn = pool.read.acquire().await?;
    other_active_admins(&mut conn, user_id).await
}

const SSO_ADMINS_SQL: &str = "SELECT COUNT(*) FROM users WHERE is_superuser = TRUE AND is_active = TRUE AND sso_source = 'jwt'";

pub async fn count_sso_admins(pool: &Pool) -> Result<i64> {
    Ok(sqlx::query(SSO_ADMINS_SQL)
        .fetch_one(&pool.read)
        .await?
        .try_get(0)?)
}

// --- groups --------------------------------------------------------------------------------

pub async fn list_groups(pool: &Pool) -> Result<Vec<GroupSummary>> {
    Ok(sqlx::query_as(
        "SELECT g.id, g.name, (SELECT COUNT(*) FROM memberships m WHERE m.group_id = g.id) AS member_count \
         FROM groups g ORDER BY g.id",
    )
    .fetch_all(&pool.read)
    .await?)
}

pub async fn get_group(pool: &Pool, id: i64) -> Result<Option<Group>> {
    Ok(sqlx::query_as("SELECT id, name FROM groups WHERE id = $1")
        .bind(id)
        .fetch_optional(&pool.read)
        .await?)
}

/// A page of a group's members in the order they joined (by membership id), after the
/// membership `after` (0 for the first page): a range of the `memberships_group` index, so
/// each page costs the same however large the group is.
pub const GROUP_MEMBERS_SQL: &str = "SELECT m.id AS membership_id, u.id AS user_id, u.email, u.first_name, u.last_name, u.is_active \
     FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 AND m.id > $2 ORDER BY m.id LIMIT $3";

pub async fn group_members(
    pool: &Pool,
    id: i64,
    after: i64,
    limit: i64,
) -> Result<Vec<GroupMember>> {
    Ok(sqlx::query_as(GROUP_MEMBERS_SQL)
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(&pool.read)
        .await?)
}

pub async fn count_group_members(pool: &Pool, id: i64) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE group_id = $1")
            .bind(id)
            .fetch_one(&pool.read)
            .await?,
    )
}

fn group_conflict(name: &str) -> Error {
    Error::Conflict(format!("A group named {name} already exists."))
}

pub async fn create_group(pool: &Pool, name: &str, audit: &AuditRecord) -> Result<Group> {
    let mut tx = begin_write(pool).await?;
    let res = sqlx::query("INSERT INTO groups (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(&mut *tx)
        .await;
    let id: i64 = match res {
        Ok(row) => row.try_get(0)?,
        Err(e) if is_unique_violation(&e) => return Err(group_conflict(name)),
        Err(e) => return Err(e.into()),
    };
    let details = serde_json::json!({"group_id": id, "name": name});
    insert_audit(
        &mut tx,
        &AuditRecord {
            details,
            ..audit.clone()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Group {
        id,
        name: name.to_owned(),
    })
}

fn last_admin_error() -> Error {
    Error::LastAdmin(
        "This is the last active administrator: make another user an administrator first.".into(),
    )
}

fn builtin_group_error() -> Error {
    Error::Forbidden(
        "The built-in groups All Users and Administrators cannot be renamed or deleted.".into(),
    )
}

pub async fn rename_group(pool: &Pool, id: i64, name: &str, audit: &AuditRecord) -> Result<Group> {
    if id == ALL_USERS_GROUP_ID || id == ADMINISTRATORS_GROUP_ID {
        return Err(builtin_group_error());
    }
    let mut tx = begin_write(pool).await?;
    let old: Option<Group> = sqlx::query_as("SELECT id, name FROM groups WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let old = old.ok_or_else(|| Error::not_found("Group"))?;
    match sqlx::query("UPDATE groups SET name = $2 WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await
    {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(group_conflict(name)),
        Err(e) => return Err(e.into()),
    }
    let details = serde_json::json!({"group_id": id, "name": [old.name, name]});
    insert_audit(
        &mut tx,
        &AuditRecord {
            details,
            ..audit.clone()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Group {
        id,
        name: name.to_owned(),
    })
}

/// Deletes a group, and removes its id from `jwt-group-mappings` in the same transaction so
/// the mappings never name a group that does not exist.
pub async fn delete_group(pool: &Pool, id: i64, audit: &AuditRecord) -> Result<()> {
    if id == ALL_USERS_GROUP_ID || id == ADMINISTRATORS_GROUP_ID {
        return Err(builtin_group_error());
    }
    let mut tx = begin_write(pool).await?;
    // A settings write checks the mapped groups exist and writes the mappings under this
    // lock: it cannot check a group this transaction deletes, then write it back.
    lock_settings(&mut tx).await?;
    // On PostgreSQL the group's row is locked before its memberships go: a membership being
    // added meanwhile (which holds the row `FOR KEY SHARE`, `add_member`) then either commits
    // first and is deleted here, or waits and finds no group. Deleting the memberships first
    // could wait on such an insert while it waited on this deletion.
    let old: Option<Group> = sqlx::query_as(if IS_SQLITE {
        "SELECT id, name FROM groups WHERE id = $1"
    } else {
        "SELECT id, name FROM groups WHERE id = $1 FOR UPDATE"
    })
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let old = old.ok_or_else(|| Error::not_found("Group"))?;
    let members = sqlx::query("DELETE FROM memberships WHERE group_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM groups WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let mappings = sqlx::query("SELECT value FROM settings WHERE key = 'jwt-group-mappings'")
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(row) = mappings {
        let text: String = row.try_get(0)?;
        if let Ok(Value::Object(before)) = serde_json::from_str::<Value>(&text) {
            let mut after = before.clone();
            for ids in after.values_mut() {
                if let Value::Array(list) = ids {
                    list.retain(|v| v.as_i64() != Some(id));
                }
            }
            if after != before {
                let (before, after) = (Value::Object(before), Value::Object(after));
                sqlx::query(
                    "UPDATE settings SET value = $1, updated_at = $2 WHERE key = 'jwt-group-mappings'",
                )
                .bind(after.to_string())
                .bind(audit.at)
                .execute(&mut *tx)
                .await?;
                // The setting changed, so the audit log says so, as for any other change.
                insert_audit(
                    &mut tx,
                    &AuditRecord {
                        kind: "setting_changed",
                        user_id: None,
                        email: None,
                        details: serde_json::json!({"key": "jwt-group-mappings", "old": before, "new": after}),
                        ..audit.clone()
                    },
                )
                .await?;
            }
        }
    }
    // One row for the group, which counts the members it had, rather than a `group_removed`
    // row per member: a group of a million would write a million rows in one transaction.
    let details = serde_json::json!({"group_id": id, "name": old.name, "members": members});
    insert_audit(
        &mut tx,
        &AuditRecord {
            details,
            ..audit.clone()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn add_membership(
    pool: &Pool,
    group_id: i64,
    user_id: i64,
    audit: &AuditRecord,
) -> Result<i64> {
    let mut tx = begin_write(pool).await?;
    lock_user(&mut tx, user_id).await?;
    // Locked against deletion on PostgreSQL until the membership is in (see `add_member`).
    let group: Option<Group> = sqlx::query_as(if IS_SQLITE {
        "SELECT id, name FROM groups WHERE id = $1"
    } else {
        "SELECT id, name FROM groups WHERE id = $1 FOR KEY SHARE"
    })
    .bind(group_id)
    .fetch_optional(&mut *tx)
    .await?;
    let group = group.ok_or_else(|| Error::not_found("Group"))?;
    let user = user_in(&mut tx, user_id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?
        .user;
    if !add_member(&mut tx, user_id, group_id).await? {
        return Err(Error::Conflict(format!(
            "{} is already a member of {}.",
            user.email, group.name
        )));
    }
    if group_id == ADMINISTRATORS_GROUP_ID {
        set_superuser(&mut tx, user_id, true, audit.at).await?;
    }
    let id: i64 = sqlx::query("SELECT id FROM memberships WHERE user_id = $1 AND group_id = $2")
        .bind(user_id)
        .bind(group_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let details = serde_json::json!({"group_id": group_id, "group": group.name, "source": "admin"});
    insert_audit(
        &mut tx,
        &AuditRecord {
            user_id: Some(user_id),
            email: Some(user.email),
            details,
            ..audit.clone()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn delete_membership(pool: &Pool, id: i64, audit: &AuditRecord) -> Result<()> {
    let mut tx = begin_write(pool).await?;
    let row = sqlx::query("SELECT user_id, group_id FROM memberships WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let row = row.ok_or_else(|| Error::not_found("Membership"))?;
    let (user_id, group_id): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    lock_user(&mut tx, user_id).await?;
    lock_admins(&mut tx).await?;
    // Read again under the locks: on PostgreSQL another transaction may have removed it (or
    // removed and added it back as another membership) between the first read and the locks.
    let still: Option<i64> = sqlx::query_scalar(
        "SELECT user_id FROM memberships WHERE id = $1 AND user_id = $2 AND group_id = $3",
    )
    .bind(id)
    .bind(user_id)
    .bind(group_id)
    .fetch_optional(&mut *tx)
    .await?;
    if still.is_none() {
        return Err(Error::not_found("Membership"));
    }
    if group_id == ALL_USERS_GROUP_ID {
        return Err(Error::Forbidden(
            "Every user is a member of All Users; that membership cannot be removed.".into(),
        ));
    }
    let user = user_in(&mut tx, user_id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?
        .user;
    if group_id == ADMINISTRATORS_GROUP_ID {
        if user.is_active && user.is_superuser && other_active_admins(&mut tx, user_id).await? == 0
        {
            return Err(last_admin_error());
        }
        set_superuser(&mut tx, user_id, false, audit.at).await?;
    }
    sqlx::query("DELETE FROM memberships WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // A group deleted meanwhile (on PostgreSQL, by a transaction that committed after the
    // membership was read) took the membership with it.
    let group: String = sqlx::query_scalar("SELECT name FROM groups WHERE id = $1")
        .bind(group_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found("Membership"))?;
    let details = serde_json::json!({"group_id": group_id, "group": group, "source": "admin"});
    insert_audit(
        &mut tx,
        &AuditRecord {
            user_id: Some(user_id),
            email: Some(user.email),
            details,
            ..audit.clone()
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

// --- sessions ------------------------------------------------------------------------------

/// Stores a session and its audit row for a user whose password was checked outside this
/// transaction; `false`, with nothing written, when the user is no longer active.
pub async fn create_session(pool: &Pool, s: &NewSession, audit: &AuditRecord) -> Result<bool> {
    let mut tx = begin_write(pool).await?;
    // The user's row first, as in every transaction that takes locks (on PostgreSQL this
    // update holds the row until the commit): a deactivation committed meanwhile is seen here,
    // and one that comes later waits, then ends this session with the others.
    let active = sqlx::query("UPDATE users SET last_login = $2 WHERE id = $1 AND is_active")
        .bind(s.user_id)
        .bind(s.now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if !active {
        return Ok(false);
    }
    // On SQLite the session joins the user's chain (migration 0007): it names the user's
    // newest as its previous one and becomes the newest.
    sqlx::query(if IS_SQLITE {
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen_at, auth_method, ip, user_agent, \
         user_prev) VALUES ($1, $2, $3, $4, $3, $5, $6, $7, COALESCE((SELECT last_session_id FROM users WHERE id = $2), 0))"
    } else {
        "INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen_at, auth_method, ip, user_agent) \
         VALUES ($1, $2, $3, $4, $3, $5, $6, $7)"
    })
    .bind(&s.id_hash[..])
    .bind(s.user_id)
    .bind(s.now)
    .bind(s.expires_at)
    .bind(s.auth_method)
    .bind(&s.ip)
    .bind(&s.user_agent)
    .execute(&mut *tx)
    .await?;
    if IS_SQLITE {
        sqlx::query("UPDATE users SET last_session_id = last_insert_rowid() WHERE id = $1")
            .bind(s.user_id)
            .execute(&mut *tx)
            .await?;
    }
    end_replaced_session(&mut tx, s).await?;
    insert_audit(&mut tx, audit).await?;
    tx.commit().await?;
    Ok(true)
}

/// Ends the session a login replaces ([`NewSession::replaces`]) when it is another user's: a
/// session planted in the browser before the sign-in, or the previous user's. The user's own
/// session stays, so that a callback submitted twice (the second is the replay SPEC §4.3 lets
/// through for a browser signed in as that user) does not sign them out.
async fn end_replaced_session(conn: &mut Conn, s: &NewSession) -> Result<()> {
    if let Some(old) = &s.replaces {
        end_session(conn, old, Some(s.user_id)).await?;
    }
    Ok(())
}

/// Ends the session stored under `id_hash` unless it is `keep_user`'s; whether one ended.
/// On SQLite its newer neighbour in the user's chain is first linked to its older one, or the
/// user's row, when it was the newest (`session_chain!` in mod.rs); `conn` must then be in a
/// write transaction.
async fn end_session(conn: &mut Conn, id_hash: &[u8], keep_user: Option<i64>) -> Result<bool> {
    if !IS_SQLITE {
        let res = match keep_user {
            Some(user_id) => sqlx::query(super::END_REPLACED_SESSION_SQL)
                .bind(id_hash)
                .bind(user_id),
            None => sqlx::query("DELETE FROM sessions WHERE id_hash = $1").bind(id_hash),
        }
        .execute(&mut *conn)
        .await?;
        return Ok(res.rows_affected() > 0);
    }
    let link: Option<(i64, i64, i64)> = sqlx::query_as(super::SESSION_LINK_SQL)
        .bind(id_hash)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((id, user_id, older)) = link else {
        return Ok(false);
    };
    if keep_user == Some(user_id) {
        return Ok(false);
    }
    let newer: Option<i64> = sqlx::query_scalar(super::NEWER_SESSION_SQL)
        .bind(user_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match newer {
        Some(newer) => sqlx::query(super::SET_SESSION_PREV_SQL)
            .bind(newer)
            .bind(older),
        None => sqlx::query(super::SET_NEWEST_SESSION_SQL)
            .bind(user_id)
            .bind(older)
            .bind(id),
    }
    .execute(&mut *conn)
    .await?;
    sqlx::query(super::DELETE_SESSION_SQL)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

/// Ends every session of `user_id`; how many ended. On SQLite they are the user's chain
/// (`session_chain!` in mod.rs), and `conn` must be in a write transaction.
async fn end_user_sessions(conn: &mut Conn, user_id: i64) -> Result<u64> {
    if !IS_SQLITE {
        let res = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        return Ok(res.rows_affected());
    }
    let ended = sqlx::query(super::END_USER_SESSIONS_SQL)
        .bind(user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("UPDATE users SET last_session_id = 0 WHERE id = $1 AND last_session_id <> 0")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(ended)
}

/// A session, its user and the user's groups (PostgreSQL; SQLite reads them through
/// `sqlite_read`).
#[allow(dead_code)]
pub async fn session_identity(
    pool: &Pool,
    id_hash: &[u8],
) -> Result<Option<(SessionRow, User, Vec<Group>)>> {
    let mut conn = pool.read.acquire().await?;
    let session: Option<SessionRow> = sqlx::query_as(
        "SELECT id_hash, user_id, created_at, expires_at, last_seen_at, auth_method FROM sessions WHERE id_hash = $1",
    )
    .bind(id_hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(session) = session else {
        return Ok(None);
    };
    let Some(user) = user_in(&mut conn, session.user_id).await? else {
        return Ok(None);
    };
    let groups = sqlx::query_as(super::USER_GROUPS_SQL)
        .bind(user.user.id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(Some((session, user.user, groups)))
}

pub async fn touch_session(pool: &Pool, id_hash: &[u8], now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
        .bind(id_hash)
        .bind(now)
        .execute(&pool.write)
        .await?;
    Ok(())
}

pub async fn delete_session(
    pool: &Pool,
    id_hash: &[u8],
    audit: Option<&AuditRecord>,
) -> Result<bool> {
    let mut tx = begin_write(pool).await?;
    let ended = end_session(&mut tx, id_hash, None).await?;
    if let Some(a) = audit {
        insert_audit(&mut tx, a).await?;
    }
    tx.commit().await?;
    Ok(ended)
}

pub async fn delete_user_sessions(pool: &Pool, user_id: i64, audit: &AuditRecord) -> Result<u64> {
    let mut tx = begin_write(pool).await?;
    let user = user_in(&mut tx, user_id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?
        .user;
    let n = end_user_sessions(&mut tx, user_id).await?;
    let record = AuditRecord {
        user_id: Some(user_id),
        email: Some(user.email),
        details: serde_json::json!({"revoked": n}),
        ..audit.clone()
    };
    insert_audit(&mut tx, &record).await?;
    tx.commit().await?;
    Ok(n)
}

pub async fn count_active_sessions(pool: &Pool, now: i64) -> Result<i64> {
    Ok(
        sqlx::query("SELECT COUNT(*) FROM sessions WHERE expires_at > $1")
            .bind(now)
            .fetch_one(&pool.read)
            .await?
            .try_get(0)?,
    )
}

// --- settings ------------------------------------------------------------------------------

pub async fn load_settings(pool: &Pool) -> Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT key, value FROM settings")
        .fetch_all(&pool.read)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Writes (or, for `None`, deletes) settings and inserts their audit rows. A new
/// `jwt-group-mappings` must name existing groups only (checked here, in the transaction,
/// so a group deleted meanwhile is not missed).
async fn apply_settings(
    conn: &mut Conn,
    changes: &[(String, Option<String>)],
    audits: &[AuditRecord],
    now: i64,
) -> Result<()> {
    for (key, value) in changes {
        match value {
            Some(v) => {
                if key == "jwt-group-mappings" {
                    check_mapped_groups_exist(conn, v).await?;
                }
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(v)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = $1")
                    .bind(key)
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    for a in audits {
        insert_audit(conn, a).await?;
    }
    Ok(())
}

/// 400 `validation_failed` on `jwt-group-mappings` when the mappings (as stored) name a
/// group that does not exist.
async fn check_mapped_groups_exist(conn: &mut Conn, text: &str) -> Result<()> {
    let invalid = |m: String| Error::validation("jwt-group-mappings", m);
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mappings = crate::domain::group_mappings::GroupMappings::parse(&value).map_err(invalid)?;
    for id in mappings.all_ids() {
        let found = sqlx::query("SELECT id FROM groups WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        if found.is_none() {
            return Err(invalid(format!(
                "jwt-group-mappings: group {id} does not exist."
            )));
        }
    }
    Ok(())
}

pub async fn write_settings(
    pool: &Pool,
    changes: &[(String, Option<String>)],
    audits: &[AuditRecord],
) -> Result<()> {
    let mut tx = begin_write(pool).await?;
    lock_settings(&mut tx).await?;
    let now = audits.first().map(|a| a.at).unwrap_or_default();
    apply_settings(&mut tx, changes, audits, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads the settings table inside a write transaction, lets `plan` decide what to write
/// from those rows, and writes it in the same transaction: what changed is decided against
/// the database, not against an instance's cache.
pub async fn update_settings(pool: &Pool, plan: &SettingsPlanner<'_>) -> Result<SettingsUpdate> {
    let mut tx = begin_write(pool).await?;
    lock_settings(&mut tx).await?;
    let rows = sqlx::query("SELECT key, value FROM settings")
        .fetch_all(&mut *tx)
        .await?;
    let rows = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(String, String)>>>()?;
    let plan = plan(rows)?;
    if plan.changes.is_empty() {
        return Ok(SettingsUpdate::Unchanged);
    }
    if plan.requires_sso_admin {
        // Under the lock every removal of an admin takes (demotion, deactivation, membership
        // deletion, group sync), after `lock_settings`: a removal that is under way commits
        // first and is counted, or waits until this write has committed.
        lock_admins(&mut tx).await?;
        let sso_admins: i64 = sqlx::query(SSO_ADMINS_SQL)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if sso_admins == 0 {
            return Ok(SettingsUpdate::NoSsoAdmin);
        }
    }
    let now = plan.audits.first().map(|a| a.at).unwrap_or_default();
    apply_settings(&mut tx, &plan.changes, &plan.audits, now).await?;
    tx.commit().await?;
    Ok(SettingsUpdate::Written)
}

// --- settings: re-encryption and the database clock ----------------------------------------

/// Replaces stored setting values in one write transaction, each `(key, old, new)` only
/// while the row still holds `old`. `Ok(false)`, with nothing written, when any of them
/// changed (or vanished) in the meantime.
pub async fn swap_settings(
    pool: &Pool,
    swaps: &[(String, String, String)],
    audits: &[AuditRecord],
) -> Result<bool> {
    let mut tx = begin_write(pool).await?;
    let now = audits.first().map(|a| a.at).unwrap_or_default();
    for (key, old, new) in swaps {
        let done = sqlx::query(
            "UPDATE settings SET value = $1, updated_at = $2 WHERE key = $3 AND value = $4",
        )
        .bind(new)
        .bind(now)
        .bind(key)
        .bind(old)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
    }
    for a in audits {
        insert_audit(&mut tx, a).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// The database server's clock as Unix seconds (with fractions).
pub async fn database_time(pool: &Pool) -> Result<f64> {
    let sql = if IS_SQLITE {
        "SELECT (julianday('now') - 2440587.5) * 86400.0"
    } else {
        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
    };
    Ok(sqlx::query(sql).fetch_one(&pool.read).await?.try_get(0)?)
}

// --- audit ---------------------------------------------------------------------------------

/// The newest events that match the filters given, older than `before` if given.
pub async fn list_audit(pool: &Pool, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    if IS_SQLITE {
        if let Some(user_id) = q.user_id {
            return list_chained_audit(pool, Chain::User(user_id), q).await;
        }
        // Events that are not successes have partial indexes by outcome and kind.
        if let Some(kind) = &q.kind
            && q.outcome.as_deref().is_none_or(|o| o == "success")
        {
            return list_chained_audit(pool, Chain::Kind(kind), q).await;
        }
    }
    Ok(audit_list_query(q)
        .build_query_as()
        .fetch_all(&pool.read)
        .await?)
}

/// The events that SQLite links together, newest first: one user's (migration 0006) or one
/// kind's (migration 0008).
#[derive(Clone, Copy)]
enum Chain<'a> {
    User(i64),
    Kind(&'a str),
}

impl Chain<'_> {
    /// The chain's newest event (`None` or 0: none).
    fn newest_sql(self) -> &'static str {
        match self {
            Chain::User(_) => "SELECT last_event_id FROM users WHERE id = $1",
            Chain::Kind(_) => "SELECT last_id FROM audit_kinds WHERE kind = $1",
        }
    }

    /// Whether the event `$1` is on this chain (its user or kind is `$2`), and its previous one.
    fn link_sql(self) -> &'static str {
        match self {
            Chain::User(_) => "SELECT user_id = $2, user_prev FROM audit_events WHERE id = $1",
            Chain::Kind(_) => "SELECT kind = $2, kind_prev FROM audit_events WHERE id = $1",
        }
    }

    /// Up to `$2` events of the chain from the event `$1` back.
    fn walk_sql(self) -> &'static str {
        match self {
            Chain::User(_) => USER_CHAIN_SQL,
            Chain::Kind(_) => KIND_CHAIN_SQL,
        }
    }

    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>,
    ) -> sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>
    where
        Self: 'q,
    {
        match self {
            Chain::User(id) => q.bind(id),
            Chain::Kind(kind) => q.bind(kind),
        }
    }

    fn holds(self, e: &AuditEvent) -> bool {
        match self {
            Chain::User(id) => e.user_id == Some(id),
            Chain::Kind(kind) => e.kind == kind,
        }
    }
}

/// One chain's events on SQLite, which has no index of them by user or by kind (migrations
/// 0006 and 0008): each event names the previous one of the same user and of the same kind
/// (`user_prev`, `kind_prev`, 0 for none), and the user's row or the kind's row in
/// `audit_kinds` names the newest, so the list follows that chain, newest first, a few events
/// per statement ([`USER_CHAIN_SQL`], [`KIND_CHAIN_SQL`]), and applies the other filters to
/// what it reads. With `before`, it starts from the event before it when that event is on the
/// chain (the next page of this same list), else from the newest one. One read transaction,
/// so that every piece sees the same chain.
async fn list_chained_audit(pool: &Pool, chain: Chain<'_>, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    #[derive(sqlx::FromRow)]
    struct Link {
        #[sqlx(flatten)]
        event: AuditEvent,
        prev: Option<i64>,
    }
    let limit = usize::try_from(q.limit).unwrap_or(0);
    let mut out = Vec::new();
    let mut tx = pool.read.begin().await?;
    let newest: Option<Option<i64>> = chain
        .bind(sqlx::query(chain.newest_sql()))
        .fetch_optional(&mut *tx)
        .await?
        .map(|row| row.try_get(0))
        .transpose()?;
    let mut next = newest.flatten().unwrap_or(0);
    // Whether events at or after `before` may still be read (and must be skipped).
    let mut past_before = q.before.is_some();
    if let Some(before) = q.before {
        let at_before = chain
            .bind(sqlx::query(chain.link_sql()).bind(before))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = at_before
            && row.try_get::<Option<bool>, _>(0)? == Some(true)
            && let Some(previous) = row.try_get::<Option<i64>, _>(1)?
        {
            next = previous;
            past_before = false;
        }
    }
    // Without other filters every event read is listed; with them, read further ahead.
    // (A kind's chain holds only that kind.)
    let by_kind = matches!(chain, Chain::User(_)) && q.kind.is_some();
    let filtered = by_kind || q.outcome.is_some() || past_before;
    while next > 0 && out.len() < limit {
        let want = limit - out.len();
        let piece = if filtered { want.max(256) } else { want };
        let links: Vec<Link> = sqlx::query_as(chain.walk_sql())
            .bind(next)
            .bind(piece as i64)
            .fetch_all(&mut *tx)
            .await?;
        next = 0;
        for link in links {
            let e = link.event;
            // Each event's previous one is older; anything else ends the list.
            next = link.prev.filter(|&p| p < e.id).unwrap_or(0);
            let wanted = chain.holds(&e)
                && q.before.is_none_or(|b| e.id < b)
                && q.kind.as_ref().is_none_or(|k| *k == e.kind)
                && q.outcome.as_ref().is_none_or(|o| *o == e.outcome);
            if wanted && out.len() < limit {
                out.push(e);
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Up to `$2` events of one chain from the event `$1` back, newest first, each with its
/// previous one on the chain (`prev`), whose column is `$prev`.
macro_rules! audit_chain_sql {
    ($prev:literal) => {
        concat!(
            "WITH RECURSIVE chain AS ( ",
            "SELECT id, at, kind, outcome, reason, actor_id, user_id, email, ip, request_id, details, ",
            $prev,
            " AS prev FROM audit_events WHERE id = $1 ",
            "UNION ALL ",
            "SELECT e.id, e.at, e.kind, e.outcome, e.reason, e.actor_id, e.user_id, e.email, e.ip, ",
            "e.request_id, e.details, e.",
            $prev,
            " FROM chain CROSS JOIN audit_events e ON e.id = chain.prev LIMIT $2) ",
            "SELECT * FROM chain ORDER BY id DESC"
        )
    };
}

/// A user's events (migration 0006).
pub(super) const USER_CHAIN_SQL: &str = audit_chain_sql!("user_prev");
/// A kind's events (migration 0008).
pub(super) const KIND_CHAIN_SQL: &str = audit_chain_sql!("kind_prev");

/// `list_audit`'s query (on SQLite only without `user_id`, and without `kind` unless the
/// outcome is a failure or skipped: the others are `list_chained_audit`'s). Only the filters
/// given are in the SQL, so that the planner can use the (on PostgreSQL) `(kind, id)` and
/// `(user_id, id)` indexes and the partial ones by outcome, of the events that are not
/// successes, and start at `before`: a condition such as `$1 IS NULL OR kind = $1` makes the
/// database read the table from its newest row on until enough rows match.
pub(super) fn audit_list_query(q: &AuditQuery) -> sqlx::QueryBuilder<Db> {
    let mut sql = sqlx::QueryBuilder::<Db>::new(
        "SELECT id, at, kind, outcome, reason, actor_id, user_id, email, ip, request_id, details \
         FROM audit_events WHERE TRUE",
    );
    if let Some(kind) = &q.kind {
        sql.push(" AND kind = ").push_bind(kind.clone());
    }
    if let Some(outcome) = &q.outcome {
        // Written into the SQL, not bound: the indexes by outcome are partial (`WHERE outcome
        // <> 'success'`; successes, nearly every row, are found by reading from the newest row
        // on), and a planner can only use a partial index when the query's own text implies
        // its condition, which SQLite's does only for that very term. Only the three outcomes
        // are written.
        sql.push(match outcome.as_str() {
            "success" => " AND outcome = 'success'",
            "failure" => " AND outcome = 'failure' AND outcome <> 'success'",
            "skipped" => " AND outcome = 'skipped' AND outcome <> 'success'",
            _ => " AND FALSE",
        });
    }
    if let Some(user_id) = q.user_id {
        sql.push(" AND user_id = ").push_bind(user_id);
    }
    if let Some(before) = q.before {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ").push_bind(q.limit);
    sql
}

// --- throttling ----------------------------------------------------------------------------

/// Serialises the reservations of one throttle bucket on PostgreSQL (SQLite already
/// serialises writers through BEGIN IMMEDIATE). The two-key form keeps these locks apart
/// from `lock_admins`' one-key lock.
async fn lock_bucket(conn: &mut Conn, bucket: &str) -> Result<()> {
    if !IS_SQLITE {
        sqlx::query("SELECT pg_advisory_xact_lock(74202, hashtext($1))")
            .bind(bucket)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// In one write transaction: counts each bucket's failures since `since` and, when none has
/// reached its limit, records one failure in each (the attempt about to be judged).
pub async fn reserve_login_attempt(
    pool: &Pool,
    buckets: &[(String, i64)],
    since: i64,
    now: i64,
) -> Result<LoginReservation> {
    let mut tx = begin_write(pool).await?;
    let mut ordered: Vec<&str> = buckets.iter().map(|(b, _)| b.as_str()).collect();
    ordered.sort_unstable();
    ordered.dedup();
    // Always in the same order, so that two reservations cannot deadlock.
    for bucket in ordered {
        lock_bucket(&mut tx, bucket).await?;
    }
    let mut oldest_full = None;
    for (bucket, limit) in buckets {
        let times: Vec<i64> = sqlx::query_scalar(
            "SELECT at FROM login_failures WHERE bucket = $1 AND at > $2 ORDER BY at DESC LIMIT $3",
        )
        .bind(bucket)
        .bind(since)
        .bind(*limit)
        .fetch_all(&mut *tx)
        .await?;
        if times.len() as i64 >= *limit
            && let Some(&oldest) = times.last()
        {
            oldest_full = Some(oldest_full.map_or(oldest, |o: i64| o.max(oldest)));
        }
    }
    if let Some(oldest) = oldest_full {
        return Ok(LoginReservation::Full { oldest });
    }
    let mut ids = Vec::with_capacity(buckets.len());
    for (bucket, _) in buckets {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO login_failures (bucket, at) VALUES ($1, $2) RETURNING id",
        )
        .bind(bucket)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        ids.push(id);
    }
    tx.commit().await?;
    Ok(LoginReservation::Reserved(ids))
}

/// Removes reserved failures (`ids`) and, when given, every failure of `bucket`.
pub async fn forget_login_failures(pool: &Pool, bucket: Option<&str>, ids: &[i64]) -> Result<()> {
    let mut tx = begin_write(pool).await?;
    if let Some(bucket) = bucket {
        sqlx::query("DELETE FROM login_failures WHERE bucket = $1")
            .bind(bucket)
            .execute(&mut *tx)
            .await?;
    }
    for id in ids {
        sqlx::query("DELETE FROM login_failures WHERE id = $1")
            .bind(*id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

// --- first-run setup -----------------------------------------------------------------------

pub async fn insert_setup_token(pool: &Pool, token_hash: &str, now: i64) -> Result<()> {
    sqlx::query("INSERT INTO setup_tokens (token_hash, created_at) VALUES ($1, $2)")
        .bind(token_hash)
        .bind(now)
        .execute(&pool.write)
        .await?;
    Ok(())
}

pub async fn setup_token_is_live(pool: &Pool, token_hash: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM setup_tokens WHERE token_hash = $1), \
         (SELECT COUNT(*) FROM users WHERE is_superuser = TRUE AND is_active = TRUE)",
    )
    .bind(token_hash)
    .fetch_one(&pool.read)
    .await?;
    Ok(row.try_get::<i64, _>(0)? > 0 && row.try_get::<i64, _>(1)? == 0)
}

pub async fn complete_setup(
    pool: &Pool,
    token_hash: &str,
    new: &NewUser,
    audit: &AuditRecord,
) -> Result<Option<User>> {
    let mut tx = begin_write(pool).await?;
    lock_admins(&mut tx).await?;
    let known = sqlx::query("SELECT token_hash FROM setup_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
    if known.is_none() {
        return Ok(None);
    }
    let admins: i64 =
        sqlx::query("SELECT COUNT(*) FROM users WHERE is_superuser = TRUE AND is_active = TRUE")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
    if admins > 0 {
        return Ok(None);
    }
    let id = insert_user(&mut tx, new, None).await?;
    sqlx::query("DELETE FROM setup_tokens")
        .execute(&mut *tx)
        .await?;
    let created = AuditRecord {
        user_id: Some(id),
        actor_id: Some(id),
        email: Some(new.email.clone()),
        ..audit.clone()
    };
    insert_audit(&mut tx, &created).await?;
    let setup = AuditRecord {
        details: serde_json::json!({"source": "setup"}),
        ..created
    };
    insert_audit(
        &mut tx,
        &administrators_change("group_added", id, &new.email, &setup),
    )
    .await?;
    let user = user_in(&mut tx, id)
        .await?
        .ok_or_else(|| Error::not_found("User"))?;
    tx.commit().await?;
    Ok(Some(user.user))
}

// --- SSO -----------------------------------------------------------------------------------

/// Records a token as used; whether it was not used yet (`consume_replay_sql!` in mod.rs).
async fn consume_replay(conn: &mut Conn, key: &str, expires_at: i64, now: i64) -> Result<bool> {
    let res = sqlx::query(consume_replay_sql!("INSERT"))
        .bind(key)
        .bind(expires_at)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(res.rows_affected() == 1)
}

// SQLite runs the same transaction through `sqlite_login.rs` (no per-statement thread
// hand-off); this one serves PostgreSQL. Every statement is a round trip to the server, so
// the user comes back from its INSERT or UPDATE (`RETURNING`), `last_login` is set there, a
// new user's All Users membership goes in with it, and the session and the login's audit rows
// go in one statement at the end (data-modifying `WITH` clauses, which SQLite has not): 7 round
// trips for a first login with one group, 9 for a returning one that changes groups, from 14.
#[allow(dead_code)]
pub async fn sso_login(pool: &Pool, l: &SsoLogin) -> Result<SsoOutcome> {
    let mut tx = begin_write(pool).await?;
    if !consume_replay(&mut tx, &l.replay_key, l.replay_expires_at, l.session.now).await? {
        return Ok(SsoOutcome::Replayed);
    }
    let now = l.session.now;
    let attrs = Value::Object(l.login_attributes.clone()).to_string();
    let mut existing = user_by_email_in(&mut tx, &l.email).await?;
    let mut inserted = None;
    if existing.is_none() {
        if !l.provisioning_enabled {
            return Ok(SsoOutcome::NotProvisioned);
        }
        // The user and its All Users membership in one statement.
        let row: Option<UserRow> = sqlx::query_as(concat!(
            "WITH u AS (INSERT INTO users (email, first_name, last_name, sso_source, sso_subject, is_active, is_superuser, login_attributes, created_at, updated_at, last_login) \
             VALUES ($1, $2, $3, 'jwt', $4, TRUE, FALSE, $5, $6, $6, $6) ON CONFLICT (email) DO NOTHING RETURNING ",
            user_fields!(),
            "), m AS (INSERT INTO memberships (user_id, group_id) SELECT id, $7 FROM u) SELECT ",
            user_fields!(),
            " FROM u"
        ))
        .bind(&l.email)
        .bind(&l.first_name)
        .bind(&l.last_name)
        .bind(&l.subject)
        .bind(&attrs)
        .bind(now)
        .bind(ALL_USERS_GROUP_ID)
        .fetch_optional(&mut *tx)
        .await?;
        match row {
            Some(row) => inserted = Some(row.into_user().user),
            // A concurrent first login of the same email (PostgreSQL) committed the user
            // while this insert waited: carry on with that user.
            None => existing = user_by_email_in(&mut tx, &l.email).await?,
        }
    }
    let (mut user, created) = match (inserted, existing) {
        (Some(user), _) => (user, true),
        (None, Some(u)) if !u.user.is_active => return Ok(SsoOutcome::Deactivated),
        (None, Some(u)) => {
            // `AND is_active` again, under the row's lock: on PostgreSQL a deactivation that
            // committed after the read above is seen here (the update reads the newest row),
            // and one that comes later waits for this login and then ends its session too.
            let row: Option<UserRow> = sqlx::query_as(concat!(
                "UPDATE users SET first_name = COALESCE($2, first_name), last_name = COALESCE($3, last_name), \
                 login_attributes = $4, sso_source = 'jwt', sso_subject = COALESCE($5, sso_subject), updated_at = $6, \
                 last_login = $6 WHERE id = $1 AND is_active RETURNING ",
                user_fields!()
            ))
            .bind(u.user.id)
            .bind(&l.first_name)
            .bind(&l.last_name)
            .bind(&attrs)
            .bind(&l.subject)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(SsoOutcome::Deactivated);
            };
            (row.into_user().user, false)
        }
        (None, None) => {
            return Err(Error::Conflict(
                "A concurrent sign-in for this account is in progress. Try again.".into(),
            ));
        }
    };
    let user_id = user.id;
    let base = AuditRecord {
        user_id: Some(user_id),
        email: Some(l.email.to_owned()),
        ..l.audit.clone()
    };
    let mut audit = Vec::new();
    if created {
        audit.push(audit_row(
            &base,
            "user_created",
            "success",
            serde_json::json!({"source": "jwt"}),
        ));
    }
    let (mut added, mut removed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    if let Some((wanted, managed)) = &l.group_sync {
        let current = if created {
            BTreeSet::from([ALL_USERS_GROUP_ID])
        } else {
            group_ids_of(&mut tx, user_id).await?
        };
        let diff = crate::sso::claims::group_diff(&current, wanted, managed);
        for gid in diff.add {
            if add_member(&mut tx, user_id, gid).await? {
                if gid == ADMINISTRATORS_GROUP_ID {
                    set_superuser(&mut tx, user_id, true, now).await?;
                    user.is_superuser = true;
                }
                audit.push(audit_row(
                    &base,
                    "group_added",
                    "success",
                    serde_json::json!({"group_id": gid, "source": "jwt"}),
                ));
                added.push(gid);
            }
        }
        for gid in diff.remove {
            if gid == ADMINISTRATORS_GROUP_ID {
                lock_admins(&mut tx).await?;
                if other_active_admins(&mut tx, user_id).await? == 0 {
                    let mut row = audit_row(
                        &base,
                        "group_removed",
                        "skipped",
                        serde_json::json!({"group_id": gid, "source": "jwt"}),
                    );
                    row.reason = Some("last_admin_kept".into());
                    audit.push(row);
                    kept.push(gid);
                    continue;
                }
                set_superuser(&mut tx, user_id, false, now).await?;
                user.is_superuser = false;
            }
            if remove_member(&mut tx, user_id, gid).await? {
                audit.push(audit_row(
                    &base,
                    "group_removed",
                    "success",
                    serde_json::json!({"group_id": gid, "source": "jwt"}),
                ));
                removed.push(gid);
            }
        }
    }
    audit.push(audit_row(
        &base,
        "sso_login",
        "success",
        serde_json::json!({"created": created}),
    ));
    // The session and the audit rows in one statement, with the end of the session the
    // login replaces (as `end_replaced_session` does).
    let s = &l.session;
    let mut q = sqlx::QueryBuilder::new("WITH ");
    if let Some(old) = &s.replaces {
        q.push("r AS (DELETE FROM sessions WHERE id_hash = ")
            .push_bind(&old[..])
            .push(" AND user_id <> ")
            .push_bind(user_id)
            .push("), ");
    }
    q.push(
        "s AS (INSERT INTO sessions (id_hash, user_id, created_at, expires_at, last_seen_at, auth_method, ip, user_agent) VALUES (",
    );
    let mut values = q.separated(", ");
    values
        .push_bind(&s.id_hash[..])
        .push_bind(user_id)
        .push_bind(s.now)
        .push_bind(s.expires_at)
        .push_bind(s.now)
        .push_bind(s.auth_method)
        .push_bind(&s.ip)
        .push_bind(&s.user_agent);
    q.push(")) ");
    // Nearly always all of the rows; a login that changes thousands of groups at once would
    // pass PostgreSQL's 65,535 parameters of one statement, so the rest follow in pieces.
    let (first, rest) = audit.split_at(audit.len().min(super::AUDIT_ROWS_PER_STATEMENT));
    push_audit_insert(&mut q, first, false);
    q.build().execute(&mut *tx).await?;
    for rows in rest.chunks(super::AUDIT_ROWS_PER_STATEMENT) {
        let mut q = sqlx::QueryBuilder::new("");
        push_audit_insert(&mut q, rows, false);
        q.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(SsoOutcome::LoggedIn {
        user: Box::new(user),
        created,
        added,
        removed,
        kept,
    })
}

pub async fn replay_exists(pool: &Pool, key: &str, now: i64) -> Result<bool> {
    Ok(
        sqlx::query("SELECT token_key FROM replay_records WHERE token_key = $1 AND expires_at >= $2")
            .bind(key)
            .bind(now)
            .fetch_optional(&pool.read)
            .await?
            .is_some(),
    )
}

pub async fn non_ascii_addresses(
    pool: &Pool,
    after: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>> {
    Ok(sqlx::query_as(if IS_SQLITE {
        "SELECT id, email FROM users WHERE id > $1 AND email GLOB '*[^ -~]*' ORDER BY id LIMIT $2"
    } else {
        "SELECT id, email FROM users WHERE id > $1 AND email ~ '[^ -~]' ORDER BY id LIMIT $2"
    })
    .bind(after)
    .bind(limit)
    .fetch_all(&pool.read)
    .await?)
}

pub async fn sso_preview(pool: &Pool, email: &str) -> Result<Option<(User, Vec<i64>)>> {
    let mut conn = pool.read.acquire().await?;
    let Some(user) = user_by_email_in(&mut conn, email).await? else {
        return Ok(None);
    };
    let groups = group_ids_of(&mut conn, user.user.id).await?;
    Ok(Some((user.user, groups.into_iter().collect())))
}

pub async fn sso_logout(
    pool: &Pool,
    replay_key: &str,
    replay_expires_at: i64,
    email: Option<&str>,
    subject: Option<&str>,
    audit: &AuditRecord,
) -> Result<std::result::Result<u64, SsoLogoutError>> {
    let mut tx = begin_write(pool).await?;
    if !consume_replay(&mut tx, replay_key, replay_expires_at, audit.at).await? {
        return Ok(Err(SsoLogoutError::Replayed));
    }
    let by_email = match email {
        Some(e) => user_by_email_in(&mut tx, e).await?.map(|u| u.user.id),
        None => None,
    };
    // Every account whose last SSO login carried the subject: an address changed at the IdP
    // makes a new account, and the old one keeps the same `sub`.
    let by_subject: Vec<(i64, String)> = match subject {
        Some(s) => {
            sqlx::query_as("SELECT id, email FROM users WHERE sso_subject = $1 ORDER BY id")
                .bind(s)
                .fetch_all(&mut *tx)
                .await?
        }
        None => Vec::new(),
    };
    // The accounts signed out, each with the address its audit row names; an unknown user
    // gets one row naming nobody.
    let accounts: Vec<(Option<i64>, Option<String>)> = match by_email {
        Some(a) if by_subject.is_empty() => vec![(Some(a), audit.email.clone())],
        Some(a) if !by_subject.iter().any(|(id, _)| *id == a) => {
            return Ok(Err(SsoLogoutError::Ambiguous));
        }
        _ if by_subject.is_empty() => vec![(None, audit.email.clone())],
        _ => by_subject
            .into_iter()
            .map(|(id, e)| (Some(id), Some(e)))
            .collect(),
    };
    let mut total = 0;
    for (user_id, email) in accounts {
        let mut n = 0;
        if let Some(uid) = user_id {
            n = end_user_sessions(&mut tx, uid).await?;
        }
        total += n;
        let record = AuditRecord {
            user_id,
            email,
            details: serde_json::json!({"revoked": n, "channel": "back-channel"}),
            ..audit.clone()
        };
        insert_audit(&mut tx, &record).await?;
    }
    tx.commit().await?;
    Ok(Ok(total))
}

// --- housekeeping --------------------------------------------------------------------------

pub async fn sweep_expired(pool: &Pool, now: i64, replay_records: bool) -> Result<()> {
    if IS_SQLITE {
        if replay_records {
            sweep_replay_records(pool, now).await?;
        }
        sweep_chained_sessions(pool, now).await?;
    } else {
        sqlx::query("DELETE FROM replay_records WHERE expires_at < $1")
            .bind(now)
            .execute(&pool.write)
            .await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&pool.write)
            .await?;
    }
    sqlx::query("DELETE FROM login_failures WHERE at < $1")
        .bind(now - 3600)
        .execute(&pool.write)
        .await?;
    Ok(())
}

/// Replay records read per statement of [`sweep_replay_records`].
const SWEEP_REPLAY_RECORDS: i64 = 1024;

/// The last key of the next range of replay records after `$1`, of at most `$2` records.
pub(super) const REPLAY_RANGE_END_SQL: &str = "SELECT max(token_key) FROM \
     (SELECT token_key FROM replay_records WHERE token_key > $1 ORDER BY token_key LIMIT $2)";
/// The expired records of a range of keys (`$1` < key <= `$2`).
pub(super) const DELETE_EXPIRED_REPLAY_SQL: &str =
    "DELETE FROM replay_records WHERE token_key > $1 AND token_key <= $2 AND expires_at < $3";

/// SQLite: deletes the replay records that expired before `now`. The table has no index by
/// expiry (migration 0009): it is read in its key's order, [`SWEEP_REPLAY_RECORDS`] records
/// at a time, each range's expired records deleted by a statement of its own, so that the
/// logins' writer never waits behind more than one range. Records inserted meanwhile are
/// swept or not by the range they fall in; either way the next sweep finds them.
async fn sweep_replay_records(pool: &Pool, now: i64) -> Result<()> {
    // Every key is longer than the empty string ("jti:…", "sha256:…").
    let mut after = String::new();
    loop {
        // Read on a connection of its own, so that the login writer waits only for the
        // deletes: the range's bounds are all they need.
        let end: Option<String> = sqlx::query_scalar(REPLAY_RANGE_END_SQL)
            .bind(&after)
            .bind(SWEEP_REPLAY_RECORDS)
            .fetch_one(&pool.read)
            .await?;
        let Some(end) = end else {
            return Ok(());
        };
        sqlx::query(DELETE_EXPIRED_REPLAY_SQL)
            .bind(&after)
            .bind(&end)
            .bind(now)
            .execute(&pool.write)
            .await?;
        after = end;
    }
}

/// Expired sessions taken out of their users' chains at a time ([`sweep_chained_sessions`]).
const SWEEP_SESSIONS: i64 = 256;

/// SQLite: deletes the sessions that expired before `now`, a few at a time, each few in a
/// transaction of its own that also takes every other expired session of their users out.
/// Each user's chain is walked once and its remaining sessions linked past the expired ones
/// (`session_chain!` in mod.rs).
async fn sweep_chained_sessions(pool: &Pool, now: i64) -> Result<()> {
    loop {
        let mut tx = begin_write(pool).await?;
        let expired: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, user_id FROM sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(SWEEP_SESSIONS)
        .fetch_all(&mut *tx)
        .await?;
        let users: BTreeSet<i64> = expired.iter().map(|&(_, user_id)| user_id).collect();
        let mut deleted = BTreeSet::new();
        for user_id in users {
            deleted.extend(sweep_chain(&mut tx, user_id, now).await?);
        }
        // Any of them that no chain reached (none, while every write keeps the chains): the
        // next few must be others.
        for &(id, _) in expired.iter().filter(|(id, _)| !deleted.contains(id)) {
            sqlx::query(super::DELETE_SESSION_SQL)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if (expired.len() as i64) < SWEEP_SESSIONS {
            return Ok(());
        }
    }
}

/// SQLite: deletes the sessions of `user_id` that expired before `now` and links the others
/// to each other, newest first, as they were. Returns the ids of those it deleted.
async fn sweep_chain(conn: &mut Conn, user_id: i64, now: i64) -> Result<Vec<i64>> {
    let mut chain: Vec<(i64, i64, i64)> = sqlx::query_as(super::USER_SESSIONS_SQL)
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
    // Newest first: every session's previous one is older, with a smaller id.
    chain.sort_unstable_by_key(|&(id, _, _)| std::cmp::Reverse(id));
    let Some(&(newest, _, _)) = chain.first() else {
        return Ok(Vec::new());
    };
    let (kept, gone): (Vec<_>, Vec<_>) = chain.into_iter().partition(|&(_, _, expires_at)| expires_at >= now);
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let new_newest = kept.first().map_or(0, |&(id, _, _)| id);
    if new_newest != newest {
        sqlx::query(super::SET_NEWEST_SESSION_SQL)
            .bind(user_id)
            .bind(new_newest)
            .bind(newest)
            .execute(&mut *conn)
            .await?;
    }
    for (i, &(id, prev, _)) in kept.iter().enumerate() {
        let older = kept.get(i + 1).map_or(0, |&(older, _, _)| older);
        if prev != older {
            sqlx::query(super::SET_SESSION_PREV_SQL)
                .bind(id)
                .bind(older)
                .execute(&mut *conn)
                .await?;
        }
    }
    let mut deleted = Vec::with_capacity(gone.len());
    for (id, _, _) in gone {
        sqlx::query(super::DELETE_SESSION_SQL)
            .bind(id)
            .execute(&mut *conn)
            .await?;
        deleted.push(id);
    }
    Ok(deleted)
}
