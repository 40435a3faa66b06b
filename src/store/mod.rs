//! All SQL lives here. One `Store` handle over SQLite or PostgreSQL: the queries are written
//! once in `queries.rs` and compiled twice, once per backend, with native types on each
//! (the SQL is shared: `$1` placeholders work in SQLite too). Where the dialects differ,
//! a query checks `IS_SQLITE`.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::Result;

/// Records a token as used (`$1` its key, `$2` until when), unless a record of it is there that
/// has not expired at `$3`: one row changed when the token was not used yet. A record that
/// expired counts as absent, whether or not a sweep has deleted it yet (SQLite sweeps them once
/// an hour), and is taken over. `$insert` is the statement's verb: `INSERT` in `queries.rs`,
/// `INSERT OR FAIL` on SQLite's login writer (`sqlite_login.rs`).
macro_rules! consume_replay_sql {
    ($insert:literal) => {
        concat!(
            $insert,
            " INTO replay_records (token_key, expires_at) VALUES ($1, $2) ",
            "ON CONFLICT (token_key) DO UPDATE SET expires_at = excluded.expires_at ",
            "WHERE replay_records.expires_at < $3"
        )
    };
}

mod sqlite_checkpoint;
mod sqlite_functions;
pub(crate) use sqlite_functions::fold_case;
mod sqlite_login;
mod sqlite_read;
mod sqlite_wal_buffer;

mod sqlite {
    pub type Db = sqlx::Sqlite;
    pub const IS_SQLITE: bool = true;
    /// A write transaction takes the write lock up front, so two writers never deadlock on
    /// a lock upgrade (SQLite would answer SQLITE_BUSY without waiting).
    pub const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
    include!("queries.rs");
}

mod postgres {
    pub type Db = sqlx::Postgres;
    pub const IS_SQLITE: bool = false;
    pub const BEGIN_WRITE: &str = "BEGIN";
    include!("queries.rs");
}

#[derive(Clone, Debug)]
pub enum Store {
    Sqlite(Pools<sqlx::Sqlite>),
    Postgres(Pools<sqlx::Postgres>),
}

/// Where reads and writes go. SQLite allows one writer at a time: all writes share one
/// connection, so writers queue in the pool (async, in order) instead of spinning in
/// SQLite's busy handler, while reads run on their own connections beside them (WAL).
/// PostgreSQL uses one pool for both.
#[derive(Debug)]
pub struct Pools<DB: sqlx::Database> {
    pub read: sqlx::Pool<DB>,
    pub write: sqlx::Pool<DB>,
    /// SSO logins waiting for the next group commit (SQLite; see `sqlite_login`).
    logins: std::sync::Arc<sqlite_login::Logins>,
    /// The session check's reads (SQLite; see `sqlite_read`).
    reads: std::sync::Arc<sqlite_read::Reads>,
}

impl<DB: sqlx::Database> Clone for Pools<DB> {
    fn clone(&self) -> Self {
        Pools {
            read: self.read.clone(),
            write: self.write.clone(),
            logins: self.logins.clone(),
            reads: self.reads.clone(),
        }
    }
}

/// A std mutex's guard; a panic elsewhere while it was held does not make it unusable (the
/// data under these locks stays consistent between statements).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls the same query function on whichever backend this store has, within
/// [`CALL_DEADLINE`].
macro_rules! dispatch {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {
        within_deadline(async {
            dispatch_unbounded!($self, $f($($arg),*))
        })
        .await
    };
}

/// [`dispatch!`] without the deadline, for background work that may legitimately be long.
///
/// Each backend's future is boxed: otherwise the futures of the callers, up to the request's,
/// would hold room for the larger of the two and be copied whole each time they are moved (a
/// few per cent of an SSO login's time went to those copies).
macro_rules! dispatch_unbounded {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(p) => Box::pin(sqlite::$f(p, $($arg),*)).await,
            Store::Postgres(p) => Box::pin(postgres::$f(p, $($arg),*)).await,
        }
    };
}

/// The longest one store call may take; then the request gets 503 `database_unavailable`.
///
/// The pools bound how long a call waits for a connection (`acquire_timeout`), but not a
/// query on a connection the database stopped answering (a frozen or overloaded server, a
/// partition without resets): without this, such a request hangs until the database comes
/// back (found by tests/reliability's `pg_faults`, which freezes PostgreSQL with SIGSTOP).
/// Giving up drops the call's future: an open transaction is rolled back, a half-used
/// connection is not reused as is (sqlx). Nothing is committed by a call that timed out,
/// except in the unknowable case of a commit already sent, exactly as with a lost
/// connection.
pub const CALL_DEADLINE: Duration = Duration::from_secs(10);

async fn within_deadline<T>(call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(CALL_DEADLINE, call).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(deadline = ?CALL_DEADLINE, "database call timed out");
            Err(crate::error::Error::DatabaseUnavailable)
        }
    }
}

/// The default database: `./latchkey-data/latchkey.db`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://latchkey-data/latchkey.db";

/// `LATCHKEY_SQLITE_SYNCHRONOUS`: unset or `normal` (any case) → NORMAL, `full` → FULL.
/// Anything else stops the start: a mistyped `full` must not quietly give less durability.
fn sqlite_synchronous(value: Option<&str>) -> anyhow::Result<(SqliteSynchronous, &'static str)> {
    match value.map(str::trim) {
        None => Ok((SqliteSynchronous::Normal, "NORMAL")),
        Some(v) if v.eq_ignore_ascii_case("normal") => Ok((SqliteSynchronous::Normal, "NORMAL")),
        Some(v) if v.eq_ignore_ascii_case("full") => Ok((SqliteSynchronous::Full, "FULL")),
        Some(_) => anyhow::bail!("LATCHKEY_SQLITE_SYNCHRONOUS must be normal or full"),
    }
}

/// The file of a `sqlite://` (or `sqlite:`) URL, without its query.
pub fn sqlite_file(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("sqlite://")
        .or(url.strip_prefix("sqlite:"))?;
    Some(path.split('?').next().unwrap_or(path))
}

/// A page of a keyset-paged list from `rows`, read with a limit of `limit + 1`: at most `limit`
/// rows, and the cursor of the last one when there was more (the next page starts after it).
fn keyset_page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> i64,
) -> (Vec<T>, Option<i64>) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(cursor) } else { None };
    (rows, next)
}

impl Store {
    /// Like [`Store::connect`], but a SQLite file must exist already: for the commands that
    /// only read, or change what is there, which would otherwise create an empty database at
    /// a mistyped path and answer as if nothing were wrong.
    pub async fn connect_existing(url: &str) -> anyhow::Result<Store> {
        if let Some(path) = sqlite_file(url)
            && path != ":memory:"
            && !std::path::Path::new(path).exists()
        {
            anyhow::bail!(
                "no database at {path}: check --database-url (or LATCHKEY_DATABASE_URL); \
                 `latchkey serve` or `latchkey migrate` creates it"
            );
        }
        Store::connect(url).await
    }

    /// Connects (creating the SQLite file and its folder when needed) without migrating.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            // Where it is, without the password, for the error when it cannot be reached.
            let at = format!(
                "{}:{}/{}",
                opts.get_host(),
                opts.get_port(),
                opts.get_database().unwrap_or("")
            );
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(opts)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("cannot connect to the PostgreSQL database at {at}: {e}")
                })?;
            Ok(Store::Postgres(Pools {
                read: pool.clone(),
                write: pool,
                logins: Default::default(),
                reads: Default::default(),
            }))
        } else if let Some(path) = sqlite_file(url) {
            // A value that is not text is not `full` either.
            let synchronous = std::env::var_os("LATCHKEY_SQLITE_SYNCHRONOUS")
                .map(|v| v.into_string().unwrap_or_default());
            let (synchronous, level) = sqlite_synchronous(synchronous.as_deref())?;
            sqlite_login::configure_sqlite();
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            let opts = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10))
                // Statement and savepoint journals and temporary tables in memory: on disk, a
                // journal was once a third of a login's time (docs/performance.md). Only a
                // rollback reads a journal; durability is the WAL's.
                .pragma("temp_store", "memory")
                // Checkpoints run on a thread of their own (`sqlite_checkpoint`).
                .pragma("wal_autocheckpoint", "0");
            // A local file connection does not go stale: no ping before each use (it would
            // be one more round trip to sqlx's worker thread per query).
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts.clone())
                .await?;
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Store::Sqlite(Pools {
                read,
                write,
                logins: std::sync::Arc::new(sqlite_login::Logins::new(
                    std::path::Path::new(path),
                    level,
                )),
                reads: std::sync::Arc::new(sqlite_read::Reads::new(std::path::Path::new(path))),
            }))
        } else {
            anyhow::bail!("unsupported database URL (use sqlite://path/to/file.db or postgres://…)")
        }
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(p) => sqlx::migrate!("./migrations/sqlite").run(&p.write).await?,
            Store::Postgres(p) => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&p.write)
                    .await?
            }
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => {
                p.logins.close();
                p.reads.close();
                p.read.close().await;
                p.write.close().await;
            }
            Store::Postgres(p) => p.write.close().await,
        }
    }

    pub async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }

    // --- users ---------------------------------------------------------------------------

    pub async fn admin_exists(&self) -> Result<bool> {
        dispatch!(self, admin_exists())
    }

    pub async fn create_user(&self, new: &NewUser, audit: &AuditRecord) -> Result<User> {
        dispatch!(self, create_user(new, audit))
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        dispatch!(self, get_user(id))
    }

    pub async fn find_user_by_email(&self, email: &str) -> Result<Option<UserWithPassword>> {
        dispatch!(self, find_user_by_email(email))
    }

    pub async fn list_users(&self, q: &UserQuery) -> Result<(Vec<User>, i64)> {
        dispatch!(self, list_users(q))
    }

    pub async fn update_user(
        &self,
        id: i64,
        patch: &UserPatch,
        audit: &AuditRecord,
    ) -> Result<User> {
        dispatch!(self, update_user(id, patch, audit))
    }

    pub async fn set_password_hash(&self, id: i64, hash: &str, audit: &AuditRecord) -> Result<()> {
        dispatch!(self, set_password_hash(id, hash, audit))
    }

    pub async fn user_groups(&self, user_id: i64) -> Result<Vec<Group>> {
        dispatch!(self, user_groups(user_id))
    }

    pub async fn count_other_active_admins(&self, user_id: i64) -> Result<i64> {
        dispatch!(self, count_other_active_admins(user_id))
    }

    pub async fn count_sso_admins(&self) -> Result<i64> {
        dispatch!(self, count_sso_admins())
    }

    // --- groups --------------------------------------------------------------------------

    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        dispatch!(self, list_groups())
    }

    /// Up to `limit` users after id `after` whose address has a character outside printable
    /// ASCII (the only addresses that rules about Unicode can refuse), in id order: for
    /// `doctor`, which reads them all a page at a time.
    pub async fn non_ascii_addresses(&self, after: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        dispatch!(self, non_ascii_addresses(after, limit))
    }

    pub async fn get_group(&self, id: i64) -> Result<Option<Group>> {
        dispatch!(self, get_group(id))
    }

    /// Up to `limit` members of the group, in the order they joined, after the membership
    /// `after` (0 for the first page); and the `after` of the next page (`None` on the last).
    pub async fn group_members(
        &self,
        id: i64,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<GroupMember>, Option<i64>)> {
        let rows = dispatch!(self, group_members(id, after, limit + 1))?;
        Ok(keyset_page(rows, limit, |m: &GroupMember| m.membership_id))
    }

    pub async fn count_group_members(&self, id: i64) -> Result<i64> {
        dispatch!(self, count_group_members(id))
    }

    pub async fn create_group(&self, name: &str, audit: &AuditRecord) -> Result<Group> {
        dispatch!(self, create_group(name, audit))
    }

    pub async fn rename_group(&self, id: i64, name: &str, audit: &AuditRecord) -> Result<Group> {
        dispatch!(self, rename_group(id, name, audit))
    }

    pub async fn delete_group(&self, id: i64, audit: &AuditRecord) -> Result<()> {
        dispatch!(self, delete_group(id, audit))
    }

    pub async fn add_membership(
        &self,
        group_id: i64,
        user_id: i64,
        audit: &AuditRecord,
    ) -> Result<i64> {
        dispatch!(self, add_membership(group_id, user_id, audit))
    }

    pub async fn delete_membership(&self, id: i64, audit: &AuditRecord) -> Result<()> {
        dispatch!(self, delete_membership(id, audit))
    }

    // --- sessions ------------------------------------------------------------------------

    /// Stores a session and its audit row; `false`, with nothing stored, when the user is
    /// no longer active (deactivated since its password was checked).
    pub async fn create_session(&self, s: &NewSession, audit: &AuditRecord) -> Result<bool> {
        dispatch!(self, create_session(s, audit))
    }

    /// A session, its user and the user's groups. On SQLite this runs inline, on the
    /// calling thread (`sqlite_read`: a few microseconds, and WAL readers never wait).
    pub async fn session_identity(
        &self,
        id_hash: &[u8],
    ) -> Result<Option<(SessionRow, User, Vec<Group>)>> {
        match self {
            Store::Sqlite(p) => p.reads.session_identity(id_hash),
            // Boxed, as in `dispatch!`: inline, sqlx's future (tens of kilobytes) would make
            // this one as large on SQLite too, copied whole at every cache miss.
            Store::Postgres(p) => {
                Box::pin(within_deadline(postgres::session_identity(p, id_hash))).await
            }
        }
    }

    pub async fn touch_session(&self, id_hash: &[u8], now: i64) -> Result<()> {
        dispatch!(self, touch_session(id_hash, now))
    }

    pub async fn delete_session(
        &self,
        id_hash: &[u8],
        audit: Option<&AuditRecord>,
    ) -> Result<bool> {
        dispatch!(self, delete_session(id_hash, audit))
    }

    pub async fn delete_user_sessions(&self, user_id: i64, audit: &AuditRecord) -> Result<u64> {
        dispatch!(self, delete_user_sessions(user_id, audit))
    }

    pub async fn count_active_sessions(&self, now: i64) -> Result<i64> {
        dispatch!(self, count_active_sessions(now))
    }

    // --- settings ------------------------------------------------------------------------

    pub async fn load_settings(&self) -> Result<Vec<(String, String)>> {
        dispatch!(self, load_settings())
    }

    /// Writes settings in one transaction, deciding what to write from the settings table
    /// as read inside it ([`SettingsPlan`]). A new `jwt-group-mappings` must name existing
    /// groups (else 400 `validation_failed`), checked in the same transaction.
    pub async fn update_settings(&self, plan: &SettingsPlanner<'_>) -> Result<SettingsUpdate> {
        dispatch!(self, update_settings(plan))
    }

    /// Writes (or, for `None`, deletes) settings and their audit rows in one transaction,
    /// as they are: what another instance or an older version could write, for the tests. A
    /// new `jwt-group-mappings` must name existing groups, as with `update_settings`. It
    /// records no session cutoffs (`settings::SESSIONS_ENDED_CREATED`): changes of the
    /// session settings go through `Settings`.
    pub async fn write_settings(
        &self,
        changes: &[(String, Option<String>)],
        audits: &[AuditRecord],
    ) -> Result<()> {
        dispatch!(self, write_settings(changes, audits))
    }

    /// Replaces stored values in one transaction, each `(key, old, new)` only while the row
    /// still holds `old`; `Ok(false)` and nothing written when one changed meanwhile
    /// (`settings rotate-encryption-key`).
    pub async fn swap_settings(
        &self,
        swaps: &[(String, String, String)],
        audits: &[AuditRecord],
    ) -> Result<bool> {
        dispatch!(self, swap_settings(swaps, audits))
    }

    /// The database server's clock, Unix seconds (`latchkey doctor` compares it with ours).
    pub async fn database_time(&self) -> Result<f64> {
        dispatch!(self, database_time())
    }

    // --- audit ---------------------------------------------------------------------------

    pub async fn audit(&self, record: &AuditRecord) -> Result<()> {
        dispatch!(self, insert_audit_standalone(record))
    }

    /// Up to `q.limit` audit events, newest first, and the `before` of the next (older) page
    /// (`None` on the last).
    pub async fn list_audit(&self, q: &AuditQuery) -> Result<(Vec<AuditEvent>, Option<i64>)> {
        let one_more = AuditQuery {
            limit: q.limit + 1,
            ..q.clone()
        };
        let rows = dispatch!(self, list_audit(&one_more))?;
        Ok(keyset_page(rows, q.limit, |e: &AuditEvent| e.id))
    }

    // --- throttling ----------------------------------------------------------------------

    /// Reserves one login attempt in every bucket (a failure recorded before the password
    /// is checked), unless one of them already has `limit` failures since `since`: the
    /// check and the reservation are one transaction, so attempts running side by side
    /// cannot all pass the check (on PostgreSQL, across instances too).
    pub async fn reserve_login_attempt(
        &self,
        buckets: &[(String, i64)],
        since: i64,
        now: i64,
    ) -> Result<LoginReservation> {
        dispatch!(self, reserve_login_attempt(buckets, since, now))
    }

    /// Removes the failures reserved under `ids` and, when given, all of `bucket`'s.
    pub async fn forget_login_failures(&self, bucket: Option<&str>, ids: &[i64]) -> Result<()> {
        dispatch!(self, forget_login_failures(bucket, ids))
    }

    // --- first-run setup -----------------------------------------------------------------

    pub async fn insert_setup_token(&self, token_hash: &str, now: i64) -> Result<()> {
        dispatch!(self, insert_setup_token(token_hash, now))
    }

    /// Whether `token_hash` is a recorded setup token and no admin exists yet: a cheap check
    /// before the work of a setup request (hashing the password). `complete_setup` checks
    /// again in its transaction.
    pub async fn setup_token_is_live(&self, token_hash: &str) -> Result<bool> {
        dispatch!(self, setup_token_is_live(token_hash))
    }

    /// Creates the first admin if `token_hash` is a live setup token and no admin exists;
    /// `Ok(None)` when the token is unknown or an admin already exists.
    pub async fn complete_setup(
        &self,
        token_hash: &str,
        new: &NewUser,
        audit: &AuditRecord,
    ) -> Result<Option<User>> {
        dispatch!(self, complete_setup(token_hash, new, audit))
    }

    // --- SSO -----------------------------------------------------------------------------

    /// Everything an SSO login writes, in one transaction (SPEC §4.4): the replay record,
    /// the user (created or updated), the group changes, the session and the audit rows.
    ///
    /// The login comes boxed: moved whole through each layer's future, its few hundred bytes
    /// were copied at every step (about 1 % of a login's instructions).
    pub async fn sso_login(&self, login: Box<SsoLogin>) -> Result<SsoOutcome> {
        within_deadline(async {
            match self {
                Store::Sqlite(p) => Box::pin(sqlite_login::sso_login(p, login)).await,
                Store::Postgres(p) => Box::pin(postgres::sso_login(p, &login)).await,
            }
        })
        .await
    }

    /// Whether a token with this replay key was already used, by a record that has not expired
    /// at `now` (the dry run reads, never writes).
    pub async fn replay_exists(&self, key: &str, now: i64) -> Result<bool> {
        dispatch!(self, replay_exists(key, now))
    }

    /// Read-only preview of what `sso_login` would do with these fields (the dry run).
    pub async fn sso_preview(&self, email: &str) -> Result<Option<(User, Vec<i64>)>> {
        dispatch!(self, sso_preview(email))
    }

    /// A back-channel logout: consumes the replay record and ends every session of the user
    /// `email` names, or of every account whose last SSO login carried `subject`.
    pub async fn sso_logout(
        &self,
        replay_key: &str,
        replay_expires_at: i64,
        email: Option<&str>,
        subject: Option<&str>,
        audit: &AuditRecord,
    ) -> Result<std::result::Result<u64, SsoLogoutError>> {
        dispatch!(
            self,
            sso_logout(replay_key, replay_expires_at, email, subject, audit)
        )
    }

    // --- housekeeping --------------------------------------------------------------------

    /// Deletes what expired before `now`: sessions, replay records and old login failures.
    /// On SQLite the replay records only with `replay_records` set: their sweep reads the whole
    /// table there (migration 0009), so the sweeper asks for it once an hour; PostgreSQL
    /// deletes them through its index by expiry at every sweep.
    ///
    /// Unbounded: a first sweep after a long pause may delete many rows, and it runs in the
    /// background, never on a request.
    pub async fn sweep_expired(&self, now: i64, replay_records: bool) -> Result<()> {
        dispatch_unbounded!(self, sweep_expired(now, replay_records))
    }
}

/// Whether a database error means "the database is not reachable" (503), rather than a bug.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // PostgreSQL: class 08 (connection exception), 57P01-57P03 (shutdown,
            // cannot connect now); SQLite: SQLITE_BUSY (5) after the busy timeout.
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            code.starts_with("08") || code.starts_with("57P") || code == "5" || code == "517"
        }
        _ => false,
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Decides, from the settings table's rows `(key, stored text)` as read inside the write
/// transaction, what to write; an error rolls the transaction back and is returned.
pub type SettingsPlanner<'a> = dyn Fn(Vec<(String, String)>) -> Result<SettingsPlan> + Sync + 'a;

/// What a settings write does.
#[derive(Debug, Default)]
pub struct SettingsPlan {
    /// `(key, stored text)`; `None` deletes the row (the default applies).
    pub changes: Vec<(String, Option<String>)>,
    pub audits: Vec<AuditRecord>,
    /// Write only if an active administrator has signed in through SSO (the lock-out guard).
    pub requires_sso_admin: bool,
}

/// What [`Store::update_settings`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsUpdate {
    /// The database already held every value: nothing written.
    Unchanged,
    Written,
    /// Nothing written: the plan requires an SSO administrator and there is none.
    NoSsoAdmin,
}

/// What [`Store::reserve_login_attempt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginReservation {
    /// The ids of the failures recorded, one per bucket, in the order given.
    Reserved(Vec<i64>),
    /// Nothing recorded: a bucket is at its limit. `oldest` is the time of the oldest
    /// counted failure (of the latest-freeing bucket when several are full).
    Full { oldest: i64 },
}

pub const ALL_USERS_GROUP_ID: i64 = 1;
pub const ADMINISTRATORS_GROUP_ID: i64 = 2;

// --- domain types handed out by the store ----------------------------------------------

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub sso_source: Option<String>,
    pub sso_subject: Option<String>,
    pub is_active: bool,
    pub is_superuser: bool,
    pub login_attributes: Map<String, Value>,
    pub has_password: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login: Option<i64>,
}

impl User {
    /// "First Last", or the email when both names are empty.
    pub fn display_name(&self) -> String {
        let name = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if name.is_empty() {
            self.email.clone()
        } else {
            name
        }
    }
}

#[derive(Debug, Clone)]
pub struct UserWithPassword {
    pub user: User,
    pub password_hash: Option<String>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    password_hash: Option<String>,
    sso_source: Option<String>,
    sso_subject: Option<String>,
    is_active: bool,
    is_superuser: bool,
    login_attributes: String,
    created_at: i64,
    updated_at: i64,
    last_login: Option<i64>,
}

/// The columns of an audit row as every insert of one lists them (sqlx's and the SQLite login
/// writer's), in the order their values are bound.
const AUDIT_COLUMNS: &str =
    "at, kind, outcome, reason, actor_id, user_id, email, ip, request_id, details";

/// The most audit rows one statement of a login inserts: a login that adds or removes more
/// groups at once writes its rows in several statements, within the limit on parameters of
/// one statement (SQLite 32,766, PostgreSQL 65,535; 5 to 10 per row).
const AUDIT_ROWS_PER_STATEMENT: usize = 1000;

/// Ends the session a login replaces when it is another user's (`$1`: its stored key, `$2`:
/// the user signing in), on PostgreSQL: `queries::end_session` (the PostgreSQL SSO login has
/// it as a `WITH` clause of its session statement; SQLite's sessions are chained, below).
const END_REPLACED_SESSION_SQL: &str = "DELETE FROM sessions WHERE id_hash = $1 AND user_id <> $2";

/// SQLite keeps no index of the sessions by user: each session names the same user's previous
/// one (`user_prev`, 0 for none) and the user's row the newest (`last_session_id`), and ending
/// a session links its newer neighbour to its older one, so that the chain holds every session
/// of the user (migration 0007). The statements below walk it; both the sqlx queries and the
/// SQLite login writer use them.
///
/// `c(id, prev, expires_at)`: user `?1`'s sessions from the newest, each found by its id.
/// The recursive part continues only from rows that pass `$continue` (`c` names the row
/// reached). `UNION`, not `UNION ALL`: a chain made circular by a fault would end, not loop.
macro_rules! session_chain {
    ($continue:literal) => {
        concat!(
            "WITH RECURSIVE c(id, prev, expires_at) AS (",
            "SELECT s.id, s.user_prev, s.expires_at FROM users u ",
            "JOIN sessions s ON s.id = u.last_session_id AND s.user_id = u.id WHERE u.id = ?1 ",
            "UNION SELECT s.id, s.user_prev, s.expires_at FROM c ",
            "JOIN sessions s ON s.id = c.prev AND s.user_id = ?1 WHERE ",
            $continue,
            ") "
        )
    };
}

/// SQLite: the session stored under `?1` (its id, user and previous session), to be ended.
const SESSION_LINK_SQL: &str = "SELECT id, user_id, user_prev FROM sessions WHERE id_hash = ?1";

/// SQLite: in user `?1`'s chain, the session whose previous one is `?2` (none: `?2` is the
/// newest). The walk stops at `?2`.
const NEWER_SESSION_SQL: &str = concat!(
    session_chain!("c.id <> ?2"),
    "SELECT id FROM c WHERE prev = ?2"
);

/// SQLite: every session of user `?1`, newest first, with its previous one and its expiry.
const USER_SESSIONS_SQL: &str =
    concat!(session_chain!("TRUE"), "SELECT id, prev, expires_at FROM c");

/// SQLite: session `?1` now comes after session `?2` in its user's chain (0: none before it).
const SET_SESSION_PREV_SQL: &str = "UPDATE OR FAIL sessions SET user_prev = ?2 WHERE id = ?1";

/// SQLite: user `?1`'s newest session is now `?2` (0: none), if it was `?3`.
const SET_NEWEST_SESSION_SQL: &str =
    "UPDATE OR FAIL users SET last_session_id = ?2 WHERE id = ?1 AND last_session_id = ?3";

/// SQLite: deletes the session with id `?1`, once the chain no longer leads to it.
const DELETE_SESSION_SQL: &str = "DELETE FROM sessions WHERE id = ?1";

/// SQLite: ends every session of user `?1` (the user's row is then told it has none).
const END_USER_SESSIONS_SQL: &str = concat!(
    session_chain!("TRUE"),
    "DELETE FROM sessions WHERE id IN (SELECT id FROM c)"
);

/// A user's groups, by id (`$1`: the user id). Both backends and the rusqlite session read
/// use it.
const USER_GROUPS_SQL: &str = "SELECT g.id, g.name FROM memberships m JOIN groups g ON g.id = m.group_id WHERE m.user_id = $1 ORDER BY g.id";

/// The stored `login_attributes` text as a map (anything but a JSON object reads as empty).
fn attributes_from_json(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl UserRow {
    fn into_user(self) -> UserWithPassword {
        let login_attributes = attributes_from_json(&self.login_attributes);
        UserWithPassword {
            user: User {
                id: self.id,
                email: self.email,
                first_name: self.first_name,
                last_name: self.last_name,
                sso_source: self.sso_source,
                sso_subject: self.sso_subject,
                is_active: self.is_active,
                is_superuser: self.is_superuser,
                login_attributes,
                has_password: self.password_hash.is_some(),
                created_at: self.created_at,
                updated_at: self.updated_at,
                last_login: self.last_login,
            },
            password_hash: self.password_hash,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: Option<String>,
    pub is_superuser: bool,
    pub now: i64,
}

#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    pub email: Option<String>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub is_superuser: Option<bool>,
    pub is_active: Option<bool>,
    pub now: i64,
}

#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Matches email, first or last name (case-insensitive substring).
    pub search: Option<String>,
    pub include_inactive: bool,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct Group {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GroupSummary {
    pub id: i64,
    pub name: String,
    pub member_count: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GroupMember {
    pub membership_id: i64,
    pub user_id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub is_active: bool,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    /// The session's stored key (`auth::session::SessionKey::as_bytes`).
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    pub now: i64,
    pub expires_at: i64,
    pub auth_method: &'static str,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The stored key of the session the request's cookie carried, if any: the login ends it
    /// in the same transaction when it is another user's, so a session planted in the browser
    /// before the sign-in (fixation), or the previous user's, does not live on beside the new
    /// one.
    pub replaces: Option<Vec<u8>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id_hash: Vec<u8>,
    pub user_id: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_seen_at: i64,
    pub auth_method: String,
}

/// One audit event to write (SPEC §2). `details` never holds tokens or secrets.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: i64,
    pub kind: &'static str,
    pub outcome: &'static str,
    pub reason: Option<String>,
    pub actor_id: Option<i64>,
    pub user_id: Option<i64>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
}

impl AuditRecord {
    /// A successful event of `kind` at `at`, with no actor, subject, client or details: the
    /// base that callers outside a request (the CLI, tests) fill in.
    pub fn success(at: i64, kind: &'static str) -> AuditRecord {
        AuditRecord {
            at,
            kind,
            outcome: "success",
            reason: None,
            actor_id: None,
            user_id: None,
            email: None,
            ip: None,
            request_id: None,
            details: Value::Object(Map::new()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub outcome: Option<String>,
    pub user_id: Option<i64>,
    pub before: Option<i64>,
    pub limit: i64,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub actor_id: Option<i64>,
    pub user_id: Option<i64>,
    pub email: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub details: String,
}

/// The input of one SSO login transaction, owned: on SQLite it is queued for the login
/// writer as it is, where copying it cost an allocation for each of its strings, maps and
/// sets (the attributes' map, the group sets, the audit record's texts).
#[derive(Debug)]
pub struct SsoLogin {
    pub replay_key: String,
    pub replay_expires_at: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub subject: Option<String>,
    pub login_attributes: Map<String, Value>,
    pub provisioning_enabled: bool,
    /// `(wanted, managed)` group ids when group sync applies to this login.
    pub group_sync: Option<(
        std::collections::BTreeSet<i64>,
        std::collections::BTreeSet<i64>,
    )>,
    pub session: NewSession,
    /// Template for the audit rows (time, ip, request id).
    pub audit: AuditRecord,
}

#[derive(Debug)]
pub enum SsoOutcome {
    LoggedIn {
        user: Box<User>,
        created: bool,
        added: Vec<i64>,
        removed: Vec<i64>,
        kept: Vec<i64>,
    },
    Replayed,
    NotProvisioned,
    Deactivated,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SsoLogoutError {
    Replayed,
    /// `email` names a user outside the accounts `sub` names.
    Ambiguous,
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// A migrated SQLite database in `dir`.
    async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}/test.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// The pools of a store from [`sqlite_store`].
    fn sqlite_pools(store: &Store) -> &Pools<sqlx::Sqlite> {
        match store {
            Store::Sqlite(p) => p,
            _ => unreachable!("a SQLite URL"),
        }
    }

    /// SQLite's plan of `sql`, a line per step (its parameters unbound: the plan does not
    /// depend on their values).
    async fn query_plan(p: &Pools<sqlx::Sqlite>, sql: &str) -> Vec<String> {
        sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
            .fetch_all(&p.read)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("detail"))
            .collect()
    }

    #[test]
    fn sqlite_synchronous_is_normal_or_full_and_nothing_else() {
        let level = |v| sqlite_synchronous(v).map(|(_, level)| level).ok();
        assert_eq!(level(None), Some("NORMAL"));
        assert_eq!(level(Some("normal")), Some("NORMAL"));
        assert_eq!(level(Some("Full")), Some("FULL"));
        assert_eq!(level(Some(" FULL ")), Some("FULL"));
        for typo in ["ful", "off", "extra", "", "2"] {
            let err = sqlite_synchronous(Some(typo)).unwrap_err().to_string();
            assert_eq!(
                err, "LATCHKEY_SQLITE_SYNCHRONOUS must be normal or full",
                "{typo:?}"
            );
        }
    }

    /// `.cargo/config.toml` builds SQLite without memory management (its shared page cache
    /// takes a process-wide lock on every page), for the tests as for the server
    /// (docs/decisions.md). Its other flag, `HAVE_FDATASYNC`, is not among the options SQLite
    /// lists.
    #[test]
    fn sqlite_is_built_without_memory_management() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let options: Vec<String> = db
            .prepare("PRAGMA compile_options")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "THREADSAFE=1"),
            "the options are listed: {options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "built with memory management: {options:?}"
        );
    }

    /// A first login of `email`, its replay key and session key `key`.
    fn test_login(email: &str, key: &str) -> Box<SsoLogin> {
        Box::new(SsoLogin {
            replay_key: key.to_owned(),
            replay_expires_at: 4_000_000_000,
            email: email.to_owned(),
            first_name: None,
            last_name: None,
            subject: None,
            login_attributes: Map::new(),
            provisioning_enabled: true,
            group_sync: None,
            session: NewSession {
                id_hash: key.as_bytes().to_vec(),
                user_id: 0,
                now: 1_000,
                expires_at: 2_000,
                auth_method: "jwt",
                ip: None,
                user_agent: None,
                replaces: None,
            },
            audit: AuditRecord::success(1_000, "sso_login"),
        })
    }

    /// The login running the queue waits for the write connection while others queue behind
    /// it, which wait only for their answers; when its request goes away, one of them runs
    /// the queue instead, and both are answered and kept.
    #[tokio::test]
    async fn the_logins_behind_a_runner_that_went_away_are_still_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let p = sqlite_pools(&store);
        let writer = p.write.acquire().await.unwrap();
        let spawn_login = |email: &'static str| {
            let store = store.clone();
            tokio::spawn(async move {
                let login = test_login(email, &format!("jti:{email}"));
                matches!(
                    store.sso_login(login).await,
                    Ok(SsoOutcome::LoggedIn { .. })
                )
            })
        };
        let runner = spawn_login("runner@example.com");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let behind = [spawn_login("b@example.com"), spawn_login("c@example.com")];
        tokio::time::sleep(Duration::from_millis(50)).await;
        runner.abort();
        assert!(runner.await.unwrap_err().is_cancelled());
        drop(writer);
        for login in behind {
            let answered = tokio::time::timeout(Duration::from_secs(10), login).await;
            assert!(answered.expect("answered").unwrap(), "logged in");
        }
        for (email, kept) in [
            ("b@example.com", true),
            ("c@example.com", true),
            ("runner@example.com", false),
        ] {
            let found = store.find_user_by_email(email).await.unwrap();
            assert_eq!(found.is_some(), kept, "{email}");
        }
    }

    /// A login whose request gave up while it waited for the write connection (its deadline,
    /// a client that went away) is not committed later by another login's batch: the request
    /// was answered with an error, so the login must leave nothing behind.
    #[tokio::test]
    async fn a_login_whose_request_gave_up_is_not_committed_later() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let p = sqlite_pools(&store);
        // Another writer of this process holds the write connection, so the first login
        // queues; its request gives up before the connection is free.
        let writer = p.write.acquire().await.unwrap();
        let gone = test_login("gone@example.com", "jti:gone");
        let waited = tokio::time::timeout(Duration::from_millis(200), store.sso_login(gone)).await;
        assert!(waited.is_err(), "the login waited for the connection");
        drop(writer);
        // The next login takes the queue and commits.
        let next = test_login("next@example.com", "jti:next");
        assert!(matches!(
            store.sso_login(next).await.unwrap(),
            SsoOutcome::LoggedIn { .. }
        ));
        assert!(
            store
                .find_user_by_email("next@example.com")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .find_user_by_email("gone@example.com")
                .await
                .unwrap()
                .is_none()
        );
        assert!(!store.replay_exists("jti:gone", 0).await.unwrap());
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
            .fetch_one(&p.read)
            .await
            .unwrap();
        assert_eq!(sessions, 1);
    }

    /// The users search is case-insensitive beyond ASCII on SQLite too, whose own `lower()`
    /// folds ASCII letters only.
    #[tokio::test]
    async fn the_users_search_folds_non_ascii_capitals() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let audit = AuditRecord::success(1_000, "user_created");
        for (email, first, last) in [
            ("emile@example.com", "Émile", "Zola"),
            ("olaf@example.com", "ÖLAF", "Ærø"),
            ("odysseus@example.com", "ΟΔΥΣΣΕΥΣ", "Laertiades"),
        ] {
            let new = NewUser {
                email: email.to_owned(),
                first_name: Some(first.to_owned()),
                last_name: Some(last.to_owned()),
                password_hash: None,
                is_superuser: false,
                now: 1_000,
            };
            store.create_user(&new, &audit).await.unwrap();
        }
        let search = |s: &str| UserQuery {
            search: Some(s.to_owned()),
            include_inactive: true,
            limit: 50,
            offset: 0,
        };
        for (query, email) in [
            ("Émile", "emile@example.com"),
            ("émile", "emile@example.com"),
            ("ÉMILE", "emile@example.com"),
            ("ölaf", "olaf@example.com"),
            ("ærø", "olaf@example.com"),
            ("ΟΔΥΣ", "odysseus@example.com"),
        ] {
            let (users, total) = store.list_users(&search(query)).await.unwrap();
            assert_eq!(total, 1, "{query}");
            assert_eq!(
                users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
                [email],
                "{query}"
            );
        }
        let (_, total) = store.list_users(&search("zz")).await.unwrap();
        assert_eq!(total, 0);
    }

    /// A page of a group's members is a range of the `memberships_group` index (SPEC §8), in
    /// the index's order, not a sort of every member.
    #[tokio::test]
    async fn a_page_of_group_members_is_a_range_of_the_group_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let p = sqlite_pools(&store);
        let plan = query_plan(p, sqlite::GROUP_MEMBERS_SQL).await;
        // No sort of the whole group: the index gives the order, the users are found by id.
        assert!(
            plan.iter()
                .any(|d| d.contains("memberships_group") && d.contains("rowid>?")),
            "{plan:?}"
        );
        assert!(plan.iter().all(|d| d.starts_with("SEARCH")), "{plan:?}");
    }

    /// The sweep of replay records reads a range of the table's key per statement and deletes
    /// within it (migration 0009: no index by expiry), never the whole table at once.
    #[tokio::test]
    async fn the_replay_sweep_reads_a_range_of_keys_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let p = sqlite_pools(&store);
        for (sql, range) in [
            (sqlite::REPLAY_RANGE_END_SQL, "(token_key>?)"),
            (
                sqlite::DELETE_EXPIRED_REPLAY_SQL,
                "(token_key>? AND token_key<?)",
            ),
        ] {
            let plan = query_plan(p, sql).await;
            let search = format!("SEARCH replay_records USING PRIMARY KEY {range}");
            assert!(plan.contains(&search), "{plan:?}");
            assert!(
                plan.iter().all(|d| !d.starts_with("SCAN replay_records")),
                "{plan:?}"
            );
        }
    }

    /// Each filter of the audit list is answered through an index (SPEC §8: O(log n) in the
    /// number of audit rows), not by reading the table from its newest row on; a user's or a
    /// kind's events through their chain (migrations 0006 and 0008), each found by its id.
    /// The plan is SQLite's; PostgreSQL chooses by its statistics, and gets the same SQL (with
    /// the indexes by user and by kind that SQLite no longer has).
    #[tokio::test]
    async fn the_audit_list_reads_through_an_index_for_each_filter() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let p = sqlite_pools(&store);
        // Without `user_id`, and with `kind` only for outcomes other than success: the other
        // lists are read along a chain (below).
        let q = |kind: Option<&str>, before: Option<i64>| AuditQuery {
            kind: kind.map(str::to_owned),
            outcome: None,
            user_id: None,
            before,
            limit: 50,
        };
        let failed = |outcome: &str, kind: Option<&str>, before: Option<i64>| AuditQuery {
            outcome: Some(outcome.to_owned()),
            ..q(kind, before)
        };
        // The plan of the query's SQL (its parameters unbound: the plan does not depend on
        // their values).
        let plan = |query: &AuditQuery| {
            let sql = format!(
                "EXPLAIN QUERY PLAN {}",
                sqlite::audit_list_query(query).sql().as_str()
            );
            let read = p.read.clone();
            async move {
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&read)
                    .await
                    .unwrap();
                rows.iter()
                    .map(|r| r.get("detail"))
                    .collect::<Vec<String>>()
            }
        };
        for (query, index) in [
            (q(None, Some(1000)), "INTEGER PRIMARY KEY"),
            (
                failed("failure", None, None),
                "INDEX audit_events_outcome (",
            ),
            (
                failed("failure", Some("sso_login"), Some(1000)),
                "INDEX audit_events_outcome_kind (",
            ),
            (
                failed("skipped", None, Some(1000)),
                "INDEX audit_events_outcome (",
            ),
            (
                failed("skipped", Some("group_removed"), None),
                "INDEX audit_events_outcome_kind (",
            ),
        ] {
            let plan = plan(&query).await;
            assert!(
                plan.iter().any(|d| d.contains(index)),
                "{query:?}: {plan:?}"
            );
            // A search of an index's range, newest first until the page is full; never a walk
            // of the table or a sort.
            assert!(
                plan.iter().all(|d| d.starts_with("SEARCH")),
                "{query:?}: {plan:?}"
            );
        }
        // Without a filter the newest rows come first, through the table's own order.
        let plan = plan(&q(None, None)).await;
        assert_eq!(plan, ["SCAN audit_events"]);
        // A user's events (with or without other filters) and a kind's (alone or with
        // `outcome=success`) are read along their chain: each one found by its id, never a
        // walk of the table.
        for sql in [sqlite::USER_CHAIN_SQL, sqlite::KIND_CHAIN_SQL] {
            let plan = query_plan(p, sql).await;
            let searches = plan
                .iter()
                .filter(|d| d.starts_with("SEARCH") && d.contains("INTEGER PRIMARY KEY (rowid=?)"))
                .count();
            assert_eq!(searches, 2, "{sql}: {plan:?}");
            assert!(
                !plan
                    .iter()
                    .any(|d| d.starts_with("SCAN audit_events") || d.starts_with("SCAN e")),
                "{sql}: {plan:?}"
            );
        }
        // A kind's newest event is one row of a table of a few.
        let rows = sqlx::query(
            "EXPLAIN QUERY PLAN SELECT last_id FROM audit_kinds WHERE kind = 'sso_login'",
        )
        .fetch_all(&p.read)
        .await
        .unwrap();
        let plan: Vec<String> = rows.iter().map(|r| r.get("detail")).collect();
        assert!(
            plan.iter()
                .all(|d| d.starts_with("SEARCH audit_kinds USING PRIMARY KEY (kind=?)")),
            "{plan:?}"
        );
    }

    /// Ending sessions on SQLite walks the user's chain (migration 0007), each session found
    /// by its id, and finds a session by its key: never a walk of the sessions table.
    #[tokio::test]
    async fn the_session_chain_is_walked_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir).await;
        let p = sqlite_pools(&store);
        for sql in [
            SESSION_LINK_SQL,
            NEWER_SESSION_SQL,
            USER_SESSIONS_SQL,
            END_USER_SESSIONS_SQL,
        ] {
            let plan = query_plan(p, sql).await;
            assert!(
                plan.iter().any(|d| d.starts_with("SEARCH")),
                "{sql}: {plan:?}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|d| d.starts_with("SCAN s") || d.starts_with("SCAN sessions")),
                "{sql}: {plan:?}"
            );
        }
    }
}
