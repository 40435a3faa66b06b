//! Logging: text by default, JSON with `--log-format json`; `RUST_LOG` filters.
//! Request lines never include query strings (a `jwt=` value is a credential).
//!
//! `serve` writes its log through a small buffer ([`Buffered`]): one `write` system call
//! per 32 KiB of lines or per [`FLUSH_EVERY`], rather than one per request, which was
//! several percent of a session check. Those writes are made by a thread of their own
//! (`latchkey-log`), so that a request never waits for the log file: a write can stall
//! when the kernel holds back writers of a disk with much unwritten data. Should that
//! thread fall behind by [`BACKLOG_BYTES`], the request that adds a line writes the buffer
//! itself and waits, so that the buffer stays bounded. Warnings and errors are written at
//! once (with everything buffered before them, in order), and the buffer is flushed when
//! the process exits normally; a crash loses at most the last [`FLUSH_EVERY`] of info
//! lines. The other commands write each line directly, so it stays in order with what they
//! print.
//!
//! `serve`'s access line, one per request, is written by [`access_line`] itself when the
//! process logs in the plain format without colours (see [`direct`]): the same line, without
//! `tracing`'s per-field visitors and `core::fmt`; written through them, the line was about
//! 12 % of a session check's instructions.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultFields, DefaultVisitor, Format, Full, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How long a buffered line may wait before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Buffered lines are handed to the log thread once they reach this size.
const FLUSH_BYTES: usize = 32 * 1024;

/// A request that finds this much waiting in the buffer writes it itself.
const BACKLOG_BYTES: usize = 32 * FLUSH_BYTES;

/// The lines not yet written.
static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Held while lines are written, so that they go out in order; holds the buffer that was
/// taken out of [`BUFFER`] (kept, with its capacity, for the next swap).
static WRITING: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The log thread, once started.
static LOG_THREAD: std::sync::OnceLock<std::thread::Thread> = std::sync::OnceLock::new();

/// Whether [`access_line`] writes the access line itself ([`direct`]).
static DIRECT: AtomicBool = AtomicBool::new(false);

/// Sets up logging; `buffered` for the long-running server (see the module comment).
pub fn init(json: bool, buffered: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only on a terminal: escape codes in a log file or journal are noise, and
    // cost a few percent of a request to write.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false);
    let result = match (json, buffered) {
        (true, true) => builder.json().with_writer(Buffered).try_init(),
        (true, false) => builder.json().try_init(),
        (false, true) => builder
            .fmt_fields(PlainFields)
            .event_format(Plain::default())
            .with_writer(Buffered)
            .try_init(),
        (false, false) => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    if result.is_ok() && !json && buffered && !ansi {
        let directives = std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_default();
        DIRECT.store(filters_by_target_and_level(&directives), Ordering::Relaxed);
    }
    if result.is_ok() && buffered {
        let started = std::thread::Builder::new()
            .name("latchkey-log".into())
            .spawn(|| {
                loop {
                    std::thread::park_timeout(FLUSH_EVERY);
                    flush();
                }
            });
        if let Ok(handle) = started {
            let _ = LOG_THREAD.set(handle.thread().clone());
        }
    }
}

/// Writes out whatever the buffer holds (called on exit, by the log thread, and for
/// warnings and errors).
pub fn flush() {
    let mut out = crate::store::lock(&WRITING);
    std::mem::swap(&mut *crate::store::lock(&BUFFER), &mut *out);
    write_out(&mut out);
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

/// Whether `RUST_LOG`'s directives choose lines by their target and level alone: none names a
/// span or a field (`[…]`, `{…}`), which a line written by [`access_line`] does not have.
fn filters_by_target_and_level(directives: &str) -> bool {
    !directives.contains(['[', '{'])
}

/// Whether [`access_line`] may write the access line itself rather than through `tracing`:
/// `serve`'s plain format without colours is the process's log, and `RUST_LOG` filters by
/// target and level only. The caller still asks `tracing::enabled!` for its own target, and
/// that no span is entered, so that the line is written exactly when `tracing` would write it.
pub fn direct() -> bool {
    DIRECT.load(Ordering::Relaxed)
}

/// A request's latency as its access line gives it: milliseconds, the nanoseconds over 1e6 (the
/// decimal itself, where `as_secs_f64() * 1000.0` often left 17 digits).
pub fn millis(latency: Duration) -> f64 {
    latency.as_nanos() as f64 / 1e6
}

/// One request's access line, as `serve`'s plain format writes
/// `tracing::info!(request_id = %request_id, %method, %path, status, latency_ms =
/// millis(latency), "request")` outside any span ([`direct`] says when that is so): the same
/// characters, without `tracing`'s visitors and `core::fmt` for each field. `path` is written
/// as it is: the caller gives it as the log shows it (escaped).
pub fn access_line(request_id: &str, method: &str, path: &str, status: u16, latency: Duration) {
    let now = std::time::SystemTime::now();
    push_line(false, |buf| {
        // Writing into a `Vec` cannot fail.
        let _ = write_timestamp(&mut Bytes(buf), now);
        let mut digits = itoa::Buffer::new();
        for part in [
            "  INFO request request_id=",
            request_id,
            " method=",
            method,
            " path=",
            path,
            " status=",
            digits.format(status),
            " latency_ms=",
        ] {
            buf.extend_from_slice(part.as_bytes());
        }
        write_millis(latency, buf);
        buf.push(b'\n');
    });
}

/// Writes [`millis`] of `latency` as `{:?}` writes it. From 100 ns (`0.0001`) to 10¹⁵ ns that is
/// the decimal `nanos / 10⁶` itself, written here from the integer: `{:?}` shows the shortest
/// decimal that reads back as the `f64`, and a decimal of at most 15 significant digits is the
/// only one of its length or shorter that reads back as its nearest `f64`, which the division
/// gives (correctly rounded, from two exact operands). Outside that range (below 1e-4 `{:?}`
/// uses an exponent) `{:?}` writes it. Through [`float`] (`ryu`, then a count of its digits),
/// as `tracing`'s line still writes it, the latency took about 550 instructions a request.
fn write_millis(latency: Duration, buf: &mut Vec<u8>) {
    let nanos = latency.as_nanos();
    if !(100..1_000_000_000_000_000).contains(&nanos) {
        let _ = write!(buf, "{:?}", millis(latency));
        return;
    }
    buf.extend_from_slice(itoa::Buffer::new().format(nanos / 1_000_000).as_bytes());
    buf.push(b'.');
    let fraction = six_digits((nanos % 1_000_000) as u32);
    // Without trailing zeros, but one digit at least (`12.0`).
    let zeros = fraction.iter().rev().take_while(|&&d| d == b'0').count();
    buf.extend_from_slice(&fraction[..(6 - zeros).max(1)]);
}

/// `n` (below 10⁶) as six decimal digits, with leading zeros.
fn six_digits(mut n: u32) -> [u8; 6] {
    let mut digits = [b'0'; 6];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits
}

/// A `Vec<u8>` as a `std::fmt::Write`, for [`write_timestamp`] in [`access_line`].
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Adds a line to the buffer with `write`, then writes the buffer out or wakes the log thread
/// as [`after_line`] says.
fn push_line(urgent: bool, write: impl FnOnce(&mut Vec<u8>)) {
    let waiting = {
        let mut buf = crate::store::lock(&BUFFER);
        write(&mut buf);
        buf.len()
    };
    let log = LOG_THREAD.get();
    match after_line(urgent, waiting, log.is_some()) {
        After::Wait => {}
        After::Wake => {
            if let Some(log) = log {
                log.unpark();
            }
        }
        After::Write => flush(),
    }
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
        push_line(self.urgent, |buf| buf.extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a line leaves to be done once it is in the buffer.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Nothing: the log thread writes it within [`FLUSH_EVERY`].
    Wait,
    /// Wake the log thread to write the buffer now.
    Wake,
    /// Write the buffer before going on.
    Write,
}

/// For a line that leaves `waiting` bytes in the buffer.
fn after_line(urgent: bool, waiting: usize, log_thread: bool) -> After {
    if urgent || waiting >= BACKLOG_BYTES {
        After::Write
    } else if waiting < FLUSH_BYTES {
        After::Wait
    } else if log_thread {
        After::Wake
    } else {
        // No log thread (it could not start): the lines are written here.
        After::Write
    }
}

/// `serve`'s text lines: the same as tracing-subscriber's default format (`Full`, without
/// the target), written more cheaply when there are no colours. That format's clock and
/// level took about 2.5 % of a session check (the date recomputed for every line, the level
/// through the colour code's `Display`); here the date and time up to the second are
/// formatted once a second per thread. With colours (a terminal) the default format writes
/// the line.
struct Plain {
    coloured: Format<Full, SystemTime>,
}

impl Default for Plain {
    fn default() -> Plain {
        Plain {
            coloured: Format::default().with_target(false),
        }
    }
}

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        if writer.has_ansi_escapes() {
            return self.coloured.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str(match *event.metadata().level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The fields of a line as tracing-subscriber's default field format writes them, without its
/// colour code when there are no colours: it writes every field's name and `=` through the
/// styling of its terminal colours, styles that do nothing off a terminal, which was about 1 %
/// of an SSO login's instructions. The message, errors and `r#` names, whose escaping the
/// default format owns, go through its own visitor; so does everything on a terminal.
struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        if writer.has_ansi_escapes() {
            return DefaultFields::new().format_fields(writer, fields);
        }
        let mut visitor = PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct PlainVisitor<'writer> {
    writer: Writer<'writer>,
    is_empty: bool,
    result: std::fmt::Result,
}

impl PlainVisitor<'_> {
    /// One field through the default format's visitor, which pads it as this one does.
    fn by_default(&mut self, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        self.is_empty = false;
    }

    /// A number written as `text`, where `record_debug` would write it through `Debug` (the
    /// same characters: integers by `itoa`, floats by `ryu` where they agree, see [`float`]).
    fn record_number(&mut self, field: &Field, text: &str, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || !is_plain(field.name()) {
            return self.record_debug(field, value);
        }
        self.result = self
            .start_field(field.name())
            .and_then(|()| self.writer.write_str(text));
    }

    /// `name=`, after a space unless it is the line's first field.
    fn start_field(&mut self, name: &str) -> std::fmt::Result {
        let pad = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        [pad, name, "="]
            .into_iter()
            .try_for_each(|part| self.writer.write_str(part))
    }
}

/// Whether [`PlainVisitor`] writes a field of this name itself: every one but the message, the
/// `log` crate's metadata and `r#` names, which are the default format's.
fn is_plain(name: &str) -> bool {
    name != "message" && !name.starts_with("log.") && !name.starts_with("r#")
}

/// `value` as `{:?}` writes it, through `ryu` where the two are sure to agree: a number from
/// 1e-4 up to 1e15, where `Debug` never uses an exponent, whose shortest digits that read back
/// as it are at most 15. Then only one decimal of that length reads back as it (a double's
/// spacing there is finer than the decimals'), and both write that one; with 16 or 17 digits,
/// two may, and where the number lies halfway between them `ryu` and `Debug` round differently.
/// Elsewhere, and for NaN and the infinities, it is `None`: `Debug` writes it.
fn float(value: f64, buffer: &mut ryu::Buffer) -> Option<&str> {
    if !(1e-4..1e15).contains(&value.abs()) {
        return None;
    }
    let text = buffer.format_finite(value);
    let digits = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count();
    (digits <= 15 && !text.contains('e')).then_some(text)
}

impl Visit for PlainVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_number(field, itoa::Buffer::new().format(value), &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_number(field, itoa::Buffer::new().format(value), &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match float(value, &mut ryu::Buffer::new()) {
            Some(text) => self.record_number(field, text, &value),
            None => self.record_debug(field, &value),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message" {
            self.by_default(|v| v.record_str(field, value));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // A `log.` name is skipped there too, without the padding `by_default` accounts for.
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        self.by_default(|v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        if is_plain(name) {
            self.result = self
                .start_field(name)
                .and_then(|()| write!(self.writer, "{value:?}"));
        } else if !name.starts_with("log.") {
            // The message and `r#` names. The `log` crate's metadata is skipped: the line has
            // shown it already (as the default format skips it).
            self.by_default(|v| v.record_debug(field, value));
        }
    }
}

/// Writes `at` as tracing-subscriber's `SystemTime` does (`2026-11-26T14:09:05.262820Z`), with
/// the part up to the second cached per thread and the microseconds written here (through
/// `core::fmt`'s padding they were a tenth of an access line). A time before 1970 or after 9999
/// is the default clock's to write.
fn write_timestamp(
    writer: &mut impl std::fmt::Write,
    at: std::time::SystemTime,
) -> std::fmt::Result {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let Ok(since) = at.duration_since(std::time::UNIX_EPOCH) else {
        return SystemTime.format_time(&mut Writer::new(writer));
    };
    let secs = since.as_secs();
    let micros = six_digits(since.subsec_micros());
    // Digits: ASCII.
    let micros = std::str::from_utf8(&micros).map_err(|_| std::fmt::Error)?;
    SECOND.with_borrow_mut(|(cached, second)| {
        if *cached != secs {
            let Some(text) = second_prefix(secs) else {
                return SystemTime.format_time(&mut Writer::new(&mut *writer));
            };
            *second = text;
            *cached = secs;
        }
        writer.write_str(second)?;
        writer.write_str(micros)?;
        writer.write_char('Z')
    })
}

/// `YYYY-MM-DDTHH:MM:SS.` for whole seconds since the epoch, years up to 9999.
fn second_prefix(secs: u64) -> Option<String> {
    let days = i64::try_from(secs / 86_400).ok()?;
    let rest = secs % 86_400;
    // Days to a civil date (Howard Hinnant's `civil_from_days`), for days on or after
    // 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year <= 9999).then(|| {
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The tests that use the process's buffer, one at a time.
    static SHARED_BUFFER: Mutex<()> = Mutex::new(());

    #[test]
    fn info_lines_wait_and_a_warning_takes_everything_before_it_out() {
        let _one = crate::store::lock(&SHARED_BUFFER);
        Line { urgent: false }.write_all(b"an info line\n").unwrap();
        assert!(crate::store::lock(&BUFFER).ends_with(b"an info line\n"));
        Line { urgent: true }.write_all(b"a warning\n").unwrap();
        assert!(
            crate::store::lock(&BUFFER).is_empty(),
            "written out, in order"
        );
    }

    #[test]
    fn a_full_buffer_is_left_to_the_log_thread_until_it_falls_far_behind() {
        assert_eq!(after_line(false, 100, true), After::Wait);
        assert_eq!(after_line(false, FLUSH_BYTES, true), After::Wake);
        assert_eq!(after_line(false, BACKLOG_BYTES - 1, true), After::Wake);
        assert_eq!(after_line(false, BACKLOG_BYTES, true), After::Write);
        assert_eq!(after_line(true, 100, true), After::Write);
        // Without a log thread the request writes as soon as the buffer is full.
        assert_eq!(after_line(false, 100, false), After::Wait);
        assert_eq!(after_line(false, FLUSH_BYTES, false), After::Write);
    }

    #[test]
    fn a_request_that_fills_the_buffer_wakes_the_log_thread_and_writes_nothing() {
        let _one = crate::store::lock(&SHARED_BUFFER);
        // A stand-in for the log thread that only reports being woken.
        let (woken, wake) = std::sync::mpsc::channel();
        let stand_in = std::thread::spawn(move || {
            std::thread::park();
            let _ = woken.send(());
        });
        assert!(LOG_THREAD.set(stand_in.thread().clone()).is_ok());
        crate::store::lock(&BUFFER).clear();
        let line = [b'x'; 1024];
        for _ in 0..FLUSH_BYTES / line.len() {
            Line { urgent: false }.write_all(&line).unwrap();
        }
        assert_eq!(
            crate::store::lock(&BUFFER).len(),
            FLUSH_BYTES,
            "the request left the lines in the buffer"
        );
        wake.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the log thread was woken");
        stand_in.join().unwrap();
        crate::store::lock(&BUFFER).clear();
    }

    /// An error with a source, for the line's `error` field.
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// A `MakeWriter` that collects what is written (also for `http::context`'s tests).
    #[derive(Clone, Default)]
    pub(crate) struct Collect(pub(crate) std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            crate::store::lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Collect {
        type Writer = Collect;

        fn make_writer(&'a self) -> Collect {
            self.clone()
        }
    }

    fn lines(plain: bool) -> String {
        let out = Collect::default();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .with_max_level(Level::TRACE)
            .with_writer(out.clone());
        let emit = || {
            let span = tracing::info_span!("login", attempt = 2, who = "a@example.com");
            let _inside = span.enter();
            tracing::info!(request_id = %"r-1", status = 302u16, latency_ms = 0.25, "request");
            tracing::warn!(reason = "quoted \"text\"", "refused");
            tracing::info!(
                r#type = "raw",
                on = true,
                n = 7u64,
                "escape \u{1b}[31m in the message"
            );
            let failure = std::io::Error::other(Outer(std::io::Error::other("inner\u{1b}")));
            tracing::warn!(
                error = &failure as &(dyn std::error::Error + 'static),
                "with a source"
            );
            tracing::info!(path = %"/a b", ratio = 1.5f64, "");
            tracing::info!(
                whole = 1.0f64,
                third = 1.0f64 / 3.0,
                sum = 0.1f64 + 0.2,
                small = 1e-4f64,
                smaller = 1.5e-5f64,
                large = 1e15f64,
                larger = 1e16f64,
                negative = -0.25f64,
                nan = f64::NAN,
                max = u64::MAX,
                min = i64::MIN,
                "numbers"
            );
            drop(_inside);
            tracing::error!(error = %"disk full", "request failed");
            tracing::debug!("plain");
            tracing::trace!(n = -1i64, "low");
        };
        if plain {
            tracing::subscriber::with_default(
                builder
                    .fmt_fields(PlainFields)
                    .event_format(Plain::default())
                    .finish(),
                emit,
            );
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        let bytes = crate::store::lock(&out.0).clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn plain_lines_are_the_default_format_lines() {
        let (ours, theirs) = (lines(true), lines(false));
        assert_eq!(ours.lines().count(), 9, "{ours}");
        let after_clock = |s: &str| -> Vec<String> {
            s.lines()
                .map(|l| l.get(27..).unwrap_or_default().to_owned())
                .collect()
        };
        assert_eq!(after_clock(&ours), after_clock(&theirs));
        assert!(
            ours.contains("  INFO login{attempt=2 who=\"a@example.com\"}: request request_id=r-1 status=302 latency_ms=0.25\n"),
            "{ours}"
        );
        for line in ours.lines() {
            let clock = line.get(..27).unwrap_or_default();
            assert!(
                clock.len() == 27 && clock.as_bytes()[10] == b'T' && clock.ends_with('Z'),
                "{line}"
            );
        }
    }

    #[test]
    fn access_lines_are_the_lines_tracing_writes() {
        let _one = crate::store::lock(&SHARED_BUFFER);
        let cases: [(&str, &str, &str, u16, u64); 7] = [
            ("r-1", "GET", "/auth/sso", 302, 537_040),
            (
                "7c9e6679-7425-40de-944b-e07fc1f90ae7",
                "POST",
                "/api/session",
                200,
                12_000_000,
            ),
            ("r-3", "DELETE", "/api/users/7", 404, 10),
            ("r-4", "GET", "/a b/\u{1b}", 500, 1_847_384_761_488_281_300),
            ("", "OPTIONS", "", 405, 10_u64.pow(16)),
            ("r-6", "GET", "/", 200, 0),
            ("r-7", "HEAD", "/api/health", 200, 100),
        ];
        for (request_id, method, path, status, nanos) in cases {
            let latency = Duration::from_nanos(nanos);
            let out = Collect::default();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_target(false)
                .with_writer(out.clone())
                .fmt_fields(PlainFields)
                .event_format(Plain::default())
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                tracing::info!(
                    request_id = %request_id,
                    method = %method,
                    path = %path,
                    status,
                    latency_ms = millis(latency),
                    "request"
                );
            });
            let theirs = String::from_utf8(crate::store::lock(&out.0).clone()).unwrap();
            crate::store::lock(&BUFFER).clear();
            access_line(request_id, method, path, status, latency);
            let ours =
                String::from_utf8(std::mem::take(&mut *crate::store::lock(&BUFFER))).unwrap();
            assert_eq!(ours.get(27..), theirs.get(27..), "{ours}{theirs}");
            assert!(
                ours.as_bytes()[10] == b'T' && ours[..27].ends_with('Z'),
                "{ours}"
            );
        }
    }

    #[test]
    fn latencies_are_written_as_debug_writes_their_millis() {
        let check = |nanos: u64| {
            let latency = Duration::from_nanos(nanos);
            let mut ours = Vec::new();
            write_millis(latency, &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                format!("{:?}", millis(latency)),
                "{nanos} ns"
            );
        };
        for nanos in (0..3_000_000).step_by(3).chain(999_990_000..1_000_010_000) {
            check(nanos);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..300_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Every scale up to the direct range's end and past it.
            check(x >> (x % 64));
            check(x % 1_000_000_000_000_000);
        }
        for nanos in [99, 100, 101, 999_999_999_999_999, 10_u64.pow(15), u64::MAX] {
            check(nanos);
        }
    }

    #[test]
    fn lines_are_written_directly_only_under_filters_by_target_and_level() {
        for directives in ["", "info", "info,sqlx=warn", "latchkey::http=debug,warn"] {
            assert!(filters_by_target_and_level(directives), "{directives}");
        }
        for directives in [
            "info,[sso]=debug",
            "[{status=500}]",
            "latchkey[request{id}]=info",
        ] {
            assert!(!filters_by_target_and_level(directives), "{directives}");
        }
    }

    #[test]
    fn floats_are_written_as_debug_writes_them() {
        let mut buffer = ryu::Buffer::new();
        let mut compared = 0;
        let mut check = |value: f64| {
            if let Some(text) = float(value, &mut buffer) {
                assert_eq!(text, format!("{value:?}"), "{value:e}");
                compared += 1;
            }
        };
        // Latencies in milliseconds as the access line takes them, and the range's ends.
        for nanos in (0..2_000_000u64).step_by(7).chain([1u64 << 40, u64::MAX]) {
            check(nanos as f64 / 1e6);
            check(std::time::Duration::from_nanos(nanos).as_secs_f64() * 1000.0);
        }
        for value in [
            1e-4,
            1e-4 * (1.0 - f64::EPSILON),
            1e15,
            1e15 * (1.0 + f64::EPSILON),
        ] {
            check(value);
            check(-value);
        }
        // Decimals of 1 to 15 digits at every scale of the range, and any doubles at all, by a
        // fixed generator.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = 1 + (x % 15) as u32;
            let mantissa = (x >> 8) % 10u64.pow(digits);
            let scale = ((x >> 56) % 20) as i32 - 10;
            let value = mantissa as f64 * 10f64.powi(scale);
            check(value);
            check(-value);
            check(f64::from_bits(x));
        }
        assert!(compared > 500_000, "{compared} values written by ryu");
        assert_eq!(float(f64::NAN, &mut buffer), None);
        assert_eq!(float(f64::INFINITY, &mut buffer), None);
        assert_eq!(float(1e16, &mut buffer), None);
        assert_eq!(float(0.0, &mut buffer), None);
        // Seventeen digits, halfway between two: `Debug` rounds up, `ryu` to even.
        assert_eq!(float(1847384761.4882813, &mut buffer), None);
        // What the access line writes: at most 15 digits, so `ryu`'s.
        assert_eq!(float(0.123456, &mut buffer), Some("0.123456"));
        assert_eq!(float(1.0, &mut buffer), Some("1.0"));
    }

    #[test]
    fn timestamps_read_as_the_default_clock_writes_them() {
        let at = |secs: u64, micros: u32| {
            let mut text = String::new();
            let when = std::time::UNIX_EPOCH
                + Duration::from_secs(secs)
                + Duration::from_micros(u64::from(micros));
            write_timestamp(&mut Writer::new(&mut text), when).unwrap();
            text
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_795_000_000, 123_456), "2026-11-18T11:06:40.123456Z");
        // The same second again (the cached part) and the next one.
        assert_eq!(at(1_795_000_000, 999_999), "2026-11-18T11:06:40.999999Z");
        assert_eq!(at(4_102_444_799, 1), "2099-12-31T23:59:59.000001Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
        // Against the default clock, now: it read the time between `before` and `after`.
        let before = std::time::SystemTime::now();
        let mut theirs = String::new();
        SystemTime
            .format_time(&mut Writer::new(&mut theirs))
            .unwrap();
        let after = std::time::SystemTime::now();
        let second = |when| {
            let mut ours = String::new();
            write_timestamp(&mut Writer::new(&mut ours), when).unwrap();
            ours[..20].to_owned()
        };
        assert!(
            [second(before), second(after)].contains(&theirs[..20].to_owned()),
            "{theirs}"
        );
    }
}
