//! The session check's read on SQLite: a session, its user and the user's groups, read in
//! one go on a rusqlite connection, inline on the calling thread.
//!
//! Through sqlx this read was five hand-offs to a connection's worker thread and back (two
//! queries, the groups query, and the ping sqlx sends when a connection goes back to its
//! pool), about a tenth of a session check's time even though the instance's cache
//! (`auth::cache`) serves most requests: each cached session is read again every second.
//! Here it is three prepared point lookups, a few microseconds, so it runs where it is
//! asked for rather than on another thread: in WAL mode a reader never waits for a writer
//! or a checkpoint, and the connections are used by one caller at a time and never across
//! an `.await`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{OptionalExtension, params};

use super::{Group, SessionRow, User, lock};
use crate::error::Result;

/// Idle connections kept for the next reads; more concurrent readers open (and then close)
/// their own.
const KEEP_IDLE: usize = 8;

/// The read connections of one SQLite database.
#[derive(Debug, Default)]
pub struct Reads {
    /// The database file; `None` for PostgreSQL.
    path: Option<PathBuf>,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

const SESSION_USER: &str = "SELECT s.id_hash, s.user_id, s.created_at, s.expires_at, s.last_seen_at, s.auth_method, \
     u.id, u.email, u.first_name, u.last_name, u.password_hash IS NOT NULL, u.sso_source, u.sso_subject, \
     u.is_active, u.is_superuser, u.login_attributes, u.created_at, u.updated_at, u.last_login \
     FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ?1";

impl Reads {
    pub fn new(path: &Path) -> Reads {
        Reads {
            path: Some(path.to_owned()),
            idle: Mutex::default(),
        }
    }

    /// The session with this hash, its user and the user's groups, as one consistent
    /// snapshot (one read transaction).
    pub fn session_identity(
        &self,
        id_hash: &[u8],
    ) -> Result<Option<(SessionRow, User, Vec<Group>)>> {
        self.with(|db| {
            let tx = db.unchecked_transaction()?;
            let found = tx
                .prepare_cached(SESSION_USER)?
                .query_row(params![id_hash], |r| {
                    let session = SessionRow {
                        id_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        created_at: r.get(2)?,
                        expires_at: r.get(3)?,
                        last_seen_at: r.get(4)?,
                        auth_method: r.get(5)?,
                    };
                    let attributes: String = r.get(15)?;
                    let user = User {
                        id: r.get(6)?,
                        email: r.get(7)?,
                        first_name: r.get(8)?,
                        last_name: r.get(9)?,
                        has_password: r.get(10)?,
                        sso_source: r.get(11)?,
                        sso_subject: r.get(12)?,
                        is_active: r.get(13)?,
                        is_superuser: r.get(14)?,
                        login_attributes: super::attributes_from_json(&attributes),
                        created_at: r.get(16)?,
                        updated_at: r.get(17)?,
                        last_login: r.get(18)?,
                    };
                    Ok((session, user))
                })
                .optional()?;
            let Some((session, user)) = found else {
                return Ok(None);
            };
            let groups = tx
                .prepare_cached(super::USER_GROUPS_SQL)?
                .query_map(params![user.id], |r| {
                    Ok(Group {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<Group>>>()?;
            Ok(Some((session, user, groups)))
        })
    }

    /// Runs `read` on an idle connection (or a new one), then keeps the connection for the
    /// next read unless the read failed.
    fn with<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let idle = lock(&self.idle).pop();
        let db = match idle {
            Some(db) => db,
            None => open(self.path.as_deref()).map_err(super::sqlite_login::internal)?,
        };
        let out = read(&db).map_err(super::sqlite_login::internal)?;
        let mut idle = lock(&self.idle);
        if idle.len() < KEEP_IDLE {
            idle.push(db);
        }
        Ok(out)
    }

    /// Closes the idle connections (shutdown).
    pub fn close(&self) {
        lock(&self.idle).clear();
    }
}

fn open(path: Option<&Path>) -> rusqlite::Result<rusqlite::Connection> {
    let Some(path) = path else {
        return Err(rusqlite::Error::InvalidPath(PathBuf::new()));
    };
    // A reader waits only in rare moments (the first connection after a crash recovers the
    // log index); a short wait keeps the calling thread from stalling long on one.
    let db = super::sqlite_login::connect(
        path,
        std::time::Duration::from_millis(500),
        "PRAGMA query_only = ON; PRAGMA temp_store = MEMORY;",
        false,
    )?;
    db.set_prepared_statement_cache_capacity(8);
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_database_file_a_read_is_an_error_not_a_panic() {
        assert!(Reads::default().session_identity(b"x").is_err());
    }
}
