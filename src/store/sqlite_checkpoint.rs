//! WAL checkpoints on a thread of their own, off the request path.
//!
//! By default SQLite checkpoints inside the commit that takes the write-ahead log past 1,000
//! pages: that commit copies the log into the database file and waits for two `fsync`s, and
//! every request behind it waits too (on one busy core, a pause of tens of milliseconds that
//! showed up as the SSO p99). Latchkey turns the automatic checkpoint off on its
//! connections and runs them here instead, shortly after logins were committed (or once a
//! second, for the other writes):
//!
//! 1. a PASSIVE checkpoint, which copies the log without holding writers back, repeated
//!    while commits made during the previous one added many pages (each round copies only
//!    those, so the rounds get shorter);
//! 2. if the log was long ([`TAIL_FRAMES`]), a last PASSIVE checkpoint, which the SSO login
//!    writer (which commits nearly all of the log) runs on its own connection right after its
//!    next commit, while it still holds the write connection, so that no commit lands
//!    meanwhile: it copies only what was committed during the last round, and starts the log
//!    again from its beginning (below). Without this step a writer that never pauses keeps
//!    the log growing for ever. Thanks to the rounds of step 1 the rest is short
//!    (waiting for this thread to do it took 2–3 ms of held-back logins on a shared core), but
//!    its two `fsync`s still wait for the disk, so the writer runs it on a thread for blocking
//!    work and the runtime goes on serving requests meanwhile (`sqlite_login::finish_log`).
//!    Before asking for it, this thread flushes the log and the database file itself
//!    ([`flush_files`]), so that those two `fsync`s only write what step 2 copies;
//! 3. should the log reach [`RESTART_FRAMES`] all the same (other writers that never pause),
//!    a RESTART checkpoint, SQLite's own way to force a restart: it holds writers back, and
//!    they wait for it in the busy handler.
//!
//! Once a checkpoint has copied the whole log, SQLite starts it again from its beginning in
//! the next write transaction, and that transaction's commit flushes the log's new header to
//! the disk (an `fdatasync`). A login's commit runs on the runtime's thread, and that flush
//! usually takes well under a millisecond, but right after another program wrote much to the
//! same disk it took 100–120 ms, during which nothing else was served (in the benchmark, the
//! first batch after the harness wrote its next file of tokens: one such pause put the
//! returning logins' p99 at 20–45 ms). So the log is started again by whoever copied it
//! last ([`restart_log`]): this thread, when its rounds copied everything and no commit came
//! meanwhile, and the login writer's step 2, on its thread for blocking work. This thread then
//! skips its rounds until another connection commits (`PRAGMA data_version`), since its only
//! page would be the restart's own.
//!
//! Durability is unchanged: a commit is in the log before it is answered; checkpoints only
//! move it into the database file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Checkpoint at least this often, for writes that do not nudge (everything but SSO logins).
const PERIOD: Duration = Duration::from_secs(1);
/// After a nudge, wait until this long after the previous checkpoint, so that one
/// checkpoint covers the commits of several batches.
const MIN_GAP: Duration = Duration::from_millis(30);
/// Log length (pages) from which the login writer is asked to finish the checkpoint (step
/// 2): about ten times a second at 15k logins/s, with a log of about 20 MiB at most.
const TAIL_FRAMES: i64 = 5_000;
/// Step 1 repeats (at most this many more times) while the previous round found at least
/// [`CATCH_UP_FRAMES`] new pages in the log.
const CATCH_UP_ROUNDS: usize = 4;
const CATCH_UP_FRAMES: i64 = 64;
/// Log length (pages) from which the checkpoint forces a restart of the log.
const RESTART_FRAMES: i64 = 50_000;
/// How long this thread's connection waits for a lock (the RESTART checkpoint's).
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    nudged: AtomicBool,
    stop: AtomicBool,
    tail_wanted: AtomicBool,
}

impl Checkpointer {
    /// Starts the checkpoint thread for the database at `path`.
    pub fn start(path: PathBuf) -> Checkpointer {
        let shared = Arc::new(Shared::default());
        let inner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("latchkey-checkpoint".into())
            .spawn(move || run(&path, &inner))
            .map_err(|e| tracing::warn!(error = %e, "cannot start the checkpoint thread"))
            .ok();
        Checkpointer { shared, thread }
    }

    /// Commits were made: checkpoint soon.
    pub fn nudge(&self) {
        if !self.shared.nudged.swap(true, Ordering::AcqRel)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
    }

    /// Whether the last checkpoint asked for step 2 (asked once).
    pub fn tail_wanted(&self) -> bool {
        self.shared.tail_wanted.swap(false, Ordering::AcqRel)
    }

    /// Stops the thread (it closes its connection on its way out).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Not inlined into the thread's closure: `bench/count-instructions` finds the thread's share
/// of a profile by this function's name.
#[inline(never)]
fn run(path: &std::path::Path, shared: &Shared) {
    let mut conn: Option<rusqlite::Connection> = None;
    let mut last = Instant::now();
    // The connection's `data_version` when it last started the log again itself: until
    // another connection commits, there is nothing to copy.
    let mut quiet: Option<i64> = None;
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let wait = if shared.nudged.load(Ordering::Acquire) {
            MIN_GAP
        } else {
            PERIOD
        };
        if let Some(left) = wait.checked_sub(last.elapsed()) {
            std::thread::park_timeout(left);
            continue;
        }
        shared.nudged.store(false, Ordering::Release);
        last = Instant::now();
        // The thread's connection, opened if need be and dropped after an error.
        if conn.is_none() {
            conn = super::sqlite_login::connect(
                path,
                BUSY_TIMEOUT,
                "PRAGMA wal_autocheckpoint = 0;",
                false,
            )
            .map_err(|e| tracing::warn!(error = %e, "checkpoint: cannot open the database"))
            .ok();
            quiet = None;
        }
        if let Some(c) = &conn
            && let Err(e) = checkpoint(c, path, shared, &mut quiet)
        {
            tracing::warn!(error = %e, "checkpoint failed");
            conn = None;
        }
    }
}

/// Steps 1 and 3 described at the top; asks for step 2; starts the log again when it copied
/// all of it while no login was committed.
///
/// Before it asks, it flushes the log and the database file to the disk itself
/// ([`flush_files`]), so that step 2, which the login writer waits for, flushes only what it
/// copies itself.
fn checkpoint(
    c: &rusqlite::Connection,
    path: &std::path::Path,
    shared: &Shared,
    quiet: &mut Option<i64>,
) -> rusqlite::Result<()> {
    let version = data_version(c)?;
    if *quiet == Some(version) {
        return Ok(());
    }
    *quiet = None;
    let mut log = passive(c)?;
    // Catch up with what was committed meanwhile, until little is: what the writer still
    // copies in step 2 is then short.
    for _ in 0..CATCH_UP_ROUNDS {
        let now = passive(c)?;
        let added = now.log - log.log;
        log = now;
        if added < CATCH_UP_FRAMES {
            break;
        }
    }
    // Not while logins are being committed (a nudge came meanwhile): the writer would wait
    // for this write in its busy handler, on the runtime's thread. While they are, the log is
    // started again by step 2 (or 3), as when this thread's rounds cannot copy all of it.
    if log.all_copied() && !shared.nudged.load(Ordering::Acquire) {
        if restart_log(c, Some(BUSY_TIMEOUT))? && data_version(c)? == version {
            // Its own write does not change the version: only another connection's does.
            *quiet = Some(version);
        }
    } else if log.log >= RESTART_FRAMES {
        c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    } else if log.log >= TAIL_FRAMES {
        flush_files(path);
        shared.tail_wanted.store(true, Ordering::Release);
    }
    Ok(())
}

/// Changes whenever another connection commits.
fn data_version(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    c.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// Starts the log again from its beginning, now, after a checkpoint that copied all of it:
/// SQLite does that in the first write transaction that finds the log so, and flushes the new
/// header in its commit. This transaction's only change is the database header's
/// `user_version`, set to what it is (Latchkey does not use it), which gives the commit a
/// page to write. On this thread's connection (`busy`: its own timeout, to set again after),
/// it gives up at once (`false`) should another connection hold the write lock: that one is
/// writing, so the log is no longer all copied anyway. A commit that lands between the
/// checkpoint and this write makes it one more page at the end of the log, and changes
/// nothing else.
pub(super) fn restart_log(
    c: &rusqlite::Connection,
    busy: Option<Duration>,
) -> rusqlite::Result<bool> {
    if busy.is_some() {
        c.busy_timeout(Duration::ZERO)?;
    }
    let began = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate);
    if let Some(timeout) = busy {
        c.busy_timeout(timeout)?;
    }
    let tx = match began {
        Ok(tx) => tx,
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    tx.pragma_update(None, "user_version", version)?;
    tx.commit()?;
    Ok(true)
}

/// `fdatasync` of the database file and of its log, through descriptors of this thread's own
/// (a flush is the file's, whichever descriptor asks for it). SQLite flushes the database file
/// only at the end of a checkpoint that copied the whole log, which while logins keep coming
/// is only step 2: the pages that this thread's rounds had copied since the last step 2 were
/// all written to the disk there, and the log's frames since this thread's last round too,
/// while the login writer waited. On a slow disk that was 8–25 ms about four times a second,
/// which held back every login in flight (all 32 of the benchmark's connections at once: the
/// returning logins' p99). Flushed here first, step 2 is left with the pages of its own short
/// copy. Extra flushes cost nothing in safety, and a failed one only leaves the work to step 2.
fn flush_files(path: &std::path::Path) {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    for file in [std::path::Path::new(&log), path] {
        if let Err(e) = std::fs::File::open(file).and_then(|f| f.sync_data()) {
            tracing::warn!(error = %e, "checkpoint: cannot flush {}", file.display());
        }
    }
}

/// What a checkpoint found: the log's length in pages (-1 outside WAL mode), and how many of
/// them are in the database file now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Copied {
    pub log: i64,
    pub copied: i64,
}

impl Copied {
    /// Whether the log has pages and every one of them is in the database file.
    pub fn all_copied(self) -> bool {
        self.log > 0 && self.copied == self.log
    }
}

/// Runs `PRAGMA wal_checkpoint(PASSIVE)`. A checkpoint that could not finish (a reader still
/// needs the log) is not an error: the next one goes on.
pub(super) fn passive(c: &rusqlite::Connection) -> rusqlite::Result<Copied> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok(Copied {
            log: r.get(1)?,
            copied: r.get(2)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The log's salts, which SQLite changes every time it starts the log again.
    fn salts(path: &std::path::Path) -> [u8; 8] {
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        let bytes = std::fs::read(std::path::Path::new(&log)).unwrap();
        bytes[16..24].try_into().unwrap()
    }

    fn write(db: &rusqlite::Connection, v: &str) {
        db.execute("INSERT INTO t (v) VALUES (?1)", [v]).unwrap();
    }

    /// A database in WAL mode with one table, and a connection to it (through the login
    /// connection's VFS with `gather`) with automatic checkpoints off.
    fn open(dir: &tempfile::TempDir, gather: bool) -> (std::path::PathBuf, rusqlite::Connection) {
        let path = dir.path().join("t.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
            )
            .unwrap();
        let db = crate::store::sqlite_login::connect(
            &path,
            BUSY_TIMEOUT,
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;",
            gather,
        )
        .unwrap();
        (path, db)
    }

    fn rows(db: &rusqlite::Connection) -> i64 {
        db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// A checkpoint that copies the whole log while nothing is being committed starts the log
    /// again itself, so that the next commit of another connection only appends to it; and
    /// until another connection commits, it has nothing to do. A nudge during its rounds
    /// (logins being committed) leaves the restart to the writer.
    #[test]
    fn a_checkpoint_that_copied_everything_starts_the_log_again_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = open(&dir, false);
        let (_, c) = open(&dir, false);
        let shared = Shared::default();
        let mut quiet = None;
        write(&writer, "a");
        let before = salts(&path);
        checkpoint(&c, &path, &shared, &mut quiet).unwrap();
        let restarted = salts(&path);
        assert_ne!(restarted, before, "started again");
        assert!(quiet.is_some());
        let version: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0, "the restart changes no value");
        // Nothing committed by others since: this round is skipped. (Had it copied the
        // restart's page, the writer's next commit would start the log again.)
        checkpoint(&c, &path, &shared, &mut quiet).unwrap();
        write(&writer, "b");
        assert_eq!(salts(&path), restarted, "the writer's commit appended");
        // Another connection committed: the next round copies it and starts the log again.
        checkpoint(&c, &path, &shared, &mut quiet).unwrap();
        let again = salts(&path);
        assert_ne!(again, restarted);
        assert!(quiet.is_some());
        // Logins being committed during the rounds: all copied, the restart left to them.
        write(&writer, "c");
        shared.nudged.store(true, Ordering::Release);
        checkpoint(&c, &path, &shared, &mut quiet).unwrap();
        assert_eq!(salts(&path), again);
        assert!(quiet.is_none());
        write(&writer, "d");
        assert_ne!(
            salts(&path),
            again,
            "the writer started the log again itself"
        );
        assert_eq!(rows(&writer), 4);
        assert_eq!(rows(&c), 4);
        // A long log, copied whole while logins are being committed: the login writer is
        // asked to finish it (step 2), which starts it again.
        writer
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5200) \
                 INSERT INTO t (v) SELECT printf('%.3000c', 'x') FROM n",
            )
            .unwrap();
        shared.nudged.store(true, Ordering::Release);
        assert!(!shared.tail_wanted.load(Ordering::Acquire));
        checkpoint(&c, &path, &shared, &mut quiet).unwrap();
        assert!(shared.tail_wanted.load(Ordering::Acquire));
    }

    /// The login writer's last step (step 2) copies the rest of the log and starts it again
    /// on its own connection, whose log writes the VFS gathers: the next commit appends, and
    /// nothing is lost.
    #[test]
    fn the_writer_s_last_step_starts_the_log_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = open(&dir, true);
        for i in 0..50 {
            write(&writer, &format!("row {i}"));
        }
        let before = salts(&path);
        crate::store::sqlite_login::finish_log_on(&writer).unwrap();
        let restarted = salts(&path);
        assert_ne!(restarted, before);
        write(&writer, "after");
        assert_eq!(salts(&path), restarted, "the next commit appended");
        drop(writer);
        let plain = rusqlite::Connection::open(&path).unwrap();
        assert_eq!(rows(&plain), 51);
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
