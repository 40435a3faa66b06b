//! A SQLite VFS that hands each transaction's log frames to the kernel in a few large writes.
//!
//! SQLite appends a committed page to the write-ahead log as a frame: a 24-byte header, then
//! the page, each with a `pwrite` of its own. For a batch of logins that is about a hundred
//! frames, two hundred system calls, and three page-cache lookups per frame, since a frame
//! (4,120 bytes) straddles two of the kernel's pages. This VFS wraps the platform's default
//! one and changes only how the log is written: consecutive frames are gathered in memory and
//! written (64 KiB per call) as soon as the frame that commits the transaction is complete, and
//! before anything else touches the file (a read, a sync, a size query, a truncation, a file
//! control, closing it). So when SQLite goes on to publish the commit in the shared WAL index,
//! every frame of it is in the file, exactly as without the buffer, and a commit is as
//! durable as before: against a crash of the process at once, against one of the machine at
//! the next `fsync` that the `synchronous` setting asks for.
//!
//! Two rules keep gathered bytes from outliving their moment. Writes below the furthest byte
//! already written (frames a transaction rewrites in place, and the checksums SQLite rewrites
//! after the commit frame when it did) go straight to the file. And the login connection
//! calls [`discard`] whenever one of its transactions ends: after a rollback, frames written
//! before the commit that never came are dead, and once the write lock is gone another
//! connection may commit at their offsets. The login connection also turns cache spills off,
//! so its transactions reach the log only in the write of their commit.
//!
//! It finds frame boundaries from the log's own format (a 32-byte file header whose bytes
//! 8–11 give the page size, then frames of 24 + page-size bytes; a frame header's bytes 4–7
//! are non-zero on the frame that commits: <https://www.sqlite.org/fileformat2.html#walformat>),
//! not from how SQLite splits its calls. A write it cannot place in that format goes straight
//! to the file, after anything gathered. Other files (the database, its journal, temporary
//! files) are the default VFS's own, untouched.
//!
//! Only the login connection (`sqlite_login.rs`) opens the database through it; the other
//! connections of the process share the same files through the default VFS, which is safe
//! because only the writer of a transaction ever has frames gathered, and it writes them
//! before the transaction becomes visible.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the login connection opens its database with.
pub const NAME: &CStr = c"latchkey-wal";

/// Frames gathered beyond this many bytes are written at once (a transaction larger than
/// this, such as a migration, reaches the file in pieces of about this size).
const MAX_GATHERED: usize = 1 << 20;
/// The most bytes handed to the default VFS in one write: the Unix VFS writes at most
/// 128 KiB − 1 bytes per call (`seekAndWriteFd` masks the length with `0x1ffff`).
const MAX_WRITE: usize = 64 * 1024;
const WAL_HEADER: i64 = 32;
const FRAME_HEADER: i64 = 24;

/// Registers the VFS (once per process) and says whether it is available.
pub fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS, which lives as long as
        // the process; the copy is leaked so that it does too, as SQLite requires of a
        // registered VFS.
        unsafe {
            let inner = ffi::sqlite3_vfs_find(std::ptr::null());
            if inner.is_null() {
                return false;
            }
            let mut vfs = *inner;
            vfs.szOsFile = inner_offset() as c_int + (*inner).szOsFile;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = inner.cast();
            vfs.xOpen = Some(open);
            // The other methods are the default VFS's own: the Unix one reads nothing from
            // its `sqlite3_vfs` argument but `mxPathname` (copied) and, in `xOpen` alone,
            // `pAppData`, which `open` passes as the default VFS itself.
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

/// Forgets what is still gathered for the log of `db`'s main database, without writing it.
/// The login connection calls it whenever one of its transactions has ended. After a commit
/// nothing is left (the commit frame wrote it). After a rollback, frames the transaction wrote
/// before its commit may be, and they are dead: once the write lock is released another
/// connection may put its own committed frames at those offsets, which a later write of
/// these would destroy.
pub fn discard(db: &rusqlite::Connection) {
    with_wal_file(db, |f| f.gathered.clear());
}

/// Runs `act` on the `WalFile` of `db`'s log, when it is open through this VFS.
fn with_wal_file<T>(db: &rusqlite::Connection, act: impl FnOnce(&mut WalFile) -> T) -> Option<T> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `SQLITE_FCNTL_JOURNAL_POINTER` stores the pager's journal or log file (or null)
    // through the pointer it is given; a file whose methods are ours is a `WalFile`, open
    // until the connection closes it; `db` is used by one thread at a time and is not inside
    // a call to SQLite while `act` runs.
    unsafe {
        let rc = ffi::sqlite3_file_control(
            db.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_JOURNAL_POINTER,
            (&raw mut file).cast(),
        );
        if rc != ffi::SQLITE_OK || file.is_null() || !std::ptr::eq((*file).pMethods, &METHODS) {
            return None;
        }
        Some(act(&mut *file.cast::<WalFile>()))
    }
}

/// A log file: the frames gathered so far, then (at `inner_offset()`) the default VFS's file.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes not yet written, from file offset `start`.
    gathered: Vec<u8>,
    start: i64,
    /// The offset of the next frame header whose commit field has not been read.
    next_frame: i64,
    /// The end of the furthest byte this file has written or gathered since it last wrote a
    /// log header. SQLite appends at or beyond it; below it, it only rewrites frames of the
    /// transaction at hand (a page changed again after it was spilled, then the checksums
    /// after it, down to the commit frame's header), and those writes go straight to the file:
    /// the last of them comes after the commit frame, so gathered it would miss the commit.
    frontier: i64,
    /// The log's page size, once known (from its header); 0 before.
    page_size: i64,
}

const fn inner_offset() -> usize {
    std::mem::size_of::<WalFile>().next_multiple_of(16)
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes a VFS registered by `register`, whose `pAppData` is the default
    // VFS, and `file` points to `szOsFile` bytes, room for a `WalFile` and the default VFS's
    // file after it at `inner_offset()` (a multiple of 16, and SQLite's allocations are
    // 8-aligned as the Unix file needs).
    unsafe {
        let inner_vfs: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let Some(inner_open) = (*inner_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return inner_open(inner_vfs, name, file, flags, out_flags);
        }
        let inner = file
            .cast::<u8>()
            .add(inner_offset())
            .cast::<ffi::sqlite3_file>();
        let rc = inner_open(inner_vfs, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // SQLite does not close a file whose open failed when its methods are null.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            inner,
            gathered: Vec::new(),
            start: 0,
            next_frame: 0,
            frontier: 0,
            page_size: 0,
        });
        ffi::SQLITE_OK
    }
}

impl WalFile {
    /// The default VFS's methods for the file underneath.
    ///
    /// # Safety
    /// `self.inner` is open (between `open` and `close`).
    unsafe fn inner_methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the caller's contract; an open Unix file always has its methods.
        unsafe { &*(*self.inner).pMethods }
    }

    /// Writes whatever is gathered, in one call.
    ///
    /// # Safety
    /// As `inner_methods`.
    unsafe fn flush(&mut self) -> c_int {
        if self.gathered.is_empty() {
            return ffi::SQLITE_OK;
        }
        let mut rc = ffi::SQLITE_OK;
        let mut offset = self.start;
        for chunk in self.gathered.chunks(MAX_WRITE) {
            // SAFETY: as `inner_methods`; the chunk lives until the call returns, and its
            // length fits a `c_int`.
            rc = unsafe {
                match self.inner_methods().xWrite {
                    Some(w) => w(
                        self.inner,
                        chunk.as_ptr().cast(),
                        chunk.len() as c_int,
                        offset,
                    ),
                    None => ffi::SQLITE_IOERR_WRITE,
                }
            };
            count_write();
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset += chunk.len() as i64;
        }
        // On an error the transaction fails, and SQLite writes its frames again, from its
        // own pages, if it tries again.
        self.gathered.clear();
        rc
    }

    /// Writes `data` at `offset` now, after anything gathered.
    ///
    /// # Safety
    /// As `inner_methods`; `data` is valid for `len` bytes.
    unsafe fn write_through(&mut self, data: *const c_void, len: c_int, offset: i64) -> c_int {
        // SAFETY: the caller's contract.
        unsafe {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            count_write();
            match self.inner_methods().xWrite {
                Some(w) => w(self.inner, data, len, offset),
                None => ffi::SQLITE_IOERR_WRITE,
            }
        }
    }

    /// Reads the page size from the log's header in the file, when it has one.
    ///
    /// # Safety
    /// As `inner_methods`.
    unsafe fn read_page_size(&mut self) {
        let mut header = [0u8; WAL_HEADER as usize];
        // SAFETY: as `inner_methods`; `header` has room for the bytes asked for.
        let rc = unsafe {
            match self.inner_methods().xRead {
                Some(r) => r(
                    self.inner,
                    header.as_mut_ptr().cast(),
                    WAL_HEADER as c_int,
                    0,
                ),
                None => ffi::SQLITE_IOERR_READ,
            }
        };
        if rc == ffi::SQLITE_OK {
            self.page_size = page_size_of(&header).unwrap_or(0);
        }
    }

    /// Whether a frame of this log begins at `offset`.
    fn is_frame_start(&self, offset: i64) -> bool {
        self.page_size != 0
            && offset >= WAL_HEADER
            && (offset - WAL_HEADER) % (FRAME_HEADER + self.page_size) == 0
    }
}

/// The page size a log header gives, if it is a log header.
fn page_size_of(header: &[u8]) -> Option<i64> {
    let word = |i: usize| {
        header
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    if !matches!(word(0)?, 0x377f_0682 | 0x377f_0683) {
        return None;
    }
    match word(8)? {
        1 => Some(65_536),
        n if (512..=32_768).contains(&n) && n.is_power_of_two() => Some(i64::from(n)),
        _ => None,
    }
}

/// What to do with a write at `offset` when nothing is gathered, or after what is.
#[derive(Debug, PartialEq, Eq)]
enum Placement {
    /// It continues the gathered frames.
    Append,
    /// It begins a frame of a known log: gather from here.
    Begin,
    /// Anything else (the log header, a frame rewritten in place, an unknown page size).
    Through,
}

fn place(file: &WalFile, offset: i64) -> Placement {
    if !file.gathered.is_empty() && offset == file.start + file.gathered.len() as i64 {
        Placement::Append
    } else if offset >= file.frontier && file.is_frame_start(offset) {
        Placement::Begin
    } else {
        Placement::Through
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    len: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite calls this only on files `open` set up as `WalFile`s, with `data` valid
    // for `len` bytes.
    unsafe {
        let f = &mut *file.cast::<WalFile>();
        let Ok(n) = usize::try_from(len) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        if offset == 0 {
            // A new log header (the log starts again): take its page size, write it now.
            f.page_size = page_size_of(std::slice::from_raw_parts(data.cast(), n)).unwrap_or(0);
            f.frontier = len.into();
            return f.write_through(data, len, offset);
        }
        if f.page_size == 0 {
            f.read_page_size();
        }
        match place(f, offset) {
            Placement::Append => {}
            Placement::Begin => {
                let rc = f.flush();
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                f.start = offset;
                f.next_frame = offset;
            }
            Placement::Through => {
                f.frontier = f.frontier.max(offset + i64::from(len));
                return f.write_through(data, len, offset);
            }
        }
        f.gathered
            .extend_from_slice(std::slice::from_raw_parts(data.cast(), n));
        let end = f.start + f.gathered.len() as i64;
        f.frontier = f.frontier.max(end);
        let frame = FRAME_HEADER + f.page_size;
        while f.next_frame + frame <= end {
            let at = (f.next_frame - f.start) as usize + 4;
            let commit = &f.gathered[at..at + 4];
            f.next_frame += frame;
            if commit != [0, 0, 0, 0] {
                return f.flush();
            }
        }
        if f.gathered.len() >= MAX_GATHERED {
            return f.flush();
        }
        ffi::SQLITE_OK
    }
}

/// Counts the writes that reach the file, for the tests (per thread, so that tests running
/// side by side do not see each other's).
#[cfg(test)]
fn count_write() {
    WRITES.with(|w| w.set(w.get() + 1));
}
#[cfg(not(test))]
fn count_write() {}

#[cfg(test)]
thread_local! {
    pub static WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Delegates a method to the default VFS's file after writing what is gathered.
macro_rules! flushing {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: SQLite calls this only on files `open` set up as `WalFile`s.
            unsafe {
                let f = &mut *file.cast::<WalFile>();
                let rc = f.flush();
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match f.inner_methods().$method {
                    Some(m) => m(f.inner $(, $arg)*),
                    None => ffi::SQLITE_IOERR,
                }
            }
        }
    };
}

/// Delegates a method to the default VFS's file as it is.
macro_rules! delegating {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls this only on files `open` set up as `WalFile`s.
            unsafe {
                let f = &*file.cast::<WalFile>();
                match f.inner_methods().$method {
                    Some(m) => m(f.inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

flushing!(read, xRead, (buf: *mut c_void, len: c_int, offset: i64));
flushing!(truncate, xTruncate, (size: i64));
flushing!(sync, xSync, (flags: c_int));
flushing!(file_size, xFileSize, (size: *mut i64));
flushing!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
delegating!(lock, xLock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_LOCK);
delegating!(unlock, xUnlock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_UNLOCK);
delegating!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
delegating!(sector_size, xSectorSize, () -> c_int, 4096);
delegating!(device_characteristics, xDeviceCharacteristics, () -> c_int, 0);
delegating!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int, ffi::SQLITE_IOERR_SHMMAP);
delegating!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int, ffi::SQLITE_IOERR_SHMLOCK);
delegating!(shm_barrier, xShmBarrier, () -> (), ());
delegating!(shm_unmap, xShmUnmap, (delete: c_int) -> c_int, ffi::SQLITE_OK);
delegating!(fetch, xFetch, (offset: i64, len: c_int, out: *mut *mut c_void) -> c_int, {
    *out = std::ptr::null_mut();
    ffi::SQLITE_OK
});
delegating!(unfetch, xUnfetch, (offset: i64, p: *mut c_void) -> c_int, ffi::SQLITE_OK);

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this once, last, on files `open` set up as `WalFile`s; the
    // `WalFile` is dropped in place, so its buffer is freed, and not used again.
    unsafe {
        let f = &mut *file.cast::<WalFile>();
        let flushed = f.flush();
        let closed = match f.inner_methods().xClose {
            Some(c) => c(f.inner),
            None => ffi::SQLITE_OK,
        };
        std::ptr::drop_in_place(f);
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page: u32) -> Vec<u8> {
        let mut h = vec![0u8; 32];
        h[..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
        h[8..12].copy_from_slice(&page.to_be_bytes());
        h
    }

    #[test]
    fn the_page_size_comes_from_a_log_header_only() {
        assert_eq!(page_size_of(&header(4096)), Some(4096));
        assert_eq!(page_size_of(&header(1)), Some(65_536));
        assert_eq!(page_size_of(&header(4095)), None);
        assert_eq!(page_size_of(&header(256)), None);
        let mut wrong = header(4096);
        wrong[0] = 0;
        assert_eq!(page_size_of(&wrong), None);
        assert_eq!(page_size_of(&[0x37, 0x7f]), None);
    }
}

/// The VFS at work on a real database, beside a connection through the default VFS.
#[cfg(test)]
mod on_a_database {
    use rusqlite::{Connection, OpenFlags};

    use super::{NAME, WRITES, register};

    fn writes() -> u64 {
        WRITES.with(|w| w.get())
    }

    fn log_frames(path: &std::path::Path) -> u64 {
        let wal = path.with_file_name(format!(
            "{}-wal",
            path.file_name().unwrap().to_str().unwrap()
        ));
        let len = std::fs::metadata(wal).map_or(0, |m| m.len());
        len.saturating_sub(32) / (24 + 4096)
    }

    /// A database in WAL mode with one table, a connection through the VFS (with a page
    /// cache of `cache_pages`) and one through the default VFS.
    fn open(
        dir: &tempfile::TempDir,
        cache_pages: i64,
    ) -> (std::path::PathBuf, Connection, Connection) {
        let path = dir.path().join("t.db");
        let plain = Connection::open(&path).unwrap();
        plain
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
                 CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
            )
            .unwrap();
        assert!(register());
        let db =
            Connection::open_with_flags_and_vfs(&path, OpenFlags::SQLITE_OPEN_READ_WRITE, NAME)
                .unwrap();
        db.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = {cache_pages};"
        ))
        .unwrap();
        (path, db, plain)
    }

    fn insert(db: &Connection, rows: std::ops::Range<i64>, bytes: usize) {
        let tx = db.unchecked_transaction().unwrap();
        for i in rows {
            tx.execute(
                "INSERT INTO t (id, v) VALUES (?1, ?2)",
                rusqlite::params![i, "x".repeat(bytes)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn count(db: &Connection) -> i64 {
        db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_transaction_reaches_the_log_in_a_few_writes_and_is_seen_by_other_connections() {
        let dir = tempfile::tempdir().unwrap();
        let (path, db, plain) = open(&dir, 2000);
        insert(&db, 0..1, 10);
        let (frames, before) = (log_frames(&path), writes());
        // Thirty rows of 3,000 bytes: a page each, about 35 frames, 144 KiB of log.
        insert(&db, 1..31, 3000);
        let (new_frames, calls) = (log_frames(&path) - frames, writes() - before);
        assert!(new_frames >= 30, "{new_frames} frames");
        // Without the VFS, two writes per frame; with it, one per 64 KiB.
        assert!(
            calls <= new_frames * 4120 / (64 * 1024) + 1,
            "{calls} writes for {new_frames} frames"
        );
        assert_eq!(count(&plain), 31);
    }

    #[test]
    fn commits_stay_visible_and_whole_across_checkpoints_that_restart_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, db, plain) = open(&dir, 2000);
        let mut next = 0;
        for round in 0..6 {
            insert(&db, next..next + 40, 500);
            next += 40;
            assert_eq!(count(&plain), next, "round {round}");
            // A checkpoint from the other connection, after which the next commit writes a new
            // log header (with new salts) at the start of the file.
            let (busy, _, _): (i64, i64, i64) = plain
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .unwrap();
            assert_eq!(busy, 0);
        }
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop(db);
        drop(plain);
        // Everything survives reopening from the files alone.
        let reopened = Connection::open(dir.path().join("t.db")).unwrap();
        assert_eq!(count(&reopened), next);
    }

    fn gathered(db: &Connection) -> usize {
        super::with_wal_file(db, |f| f.gathered.len()).expect("the log is open through the VFS")
    }

    /// Copies the database and its log, as a crash would leave them (no shared memory).
    fn crash_copy(path: &std::path::Path, to: &std::path::Path) -> Connection {
        std::fs::copy(path, to.join("t.db")).unwrap();
        std::fs::copy(path.with_file_name("t.db-wal"), to.join("t.db-wal")).unwrap();
        Connection::open(to.join("t.db")).unwrap()
    }

    /// A transaction that spills pages to the log, changes some of them again (SQLite then
    /// rewrites those frames in place and, after the commit frame, every checksum from the
    /// first of them on), then commits: the files hold all of it as soon as it is committed.
    #[test]
    fn a_commit_after_frames_rewritten_in_place_is_whole_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (path, db, plain) = open(&dir, 10);
        let tx = db.unchecked_transaction().unwrap();
        for i in 0..60 {
            tx.execute(
                "INSERT INTO t (id, v) VALUES (?1, ?2)",
                rusqlite::params![i, "x".repeat(3000)],
            )
            .unwrap();
        }
        tx.execute("UPDATE t SET v = 'changed' WHERE id < 5", [])
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(
            gathered(&db),
            0,
            "nothing of a committed transaction is left gathered"
        );
        assert_eq!(count(&plain), 60);
        let copy_dir = tempfile::tempdir().unwrap();
        let copy = crash_copy(&path, copy_dir.path());
        assert_eq!(
            count(&copy),
            60,
            "the log in the file holds the whole commit"
        );
        let changed: i64 = copy
            .query_row("SELECT count(*) FROM t WHERE v = 'changed'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(changed, 5);
        let check: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    /// Frames spilled by a transaction that then rolls back are dead once the write lock is
    /// gone: another connection commits at their offsets, and they must never be written over
    /// it. The login connection discards them when its transaction ends.
    #[test]
    fn a_rolled_back_transaction_leaves_nothing_to_write_over_later_commits() {
        let dir = tempfile::tempdir().unwrap();
        let (_path, db, plain) = open(&dir, 10);
        plain
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        {
            let tx = db.unchecked_transaction().unwrap();
            for i in 0..20 {
                tx.execute(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    rusqlite::params![i, "y".repeat(3000)],
                )
                .unwrap();
            }
            assert!(gathered(&db) > 0, "the spilled frames are gathered");
            tx.rollback().unwrap();
        }
        super::discard(&db);
        assert_eq!(gathered(&db), 0);
        // Another connection commits where the dead frames were.
        plain
            .execute_batch(
                "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 300)
                 INSERT INTO t SELECT x, hex(zeroblob(700)) FROM s;",
            )
            .unwrap();
        // The VFS connection reads (which would write anything still gathered), then writes.
        assert_eq!(count(&db), 300);
        insert(&db, 1000..1010, 100);
        assert_eq!(count(&plain), 310);
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        drop((db, plain));
        let fresh = Connection::open(dir.path().join("t.db")).unwrap();
        assert_eq!(count(&fresh), 310);
    }

    #[test]
    fn a_transaction_larger_than_the_buffer_and_the_cache_commits_whole() {
        let dir = tempfile::tempdir().unwrap();
        // A page cache of 20 pages makes SQLite spill pages to the log mid-transaction and read
        // some of them back; 3 MiB of rows is three times the buffer.
        let (_path, db, plain) = open(&dir, 20);
        insert(&db, 0..1000, 3000);
        assert_eq!(count(&plain), 1000);
        let bytes: i64 = plain
            .query_row("SELECT sum(length(v)) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(bytes, 3_000_000);
        // A rolled-back transaction leaves nothing, and the next one commits over its frames.
        {
            let tx = db.unchecked_transaction().unwrap();
            tx.execute("INSERT INTO t (id, v) VALUES (5000, 'gone')", [])
                .unwrap();
            tx.rollback().unwrap();
        }
        insert(&db, 1000..1010, 100);
        assert_eq!(count(&plain), 1010);
        let gone: i64 = plain
            .query_row("SELECT count(*) FROM t WHERE id = 5000", [], |r| r.get(0))
            .unwrap();
        assert_eq!(gone, 0);
        let check: String = plain
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
}
