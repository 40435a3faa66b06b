//! SQL functions that every SQLite connection of the process gets (sqlx's and rusqlite's
//! alike), registered once through `sqlite3_auto_extension` before the first connection.
//!
//! `latchkey_lower(text)` lower-cases by Unicode's rules, character by character
//! ([`fold_case`]). SQLite's own
//! `lower()` folds only the 26 ASCII letters (unless SQLite is built with ICU), so the users
//! search, which compares lower-cased text, missed `Émile` for `émile` or `Émile`. NULL gives
//! NULL; text that is not valid UTF-8 is read with replacement characters.

use std::ffi::{c_char, c_int};

use rusqlite::ffi;

/// Registers the functions for every connection opened after this call (once per process).
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `init` has the entry point's signature and lives as long as the process.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(init)) };
        if rc != ffi::SQLITE_OK {
            tracing::warn!(code = rc, "cannot register latchkey_lower with SQLite");
        }
    });
}

/// Lower-cases each character on its own (not `str::to_lowercase`, whose Greek final sigma
/// depends on the next character): a search pattern and the text it is looked for in then
/// fold alike, whatever surrounds them.
pub fn fold_case(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

unsafe extern "C" fn init(
    db: *mut ffi::sqlite3,
    _error: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    // SAFETY: SQLite calls this with a connection it is opening; the name is a static C string
    // and `lower` has the scalar function's signature.
    unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            c"latchkey_lower".as_ptr(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DETERMINISTIC | ffi::SQLITE_INNOCUOUS,
            std::ptr::null_mut(),
            Some(lower),
            None,
            None,
            None,
        )
    }
}

unsafe extern "C" fn lower(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite passes `argc` (1, as registered) valid values; the text pointer it
    // returns stays valid for `sqlite3_value_bytes` bytes until the value changes, and the
    // result is copied by SQLite (`SQLITE_TRANSIENT`) before `folded` is dropped.
    unsafe {
        if argc != 1 {
            ffi::sqlite3_result_null(ctx);
            return;
        }
        let value = *argv;
        if ffi::sqlite3_value_type(value) == ffi::SQLITE_NULL {
            ffi::sqlite3_result_null(ctx);
            return;
        }
        let text = ffi::sqlite3_value_text(value);
        let len = ffi::sqlite3_value_bytes(value);
        if text.is_null() {
            // SQLite could not allocate the text form.
            ffi::sqlite3_result_error_nomem(ctx);
            return;
        }
        let bytes = std::slice::from_raw_parts(text, usize::try_from(len).unwrap_or(0));
        let folded = fold_case(&String::from_utf8_lossy(bytes));
        ffi::sqlite3_result_text64(
            ctx,
            folded.as_ptr().cast(),
            folded.len() as u64,
            ffi::SQLITE_TRANSIENT(),
            ffi::SQLITE_UTF8 as u8,
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn latchkey_lower_folds_by_unicode_rules_where_lower_folds_ascii_only() {
        super::register();
        let db = rusqlite::Connection::open_in_memory().unwrap();
        let fold = |sql: &str| -> Option<String> { db.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            fold("SELECT lower('ÉMILE Ærø')").as_deref(),
            Some("Émile Ærø")
        );
        assert_eq!(
            fold("SELECT latchkey_lower('ÉMILE Ærø ÖLAF Σ')").as_deref(),
            Some("émile ærø ölaf σ")
        );
        // Σ folds to σ wherever it stands, so a prefix matches as the whole word does.
        assert_eq!(
            fold("SELECT latchkey_lower('ΟΔΥΣΣΕΥΣ')").as_deref(),
            Some("οδυσσευσ")
        );
        assert_eq!(super::fold_case("ΟΔΥΣ"), "οδυσ");
        assert_eq!(fold("SELECT latchkey_lower(NULL)"), None);
        assert_eq!(fold("SELECT latchkey_lower(12)").as_deref(), Some("12"));
        assert_eq!(
            fold("SELECT latchkey_lower(CAST(x'41ff42' AS TEXT))").as_deref(),
            Some("a\u{fffd}b")
        );
    }
}
