//! The SSO login transaction on SQLite, on a connection of its own, with group commit.
//!
//! sqlx drives a SQLite connection from its own worker thread and hands every statement
//! over a channel: a login is about fourteen statements, so fourteen pairs of thread
//! hand-offs, which cost several times the SQL itself (docs/performance.md). Here the whole
//! transaction runs in one go on a rusqlite connection kept for SSO logins alone, whose
//! prepared statements live as long as it does. Writers still queue in order: a batch runs
//! only while its runner holds the connection of sqlx's write pool (which it leaves unused),
//! so no other writer of this process ever meets SQLite's lock. The SQL and the rules are
//! those of `queries.rs::sso_login`, which PostgreSQL uses; the SSO test suite runs against
//! both.
//!
//! Group commit: every login first joins a queue. Whoever gets the write connection takes
//! the whole queue and runs it as one transaction (a refused login leaves nothing behind; a
//! login that fails sends the others back to one transaction each: `run_batch`), then
//! commits once and answers everybody. Concurrent logins thus share one commit and one write of the pages
//! they touch, and nobody is answered before the commit that makes their login durable. Only
//! one login at a time runs the queue and waits for the write connection (the runner); the
//! others wait for their answers alone, and for the runner to leave while logins are still
//! queued, when the longest-waiting of them runs the queue next ([`Queue::running`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::lock;
use super::sqlite_checkpoint::Checkpointer;
use super::{
    ADMINISTRATORS_GROUP_ID, ALL_USERS_GROUP_ID, AuditRecord, Pools, SsoLogin, SsoOutcome, User,
};
use crate::error::{Error, Result};

pub(super) fn internal(e: rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::DatabaseUnavailable
        }
        other => Error::internal(other),
    }
}

/// A login waiting for the write connection, and where its outcome goes.
#[derive(Debug)]
pub struct Job {
    login: Box<SsoLogin>,
    reply: tokio::sync::oneshot::Sender<Result<SsoOutcome>>,
}

/// The logins waiting for the next commit, and the connection that commits them.
#[derive(Debug, Default)]
pub struct Logins {
    queue: Mutex<Queue>,
    /// Told when a runner leaves with logins still queued: it wakes one waiting login, which
    /// runs the queue next.
    runner_left: tokio::sync::Notify,
    db: Mutex<LoginDb>,
    /// Checkpoints the log these commits write (`None` for PostgreSQL).
    checkpointer: Option<Checkpointer>,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Whether a login is running the queue, from the moment it sets this until its [`Runner`]
    /// is dropped. The others then wait only for their answers and [`Logins::runner_left`]:
    /// when each of them also waited for the write connection, every queued login made and
    /// dropped a wait in sqlx's pool and its timer, and each release of the connection woke
    /// the next of them only for it to find its answer there (about 1.3 % of a login's
    /// instructions).
    running: bool,
}

/// The running login's place. When its turn ends ([`Turn::run`]), or the login's request is
/// dropped while it waits for the write connection, the queue has no runner again, and a
/// waiting login is woken if any are still queued.
struct Runner(Arc<Logins>);

impl Drop for Runner {
    fn drop(&mut self) {
        let left_queued = {
            let mut q = lock(&self.0.queue);
            q.running = false;
            !q.jobs.is_empty()
        };
        if left_queued {
            self.0.runner_left.notify_one();
        }
    }
}

#[derive(Debug, Default)]
struct LoginDb {
    /// The database file and the `synchronous` level; `None` for PostgreSQL.
    target: Option<(PathBuf, &'static str)>,
    /// Opened on first use, closed by [`Logins::close`].
    conn: Option<rusqlite::Connection>,
}

impl Logins {
    /// For the SQLite database at `path`, whose connections use this `synchronous` level.
    pub fn new(path: &Path, synchronous: &'static str) -> Logins {
        Logins {
            queue: Mutex::default(),
            runner_left: tokio::sync::Notify::new(),
            db: Mutex::new(LoginDb {
                target: Some((path.to_owned(), synchronous)),
                conn: None,
            }),
            checkpointer: Some(Checkpointer::start(path.to_owned())),
        }
    }

    /// Closes the connection and stops the checkpoints (for shutdown: a later login would
    /// open the connection again, but nothing would checkpoint its log).
    pub fn close(&self) {
        lock(&self.db).conn = None;
        if let Some(c) = &self.checkpointer {
            c.stop();
        }
    }
}

/// Process-wide SQLite configuration, before the first connection: no memory statistics
/// (with them on, every allocation SQLite makes takes one process-wide mutex, shared by all
/// connections), and our SQL functions (`sqlite_functions`) on every connection.
pub fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called before any connection of this process is
        // opened; should SQLite already be initialised, it answers SQLITE_MISUSE and
        // changes nothing.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0);
        }
        // After the configuration: registering initialises SQLite.
        super::sqlite_functions::register();
    });
}

/// A rusqlite connection to the database file, used by one thread at a time, with this busy
/// timeout and these pragmas (WAL is the database's own, set when the pools connected). The
/// login, checkpoint and session-read connections are all opened here; the login connection
/// with `gather_log_writes`, through the VFS of `sqlite_wal_buffer` (the default VFS if it
/// could not be registered).
pub(super) fn connect(
    path: &Path,
    busy_timeout: std::time::Duration,
    pragmas: &str,
    gather_log_writes: bool,
) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = if gather_log_writes && super::sqlite_wal_buffer::register() {
        rusqlite::Connection::open_with_flags_and_vfs(path, flags, super::sqlite_wal_buffer::NAME)?
    } else {
        rusqlite::Connection::open_with_flags(path, flags)?
    };
    db.busy_timeout(busy_timeout)?;
    db.execute_batch(pragmas)?;
    Ok(db)
}

/// Opens the login connection with the settings of the pool's connections.
fn open(path: &Path, synchronous: &str) -> rusqlite::Result<rusqlite::Connection> {
    // No foreign-key checks here: every row a login writes refers to the user it has just
    // written and to groups it selects (`add_member`), and checking costs a statement
    // journal per insert. The other connections keep them, with their cascades.
    // No cache spills: a batch's pages stay in memory until its commit (a batch is at most
    // MAX_BATCH logins), so each transaction reaches the log in the one write of its commit,
    // as `sqlite_wal_buffer` gathers it best, and never as frames written before it.
    let db = connect(
        path,
        std::time::Duration::from_secs(10),
        &format!(
            "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA cache_spill = OFF;"
        ),
        true,
    )?;
    db.set_prepared_statement_cache_capacity(32);
    Ok(db)
}

/// The most logins one transaction takes; the rest wait for the next one.
const MAX_BATCH: usize = 256;
/// The most yields a runner makes while logins keep joining its batch (`gather`).
const GATHER_ROUNDS: usize = 16;
/// How long a runner keeps the write connection for further batches; other writers of
/// this process wait at most about this long behind a stream of logins.
const HOLD_FOR: std::time::Duration = std::time::Duration::from_millis(3);

pub async fn sso_login(pools: &Pools<sqlx::Sqlite>, login: Box<SsoLogin>) -> Result<SsoOutcome> {
    let logins = &*pools.logins;
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    let mut job = Some(Job { login, reply });
    loop {
        // Either the runner answers this login, or this task becomes the runner. The wait for
        // a runner's leaving is registered before the queue is looked at, so that a runner
        // leaving in between wakes it (or, should it not wait after all, the next one: a
        // notification that this task does not take is passed on when it is dropped).
        let left = logins.runner_left.notified();
        let mut left = std::pin::pin!(left);
        left.as_mut().enable();
        let run = {
            let mut q = lock(&logins.queue);
            q.jobs.extend(job.take());
            !std::mem::replace(&mut q.running, true)
        };
        if run {
            // This login runs the queue. Its turn goes on in a task of its own, whose first
            // batch answers this login, so that the answer goes out as soon as that batch is
            // committed: run here, the rest of the turn (further batches for up to HOLD_FOR,
            // the log's last checkpoint step and its `fsync`s) held the runner's answer back,
            // which put the runners' requests among the slowest.
            let runner = Runner(Arc::clone(&pools.logins));
            let turn = Turn {
                _write: pools.write.acquire().await?,
                runner,
                held: std::time::Instant::now(),
            };
            tokio::spawn(turn.run());
        }
        // The answer first: should a runner's leaving have come too, dropping `left` without
        // taking it passes it on to the next waiting login. (Taking it first made the oldest
        // waiter, usually one answered by the last batch, run the next batch before its own
        // answer went out: a batch's time more on its latency.) A runner's leaving means this
        // login is still queued (behind a full batch, or the turn ended first): round again.
        tokio::select! {
            biased;
            result = &mut answer => return result.unwrap_or_else(|_| Err(batch_dropped())),
            () = &mut left => continue,
        }
    }
}

/// A runner's hold on the write connection, and its place. Batches run while logins keep
/// coming, up to [`HOLD_FOR`]: giving the connection back costs a round trip to sqlx's worker
/// thread (the pool pings it on release). Dropped, it gives the connection back, then the
/// runner's place (the fields' order): writers of this process go one at a time.
struct Turn {
    _write: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    runner: Runner,
    held: std::time::Instant,
}

impl Turn {
    async fn run(self) {
        let logins = &self.runner.0;
        loop {
            gather(logins).await;
            let batch = take(&logins.queue);
            if batch.is_empty() {
                return;
            }
            if run_on_connection(logins, batch) {
                finish_log(logins).await;
            }
            if self.held.elapsed() >= HOLD_FOR {
                return;
            }
        }
    }
}

/// Lets the other requests that are ready run first, up to the point where they join the
/// queue: without this pause a runner that found the connection free would commit alone, and
/// on a busy core every commit would be a batch of one. Each yield also lets the runtime read
/// the sockets, so while logins keep arriving the batch waits a little more for them (at most
/// [`GATHER_ROUNDS`] yields); at low load nothing new comes and it goes after one. Larger
/// batches share more pages per commit: this was worth 8–16 % of the login rate.
async fn gather(logins: &Logins) {
    let mut queued = lock(&logins.queue).jobs.len();
    for _ in 0..GATHER_ROUNDS {
        tokio::task::yield_now().await;
        let now = lock(&logins.queue).jobs.len();
        if now == queued || now >= MAX_BATCH {
            return;
        }
        queued = now;
    }
}

/// Runs the batch on the login connection, opened if need be, then tells the checkpoints;
/// whether the log is to be finished now ([`finish_log`]).
fn run_on_connection(logins: &Logins, batch: Vec<Job>) -> bool {
    let mut db = lock(&logins.db);
    let LoginDb { target, conn } = &mut *db;
    if conn.is_none()
        && let Some((path, synchronous)) = target
    {
        match open(path, synchronous) {
            Ok(opened) => *conn = Some(opened),
            Err(e) => tracing::warn!(error = %e, "cannot open the SSO login connection"),
        }
    }
    let Some(c) = conn else {
        fail_all(batch, &Error::DatabaseUnavailable);
        return false;
    };
    run_batch(c, batch);
    let Some(checkpoints) = &logins.checkpointer else {
        return false;
    };
    checkpoints.nudge();
    checkpoints.tail_wanted()
}

/// Step 2 of `sqlite_checkpoint`, right after a commit and before any other (the caller
/// still holds the write connection): the checkpoint thread has copied nearly all of the log,
/// so this copies the short rest, and the next commit starts the log from its beginning.
/// It waits for two `fsync`s of the disk, so it runs on a thread for blocking work: on the
/// runtime's own thread it held up every request, not only the logins, for their length
/// (3–8 ms on a slow disk, which showed in the returning logins' p99). Meanwhile the runtime
/// goes on reading requests and checking tokens, and their logins join the next batch. Should
/// the turn's task be dropped meanwhile (the runtime shutting down), the write connection is
/// released before the step ends, and a next runner would wait for the login connection's
/// lock.
async fn finish_log(logins: &Arc<Logins>) {
    let logins = Arc::clone(logins);
    let finished = tokio::task::spawn_blocking(move || {
        let db = lock(&logins.db);
        if let Some(c) = &db.conn
            && let Err(e) = finish_log_on(c)
        {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    })
    .await;
    if let Err(e) = finished {
        tracing::warn!(error = %e, "checkpoint failed");
    }
}

/// Copies the rest of the log and, when that was all of it, starts the log again from its
/// beginning (`sqlite_checkpoint::restart_log`), here rather than in the next batch's commit
/// on the runtime's thread: the restart flushes the log's new header to the disk.
pub(super) fn finish_log_on(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    let copied = super::sqlite_checkpoint::passive(c)?;
    if copied.all_copied() {
        let restarted = super::sqlite_checkpoint::restart_log(c, None);
        // The restart is a transaction of this connection's: nothing of it may stay gathered.
        super::sqlite_wal_buffer::discard(c);
        restarted?;
    }
    Ok(())
}

/// A login whose batch was dropped before answering (its runner's future was cancelled).
fn batch_dropped() -> Error {
    Error::internal(anyhow::anyhow!("the login batch was dropped"))
}

/// The next batch: up to [`MAX_BATCH`] logins from the queue, leaving out those whose request
/// is gone (it met its deadline, its client went away, or it failed to get the connection):
/// nobody would be told of their outcome, and a login answered with an error must leave
/// nothing behind. (A request that gives up after this, while its batch runs, is answered
/// 503 although its login commits: the deadline is 10 s and a batch takes milliseconds.)
fn take(queue: &Mutex<Queue>) -> Vec<Job> {
    let mut q = lock(queue);
    q.jobs.retain(|job| !job.reply.is_closed());
    let n = q.jobs.len().min(MAX_BATCH);
    q.jobs.drain(..n).collect()
}

fn fail_all(batch: Vec<Job>, e: &Error) {
    for job in batch {
        let _ = job.reply.send(Err(copy_error(e)));
    }
}

/// Errors are not `Clone` (they can hold a source); what a batch failure tells each login.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::DatabaseUnavailable => Error::DatabaseUnavailable,
        other => Error::internal(anyhow::anyhow!("{other}")),
    }
}

/// One transaction for the whole batch, one commit, then the answers.
///
/// No savepoints: a login that is refused (replayed, not provisioned, deactivated) writes
/// nothing or takes back what it wrote (`run`), so the only way one login can spoil the
/// transaction is an SQL error. Then the whole batch is rolled back and its logins run
/// again one transaction each, so that one failing login does not fail the others.
/// (A savepoint per login costs a copy of every page it touches into the savepoint
/// journal: a sixth of a login's time in a profile.)
fn run_batch(db: &mut rusqlite::Connection, batch: Vec<Job>) {
    match run_together(db, &batch) {
        Ok(results) => {
            for (job, result) in batch.into_iter().zip(results) {
                let _ = job.reply.send(Ok(result));
            }
        }
        Err(e) => match internal(e) {
            Error::DatabaseUnavailable => fail_all(batch, &Error::DatabaseUnavailable),
            e => {
                tracing::warn!(error = %e, logins = batch.len(), "a login batch failed; its logins run one by one");
                for job in batch.into_iter().filter(|job| !job.reply.is_closed()) {
                    let result = run_alone(db, &job).map_err(internal);
                    let _ = job.reply.send(result);
                }
            }
        },
    }
}

fn run_together(db: &mut rusqlite::Connection, batch: &[Job]) -> R<Vec<SsoOutcome>> {
    let result = (|| {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        let mut stmts = Stmts::new(&tx);
        for job in batch {
            results.push(run(&mut stmts, job)?);
        }
        stmts.save_kind_heads()?;
        drop(stmts);
        tx.commit()?;
        Ok(results)
    })();
    // Committed or rolled back: nothing of it may stay gathered (`sqlite_wal_buffer::discard`).
    super::sqlite_wal_buffer::discard(db);
    result
}

fn run_alone(db: &mut rusqlite::Connection, job: &Job) -> R<SsoOutcome> {
    let result = (|| {
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut stmts = Stmts::new(&tx);
        let outcome = run(&mut stmts, job)?;
        stmts.save_kind_heads()?;
        drop(stmts);
        tx.commit()?;
        Ok(outcome)
    })();
    super::sqlite_wal_buffer::discard(db);
    result
}

type R<T> = rusqlite::Result<T>;

/// The statements of one transaction: each is taken from the connection's cache of prepared
/// statements at its first use and kept until the transaction ends, when it goes back. Taken
/// and given back at every use, a statement cost two hashes of its SQL text and a clearing of
/// its bindings, about 4 % of a login's instructions. Every use binds all of its parameters
/// again, and rusqlite resets a statement after each run.
struct Stmts<'c> {
    db: &'c rusqlite::Connection,
    kept: Vec<(&'static str, rusqlite::CachedStatement<'c>)>,
    /// The id the transaction's next audit event and next session take, once read
    /// ([`Stmts::new_ids`]).
    next_ids: [Option<i64>; 2],
    /// The newest event of each kind the transaction has written or read ([`Stmts::kind_head`]).
    kind_heads: Vec<KindHead>,
}

/// The newest audit event of one kind (`audit_kinds`, migration 0008), as the login writer's
/// transaction leaves it.
struct KindHead {
    kind: &'static str,
    /// 0: none yet.
    newest: i64,
    /// Whether `newest` changed since it was read.
    changed: bool,
}

/// The tables whose new rows the login writer gives ids ([`Stmts::new_ids`]).
#[derive(Clone, Copy)]
enum NewIds {
    Events = 0,
    Sessions = 1,
}

impl NewIds {
    /// The largest id so far.
    fn last_sql(self) -> &'static str {
        match self {
            NewIds::Events => "SELECT max(id) FROM audit_events",
            NewIds::Sessions => "SELECT max(id) FROM sessions",
        }
    }
}

impl<'c> Stmts<'c> {
    fn new(db: &'c rusqlite::Connection) -> Stmts<'c> {
        Stmts {
            db,
            kept: Vec::with_capacity(16),
            next_ids: [None; 2],
            kind_heads: Vec::new(),
        }
    }

    /// The newest event of `kind`, read from `audit_kinds` at the transaction's first event of
    /// that kind; [`Audit::insert`] moves it to each new event, and [`Stmts::save_kind_heads`]
    /// writes it back once, before the commit. The kinds' rows are on one page, which every
    /// transaction of logins changes once this way.
    fn kind_head(&mut self, kind: &'static str) -> R<&mut KindHead> {
        let i = match self.kind_heads.iter().position(|h| h.kind == kind) {
            Some(i) => i,
            None => {
                let newest: Option<i64> = self
                    .prepare("SELECT last_id FROM audit_kinds WHERE kind = ?1")?
                    .query_row(params![kind], |r| r.get(0))
                    .optional()?;
                self.kind_heads.push(KindHead {
                    kind,
                    newest: newest.unwrap_or(0),
                    changed: false,
                });
                self.kind_heads.len() - 1
            }
        };
        Ok(&mut self.kind_heads[i])
    }

    /// Writes the kinds' newest events that the transaction moved ([`Stmts::kind_head`]).
    fn save_kind_heads(&mut self) -> R<()> {
        let heads = std::mem::take(&mut self.kind_heads);
        for h in heads.iter().filter(|h| h.changed) {
            self.prepare(
                "INSERT OR FAIL INTO audit_kinds (kind, last_id) VALUES (?1, ?2) \
                 ON CONFLICT (kind) DO UPDATE SET last_id = excluded.last_id",
            )?
            .execute(params![h.kind, h.newest])?;
        }
        Ok(())
    }

    /// The first of `n` ids for new rows of `table` (audit events, or sessions): the largest
    /// id plus one, read at the transaction's first use, after which its own rows are the
    /// only ones written (the transaction holds the write lock, and a failed statement ends
    /// it). Taken before the rows are written, so that a new user's row can name its newest
    /// event and session.
    fn new_ids(&mut self, table: NewIds, n: usize) -> R<i64> {
        let first = match self.next_ids[table as usize] {
            Some(id) => id,
            None => {
                let last: Option<i64> = self
                    .prepare(table.last_sql())?
                    .query_row([], |r| r.get(0))?;
                last.unwrap_or(0) + 1
            }
        };
        self.next_ids[table as usize] = Some(first + n as i64);
        Ok(first)
    }

    fn prepare(&mut self, sql: &'static str) -> R<&mut rusqlite::Statement<'c>> {
        let i = match self.kept.iter().position(|(kept, _)| *kept == sql) {
            Some(i) => i,
            None => {
                self.kept.push((sql, self.db.prepare_cached(sql)?));
                self.kept.len() - 1
            }
        };
        Ok(&mut self.kept[i].1)
    }
}

/// The user a login is for, as it is before the login (`None`: not there yet).
const FIND_USER: &str = "SELECT id, first_name, last_name, password_hash IS NOT NULL, sso_subject, \
     is_active, is_superuser, created_at, last_event_id, last_session_id FROM users WHERE email = ?1";
/// No `RETURNING` on the two writes below: SQLite gathers what a statement returns in a
/// temporary table, made and dropped at every run. What the row holds afterwards is known
/// from the read above and from what the login writes.
const INSERT_USER: &str = "INSERT OR FAIL INTO users (email, first_name, last_name, sso_source, sso_subject, \
     is_active, is_superuser, login_attributes, created_at, updated_at, last_login, last_event_id, last_session_id) \
     VALUES (?1, ?2, ?3, 'jwt', ?4, TRUE, FALSE, ?5, ?6, ?6, ?6, ?7, ?8)";
const UPDATE_USER: &str = "UPDATE OR FAIL users SET first_name = COALESCE(?2, first_name), \
     last_name = COALESCE(?3, last_name), login_attributes = ?4, sso_source = 'jwt', \
     sso_subject = COALESCE(?5, sso_subject), updated_at = ?6, last_login = ?6, \
     last_event_id = ?7, last_session_id = ?8 WHERE id = ?1";
/// A new user's newest audit event, when the login wrote fewer than [`INSERT_USER`] counted on.
const SET_LAST_EVENT: &str = "UPDATE OR FAIL users SET last_event_id = ?2 WHERE id = ?1";
/// The login's session, with its id and the user's previous one (their chain, migration
/// 0007).
const INSERT_SESSION: &str = "INSERT OR FAIL INTO sessions (id, id_hash, user_id, user_prev, created_at, expires_at, \
     last_seen_at, auth_method, ip, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?7, ?8, ?9)";

/// The user's row before the login ([`FIND_USER`]).
#[derive(Default)]
struct Found {
    id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    has_password: bool,
    sso_subject: Option<String>,
    is_active: bool,
    is_superuser: bool,
    created_at: i64,
    /// The user's newest audit event (0: none), which the login's first one points back to.
    last_event: i64,
    /// The user's newest session (0: none), which the login's session points back to.
    last_session: i64,
}

/// One login inside the batch's transaction. A refused login leaves the database as it
/// found it; an error leaves it for the caller to roll back. Hence `OR FAIL` on every
/// write: a failed statement need not undo its own earlier rows (the whole transaction
/// goes), so SQLite keeps no statement journal for it, a copy of each page it touches.
///
/// The same rules as `queries.rs::sso_login` in fewer statements: the user is read by its
/// address and inserted if new (the answer is made from what was read and written), the
/// login's audit rows go in with one multi-row insert, and the user's row is updated last,
/// with its newest audit event.
fn run(tx: &mut Stmts<'_>, job: &Job) -> R<SsoOutcome> {
    let l = &job.login;
    let fresh = tx
        .prepare(consume_replay_sql!("INSERT OR FAIL"))?
        .execute(params![l.replay_key, l.replay_expires_at, l.session.now])?;
    if fresh != 1 {
        return Ok(SsoOutcome::Replayed);
    }
    let now = l.session.now;
    let attrs = serde_json::to_string(&l.login_attributes)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?;
    // The user is read first, as on PostgreSQL: most logins are of users who are there
    // already, and for them the update then finds the row by its id.
    let found = tx
        .prepare(FIND_USER)?
        .query_row(params![l.email], |r| {
            Ok(Found {
                id: r.get(0)?,
                first_name: r.get(1)?,
                last_name: r.get(2)?,
                has_password: r.get(3)?,
                sso_subject: r.get(4)?,
                is_active: r.get(5)?,
                is_superuser: r.get(6)?,
                created_at: r.get(7)?,
                last_event: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
                last_session: r.get::<_, Option<i64>>(9)?.unwrap_or(0),
            })
        })
        .optional()?;
    let refused = match &found {
        Some(u) if !u.is_active => Some(SsoOutcome::Deactivated),
        None if !l.provisioning_enabled => Some(SsoOutcome::NotProvisioned),
        _ => None,
    };
    if let Some(refused) = refused {
        // The token is not used up after all.
        tx.prepare("DELETE FROM replay_records WHERE token_key = ?1")?
            .execute(params![l.replay_key])?;
        return Ok(refused);
    }
    let created = found.is_none();
    // A new user's groups to add are known before the row is written (they start in All
    // Users only), and so is the number of the login's audit events: user_created, one per
    // group added, sso_login. Their ids are taken now, so that the row is written with its
    // newest event; a returning user's row is updated at the end, with the same.
    let new_user_diff = match (&l.group_sync, created) {
        (Some((wanted, managed)), true) => Some(crate::sso::claims::group_diff(
            &BTreeSet::from([ALL_USERS_GROUP_ID]),
            wanted,
            managed,
        )),
        _ => None,
    };
    let mut new_user_events = None;
    let session_id = tx.new_ids(NewIds::Sessions, 1)?;
    let id = match &found {
        Some(u) => u.id,
        None => {
            let n = 2 + new_user_diff.as_ref().map_or(0, |d| d.add.len());
            let first = tx.new_ids(NewIds::Events, n)?;
            let newest = first + n as i64 - 1;
            new_user_events = Some((first, newest));
            tx.prepare(INSERT_USER)?.execute(params![
                l.email,
                l.first_name,
                l.last_name,
                l.subject,
                attrs,
                now,
                newest,
                session_id
            ])?;
            tx.db.last_insert_rowid()
        }
    };
    // The row as the login leaves it (`COALESCE`: a name or subject the token does not carry
    // is kept).
    let found = found.unwrap_or_default();
    let previous_event = found.last_event;
    let previous_session = found.last_session;
    let mut user = User {
        id,
        email: l.email.clone(),
        first_name: l.first_name.clone().or(found.first_name),
        last_name: l.last_name.clone().or(found.last_name),
        has_password: found.has_password,
        sso_source: Some("jwt".to_owned()),
        sso_subject: l.subject.clone().or(found.sso_subject),
        is_active: true,
        is_superuser: found.is_superuser,
        login_attributes: l.login_attributes.clone(),
        created_at: if created { now } else { found.created_at },
        updated_at: now,
        last_login: Some(now),
    };
    let user_id = user.id;
    if created {
        add_member(tx, user_id, ALL_USERS_GROUP_ID)?;
    }
    let mut audit = Audit::default();
    if created {
        audit.push(
            "user_created",
            "success",
            None,
            r#"{"source":"jwt"}"#.to_owned(),
        );
    }
    let (mut added, mut removed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    if let Some((wanted, managed)) = &l.group_sync {
        let diff = match new_user_diff {
            Some(diff) => diff,
            None => {
                let stmt = tx.prepare("SELECT group_id FROM memberships WHERE user_id = ?1")?;
                let ids = stmt.query_map(params![user_id], |r| r.get::<_, i64>(0))?;
                let current: BTreeSet<i64> = ids.collect::<std::result::Result<_, _>>()?;
                crate::sso::claims::group_diff(&current, wanted, managed)
            }
        };
        for gid in diff.add {
            if add_member(tx, user_id, gid)? {
                if gid == ADMINISTRATORS_GROUP_ID {
                    set_superuser(tx, user_id, true, now)?;
                    user.is_superuser = true;
                }
                audit.push("group_added", "success", None, group_details(gid));
                added.push(gid);
            }
        }
        for gid in diff.remove {
            if gid == ADMINISTRATORS_GROUP_ID {
                let others: i64 = tx
                    .prepare(
                        "SELECT COUNT(*) FROM users WHERE is_superuser = TRUE AND is_active = TRUE AND id <> ?1",
                    )?
                    .query_row(params![user_id], |r| r.get(0))?;
                if others == 0 {
                    let details = group_details(gid);
                    audit.push("group_removed", "skipped", Some("last_admin_kept"), details);
                    kept.push(gid);
                    continue;
                }
                set_superuser(tx, user_id, false, now)?;
                user.is_superuser = false;
            }
            let gone = tx
                .prepare("DELETE FROM memberships WHERE user_id = ?1 AND group_id = ?2")?
                .execute(params![user_id, gid])?;
            if gone > 0 {
                audit.push("group_removed", "success", None, group_details(gid));
                removed.push(gid);
            }
        }
    }
    let s = &l.session;
    tx.prepare(INSERT_SESSION)?.execute(params![
        session_id,
        &s.id_hash[..],
        user_id,
        previous_session,
        s.now,
        s.expires_at,
        s.auth_method,
        s.ip,
        s.user_agent
    ])?;
    // As `end_replaced_session` in queries.rs: only another user's session.
    if let Some(old) = &s.replaces {
        end_other_session(tx, old, user_id)?;
    }
    audit.push("sso_login", "success", None, login_details(created));
    let base = AuditRecord {
        user_id: Some(user_id),
        email: Some(l.email.to_owned()),
        ..l.audit.clone()
    };
    let first = match new_user_events {
        Some((first, _)) => first,
        None => tx.new_ids(NewIds::Events, audit.rows.len())?,
    };
    let last_event = audit.insert(tx, &base, previous_event, first)?;
    if let Some((_, newest)) = new_user_events {
        // Fewer events than counted (a mapped group that no longer exists): the ids left
        // over are never used, and the row is told its newest.
        if newest != last_event {
            tx.prepare(SET_LAST_EVENT)?
                .execute(params![user_id, last_event])?;
        }
    } else {
        tx.prepare(UPDATE_USER)?.execute(params![
            user_id,
            l.first_name,
            l.last_name,
            attrs,
            l.subject,
            now,
            last_event,
            session_id
        ])?;
    }
    Ok(SsoOutcome::LoggedIn {
        user: Box::new(user),
        created,
        added,
        removed,
        kept,
    })
}

/// The audit rows of one login, written together by [`Audit::insert`].
#[derive(Default)]
struct Audit {
    rows: Vec<AuditRow>,
}

/// An audit row's own values: kind, outcome, reason and details.
type AuditRow = (&'static str, &'static str, Option<&'static str>, String);

impl Audit {
    /// `details` is the JSON text, as `serde_json` writes it (these few shapes are written
    /// directly: building and serialising a `Value` for each was 1.5 % of a login).
    fn push(
        &mut self,
        kind: &'static str,
        outcome: &'static str,
        reason: Option<&'static str>,
        details: String,
    ) {
        self.rows.push((kind, outcome, reason, details));
    }

    /// One `INSERT` for all rows, in order. What they share comes from `base` and is bound
    /// once, as parameters 1–6 that every row names ([`audit_sql`]); each row then binds its
    /// own four. Binding a text copies it, so the login's three rows bound their email, ip
    /// and request id three times each.
    ///
    /// The rows take the ids from `first` on ([`Stmts::new_ids`]), and each names the one
    /// before it as the user's previous event (the first names `previous`, the user's newest
    /// before the login): the chain through which a user's events are listed (migration
    /// 0006). Each also names the previous event of its kind, the kind's newest so far
    /// ([`Stmts::kind_head`]), and becomes it: the chain through which a kind's events are
    /// listed (migration 0008). Returns the last row's id, the user's newest event now.
    fn insert(&self, tx: &mut Stmts<'_>, base: &AuditRecord, previous: i64, first: i64) -> R<i64> {
        // Each row's previous event of its kind: the kind's newest, which it then becomes.
        let mut kind_prev = Vec::with_capacity(self.rows.len());
        for (id, (kind, ..)) in (first..).zip(&self.rows) {
            let head = tx.kind_head(kind)?;
            kind_prev.push(head.newest);
            head.newest = id;
            head.changed = true;
        }
        let per = super::AUDIT_ROWS_PER_STATEMENT;
        let statements = self.rows.chunks(per).zip(kind_prev.chunks(per));
        for (i, (rows, kind_prev)) in statements.enumerate() {
            let id = first + (i * per) as i64;
            // The user's previous event: the one before the login's, then this statement's
            // previous row.
            let previous = if i == 0 { previous } else { id - 1 };
            insert_rows(tx, base, rows, kind_prev, id, previous)?;
        }
        let end = first + self.rows.len() as i64;
        // Within the ids taken ([`Stmts::new_ids`]; a new user's login counts its rows first).
        debug_assert!(tx.next_ids[NewIds::Events as usize].is_some_and(|next| end <= next));
        Ok(end - 1)
    }
}

/// One statement of [`Audit::insert`]: `rows`, with the ids from `first` on.
fn insert_rows(
    tx: &mut Stmts<'_>,
    base: &AuditRecord,
    rows: &[AuditRow],
    kind_prev: &[i64],
    first: i64,
    previous: i64,
) -> R<()> {
    let mut one_off;
    let stmt = match kept_audit_sql(rows.len()) {
        Some(sql) => tx.prepare(sql)?,
        None => {
            one_off = tx.db.prepare_cached(&audit_sql(rows.len()))?;
            &mut *one_off
        }
    };
    let shared: [&dyn rusqlite::ToSql; AUDIT_SHARED] = [
        &base.at,
        &base.actor_id,
        &base.user_id,
        &base.email,
        &base.ip,
        &base.request_id,
    ];
    let mut n = 1;
    for v in shared {
        stmt.raw_bind_parameter(n, v)?;
        n += 1;
    }
    for v in [first, previous] {
        stmt.raw_bind_parameter(n, v)?;
        n += 1;
    }
    for ((kind, outcome, reason, details), kind_prev) in rows.iter().zip(kind_prev) {
        let own: [&dyn rusqlite::ToSql; AUDIT_OWN] = [kind, outcome, reason, details, kind_prev];
        for v in own {
            stmt.raw_bind_parameter(n, v)?;
            n += 1;
        }
    }
    stmt.raw_execute()?;
    Ok(())
}

/// The values every audit row of a login shares (`at`, `actor_id`, `user_id`, `email`, `ip`,
/// `request_id`), then the first row's id and the user's previous event, and those of each
/// row (`kind`, `outcome`, `reason`, `details`, and its kind's previous event).
const AUDIT_SHARED: usize = 6;
const AUDIT_CHAIN: usize = 2;
const AUDIT_OWN: usize = 5;

/// The audit insert for `rows` rows: the shared values are `?1`–`?6` in every row, row `r`
/// (from 0) has the id `?7 + r` and the user's previous event `?8` (the first row) or
/// `?7 + r - 1`, and its own values in `?9 + 5r` to `?13 + 5r`: those of `AUDIT_COLUMNS`, then
/// `kind_prev`.
fn audit_sql(rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let own = AUDIT_SHARED + AUDIT_CHAIN + 1 + AUDIT_OWN * r;
            let id = |r: usize| match r {
                0 => "?7".to_owned(),
                r => format!("?7 + {r}"),
            };
            let previous = match r {
                0 => "?8".to_owned(),
                r => id(r - 1),
            };
            format!(
                "({}, {}, ?{}, ?1, ?{}, ?{}, ?{}, ?2, ?3, ?4, ?5, ?6, ?{})",
                id(r),
                previous,
                own + 4,
                own,
                own + 1,
                own + 2,
                own + 3
            )
        })
        .collect();
    format!(
        "INSERT OR FAIL INTO audit_events (id, user_prev, kind_prev, {}) VALUES {}",
        super::AUDIT_COLUMNS,
        values.join(", ")
    )
}

/// [`audit_sql`] made once, for the row counts of nearly every login (three rows for a
/// returning login whose groups change; more only when several groups change at once).
fn kept_audit_sql(rows: usize) -> Option<&'static str> {
    static SQL: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (1..=8).map(audit_sql).collect());
    SQL.get(rows.checked_sub(1)?).map(String::as_str)
}

/// The details of a group's audit row: `{"group_id":…,"source":"jwt"}`.
fn group_details(group_id: i64) -> String {
    [
        r#"{"group_id":"#,
        itoa::Buffer::new().format(group_id),
        r#","source":"jwt"}"#,
    ]
    .concat()
}

/// The details of the login's own audit row: `{"created":…}`.
fn login_details(created: bool) -> String {
    if created {
        r#"{"created":true}"#
    } else {
        r#"{"created":false}"#
    }
    .to_owned()
}

/// Adds a membership if the group exists; whether a row was added.
fn add_member(tx: &mut Stmts<'_>, user_id: i64, group_id: i64) -> R<bool> {
    let n = tx
        .prepare(
            "INSERT OR FAIL INTO memberships (user_id, group_id) SELECT ?1, id FROM groups WHERE id = ?2 \
             ON CONFLICT (user_id, group_id) DO NOTHING",
        )?
        .execute(params![user_id, group_id])?;
    Ok(n > 0)
}

/// Ends the session stored under `id_hash` if it is not `user_id`'s, first linking its newer
/// neighbour in its user's chain to its older one: `queries.rs::end_session`, on the login
/// writer's connection.
fn end_other_session(tx: &mut Stmts<'_>, id_hash: &[u8], user_id: i64) -> R<()> {
    let link = tx
        .prepare(super::SESSION_LINK_SQL)?
        .query_row(params![id_hash], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()?;
    let Some((id, owner, older)) = link else {
        return Ok(());
    };
    if owner == user_id {
        return Ok(());
    }
    let newer: Option<i64> = tx
        .prepare(super::NEWER_SESSION_SQL)?
        .query_row(params![owner, id], |r| r.get(0))
        .optional()?;
    match newer {
        Some(newer) => tx
            .prepare(super::SET_SESSION_PREV_SQL)?
            .execute(params![newer, older])?,
        None => tx
            .prepare(super::SET_NEWEST_SESSION_SQL)?
            .execute(params![owner, older, id])?,
    };
    tx.prepare(super::DELETE_SESSION_SQL)?
        .execute(params![id])?;
    Ok(())
}

fn set_superuser(tx: &mut Stmts<'_>, user_id: i64, value: bool, now: i64) -> R<()> {
    tx.prepare("UPDATE OR FAIL users SET is_superuser = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![user_id, value, now])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Every row gets the shared values and its own, for the kept statements and a one-off,
    /// and the rows take the next ids, each pointing back to the one before (the first to the
    /// user's previous event) and to the previous one of its kind (the first of each kind to
    /// the kind's newest in `audit_kinds`, which the transaction then moves).
    #[test]
    fn each_audit_row_has_the_shared_values_and_its_own() {
        let db = rusqlite::Connection::open_in_memory().unwrap();
        for migration in sqlx::migrate!("./migrations/sqlite").migrations.iter() {
            db.execute_batch(migration.sql.as_str()).unwrap();
        }
        // An older event of another user: the login's rows take the ids after it.
        db.execute(
            "INSERT INTO audit_events (id, at, kind, outcome, user_prev) VALUES (40, 1, 'x', 'success', 0)",
            [],
        )
        .unwrap();
        db.execute(
            "INSERT INTO audit_kinds (kind, last_id) VALUES ('group_added', 30), ('x', 40)",
            [],
        )
        .unwrap();
        let base = super::AuditRecord {
            actor_id: None,
            user_id: Some(7),
            email: Some("ada@example.com".into()),
            ip: Some("192.0.2.1".into()),
            request_id: Some("r-1".into()),
            ..super::AuditRecord::success(1_700_000_000, "sso_login")
        };
        for rows in [1, 3, 8, 11] {
            db.execute("DELETE FROM audit_events WHERE id > 40", [])
                .unwrap();
            let mut audit = super::Audit { rows: Vec::new() };
            for r in 0..rows {
                let (kind, outcome, reason) = match r % 3 {
                    0 => ("group_added", "success", None),
                    1 => ("group_removed", "skipped", Some("last_admin_kept")),
                    _ => ("sso_login", "success", None),
                };
                audit.push(kind, outcome, reason, super::group_details(r as i64));
            }
            let mut tx = super::Stmts::new(&db);
            let first = tx.new_ids(super::NewIds::Events, rows).unwrap();
            let last = audit.insert(&mut tx, &base, 17, first).unwrap();
            drop(tx);
            assert_eq!(last, 40 + rows as i64, "{rows} rows");
            let got: Vec<Vec<rusqlite::types::Value>> = db
                .prepare(&format!(
                    "SELECT id, user_prev, kind_prev, {} FROM audit_events WHERE id > 40 ORDER BY id",
                    super::super::AUDIT_COLUMNS
                ))
                .unwrap()
                .query_map([], |row| {
                    (0..13).map(|i| row.get(i)).collect::<rusqlite::Result<_>>()
                })
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(got.len(), rows, "{rows} rows");
            for (r, row) in got.iter().enumerate() {
                use rusqlite::types::Value::{Integer, Null, Text};
                let (kind, outcome, reason, _) = &audit.rows[r];
                let reason = reason.map_or(Null, |x| Text(x.into()));
                let id = 41 + r as i64;
                let same_kind = (0..r).rev().find(|&o| audit.rows[o].0 == *kind);
                let kind_prev = match same_kind {
                    Some(o) => 41 + o as i64,
                    None if *kind == "group_added" => 30,
                    None => 0,
                };
                let expected = vec![
                    Integer(id),
                    Integer(if r == 0 { 17 } else { id - 1 }),
                    Integer(kind_prev),
                    Integer(1_700_000_000),
                    Text((*kind).into()),
                    Text((*outcome).into()),
                    reason,
                    Null,
                    Integer(7),
                    Text("ada@example.com".into()),
                    Text("192.0.2.1".into()),
                    Text("r-1".into()),
                    Text(super::group_details(r as i64)),
                ];
                assert_eq!(row, &expected, "{rows} rows, row {r}");
            }
        }
        // Two logins of one transaction: the second's rows take the ids after the first's,
        // which the transaction read once.
        db.execute("DELETE FROM audit_events WHERE id > 40", [])
            .unwrap();
        let mut audit = super::Audit { rows: Vec::new() };
        audit.push("sso_login", "success", None, super::login_details(false));
        audit.push("sso_login", "success", None, super::login_details(false));
        let mut tx = super::Stmts::new(&db);
        let first = tx.new_ids(super::NewIds::Events, 2).unwrap();
        assert_eq!(audit.insert(&mut tx, &base, 0, first).unwrap(), 42);
        let first = tx.new_ids(super::NewIds::Events, 2).unwrap();
        assert_eq!(audit.insert(&mut tx, &base, 5, first).unwrap(), 44);
        tx.save_kind_heads().unwrap();
        drop(tx);
        let chain: Vec<(i64, i64, i64)> = db
            .prepare("SELECT id, user_prev, kind_prev FROM audit_events WHERE id > 40 ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(chain, [(41, 0, 0), (42, 41, 41), (43, 5, 42), (44, 43, 43)]);
        // The kind's newest is written once, as a new row; the others are as they were.
        let heads: Vec<(String, i64)> = db
            .prepare("SELECT kind, last_id FROM audit_kinds ORDER BY kind")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let heads: Vec<(&str, i64)> = heads.iter().map(|(k, id)| (k.as_str(), *id)).collect();
        assert_eq!(heads, [("group_added", 30), ("sso_login", 44), ("x", 40)]);
        // A next transaction reads it and moves it with an update.
        let mut tx = super::Stmts::new(&db);
        let first = tx.new_ids(super::NewIds::Events, 2).unwrap();
        assert_eq!(audit.insert(&mut tx, &base, 0, first).unwrap(), 46);
        tx.save_kind_heads().unwrap();
        drop(tx);
        let (prev, newest): (i64, i64) = db
            .query_row(
                "SELECT (SELECT kind_prev FROM audit_events WHERE id = 45), \
                 (SELECT last_id FROM audit_kinds WHERE kind = 'sso_login')",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert_eq!((prev, newest), (44, 46));
    }

    /// The audit details written as text are what PostgreSQL's path serialises.
    #[test]
    fn the_audit_details_are_the_json_that_serde_writes() {
        for gid in [1, 3, 4_000_000_000, i64::MAX, -7] {
            let expected = json!({"group_id": gid, "source": "jwt"}).to_string();
            assert_eq!(super::group_details(gid), expected);
        }
        for created in [true, false] {
            let expected = json!({"created": created}).to_string();
            assert_eq!(super::login_details(created), expected);
        }
    }
}
