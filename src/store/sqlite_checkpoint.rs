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
//!    meanwhile: it copies only what was committed during the last round, and the next
//!    commit starts the log again from its beginning. Without this step a writer that never
//!    pauses keeps the log growing for ever. Thanks to the rounds of step 1 the rest is short
//!    (waiting for this thread to do it took 2–3 ms of held-back logins on a shared core), but
//!    its two `fsync`s still wait for the disk, so the writer runs it on a thread for blocking
//!    work and the runtime goes on serving requests meanwhile (`sqlite_login::finish_log`).
//!    Before asking for it, this thread flushes the log and the database file itself
//!    ([`flush_files`]), so that those two `fsync`s only write what step 2 copies;
//! 3. should the log reach [`RESTART_FRAMES`] all the same (other writers that never pause),
//!    a RESTART checkpoint, SQLite's own way to force a restart: it holds writers back, and
//!    they wait for it in the busy handler.
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
                Duration::from_secs(1),
                "PRAGMA wal_autocheckpoint = 0;",
                false,
            )
            .map_err(|e| tracing::warn!(error = %e, "checkpoint: cannot open the database"))
            .ok();
        }
        if let Some(c) = &conn
            && let Err(e) = checkpoint(c, path, shared)
        {
            tracing::warn!(error = %e, "checkpoint failed");
            conn = None;
        }
    }
}

/// Steps 1 and 3 described at the top; asks for step 2.
///
/// Before it asks, it flushes the log and the database file to the disk itself
/// ([`flush_files`]), so that step 2, which the login writer waits for, flushes only what it
/// copies itself.
fn checkpoint(
    c: &rusqlite::Connection,
    path: &std::path::Path,
    shared: &Shared,
) -> rusqlite::Result<()> {
    let mut log = passive(c)?;
    // Catch up with what was committed meanwhile, until little is: what the writer still
    // copies in step 2 is then short.
    for _ in 0..CATCH_UP_ROUNDS {
        let now = passive(c)?;
        let added = now - log;
        log = now;
        if added < CATCH_UP_FRAMES {
            break;
        }
    }
    if log >= RESTART_FRAMES {
        c.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    } else if log >= TAIL_FRAMES {
        flush_files(path);
        shared.tail_wanted.store(true, Ordering::Release);
    }
    Ok(())
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

/// Runs `PRAGMA wal_checkpoint(PASSIVE)`; the log's length in pages (-1 outside WAL mode).
/// A checkpoint that could not finish (a reader still needs the log) is not an error: the
/// next one goes on.
pub(super) fn passive(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
}
