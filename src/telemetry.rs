//! Logging: text by default, JSON with `--log-format json`; `RUST_LOG` filters.
//! Request lines never include query strings (a `jwt=` value is a credential).
//!
//! `serve` writes its log through a small buffer ([`Buffered`]): one `write` system call
//! per 32 KiB of lines or per [`FLUSH_EVERY`], rather than one per request, which was
//! several percent of a session check. Warnings and errors are written at once (with
//! everything buffered before them, in order), and the buffer is flushed when the process
//! exits normally; a crash loses at most the last [`FLUSH_EVERY`] of info lines. The other
//! commands write each line directly, so it stays in order with what they print.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How long a buffered line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Buffered lines are written once they reach this size.
const FLUSH_BYTES: usize = 32 * 1024;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Sets up logging; `buffered` for the long-running server (see the module comment).
pub fn init(json: bool, buffered: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal: escape codes in a log file or journal are noise, and
    // cost a few percent of a request to write.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_target(false);
    let result = match (json, buffered) {
        (true, true) => builder.json().with_writer(Buffered).try_init(),
        (true, false) => builder.json().try_init(),
        (false, true) => builder.with_writer(Buffered).try_init(),
        (false, false) => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    if result.is_ok() && buffered {
        let _ = std::thread::Builder::new()
            .name("latchkey-log".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flush();
                }
            });
    }
}

/// Writes out whatever the buffer holds (called on exit, and every [`FLUSH_EVERY`]).
pub fn flush() {
    let mut buf = crate::store::lock(&BUFFER);
    write_out(&mut buf);
}

fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Nowhere to report a failed log write: the line is dropped, as an unbuffered
    // writer would drop it.
    let _ = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
}

/// The writer of buffered lines: every event is one `write` of a whole line.
#[derive(Clone, Copy)]
struct Buffered;

struct Line {
    /// A warning or an error: written at once.
    urgent: bool,
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut buf = crate::store::lock(&BUFFER);
        buf.extend_from_slice(bytes);
        if self.urgent || buf.len() >= FLUSH_BYTES {
            write_out(&mut buf);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_wait_and_a_warning_takes_everything_before_it_out() {
        Line { urgent: false }.write_all(b"an info line\n").unwrap();
        assert!(crate::store::lock(&BUFFER).ends_with(b"an info line\n"));
        Line { urgent: true }.write_all(b"a warning\n").unwrap();
        assert!(
            crate::store::lock(&BUFFER).is_empty(),
            "written out, in order"
        );
    }
}
