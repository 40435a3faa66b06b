//! Per-request context (request id, client IP, our own origin) and the one place where
//! errors become response bodies: JSON for API clients, an HTML page for browsers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::error::Error;

/// Header names that every request reads or writes (`x-forwarded-for` only behind trusted
/// proxies), made once: a name given as text is parsed and checked at every use (about 370
/// instructions of every request).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// `site-url`'s origin, when it is set.
    pub site_origin: Option<String>,
    /// The request's own base URL (scheme + Host), used when `site-url` is unset.
    pub own_base: String,
    pub https: bool,
}

impl RequestContext {
    /// `site-url`'s origin, or the request's own scheme+Host when it is unset (computed
    /// when asked: only state-changing requests need it).
    pub fn expected_origin(&self) -> String {
        match &self.site_origin {
            Some(origin) => origin.clone(),
            None => parse_own_base(&self.own_base)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default(),
        }
    }

    /// The base that relative redirect targets resolve against: `site-url`, else the
    /// request's own scheme and Host.
    pub fn redirect_base(&self, eff: &crate::settings::Effective) -> Result<url::Url, Error> {
        match &eff.site_url {
            Some(u) => Ok(u.clone()),
            None => parse_own_base(&self.own_base),
        }
    }

    pub fn from_parts(parts: &Parts) -> RequestContext {
        parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext {
                request_id: String::new(),
                ip: None,
                user_agent: None,
                site_origin: None,
                own_base: "http://localhost/".into(),
                https: false,
            })
    }
}

/// `Url::parse(own_base)`, with the last base each thread parsed kept: behind one Host name
/// every request has the same base, and parsing it again was about 1 % of an SSO login. A
/// URL whose serialisation is `own_base` is what parsing `own_base` gives (serialising and
/// parsing again changes nothing), so the kept one is used only when it serialises to
/// exactly this input.
fn parse_own_base(own_base: &str) -> Result<url::Url, Error> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<url::Url>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some(url) = last.as_ref().filter(|u| u.as_str() == own_base) {
            return Ok(url.clone());
        }
        let url = url::Url::parse(own_base).map_err(|_| Error::InvalidRedirect)?;
        *last = Some(url.clone());
        Ok(url)
    })
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestContext::from_parts(parts))
    }
}

/// Marks a page a handler rendered itself (a form shown again with its errors, with a 4xx
/// status): `finish` leaves its body alone instead of replacing it with the generic page
/// it gives axum's own rejections.
#[derive(Debug, Clone, Copy)]
pub struct RenderedPage;

/// What an error response carries until `finish` renders it with the request id.
#[derive(Debug, Clone)]
pub struct ErrorPayload {
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub internal: Option<String>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let payload = ErrorPayload {
            code: self.code(),
            message: self.to_string(),
            field: self.field().map(str::to_owned),
            internal: match &self {
                Error::Internal(e) => Some(format!("{e:#}")),
                _ => None,
            },
        };
        let mut res = (status, axum::Json(json_body(&payload, ""))).into_response();
        if let Error::TooManyAttempts { retry_after_secs } = self {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        res.extensions_mut().insert(payload);
        res
    }
}

fn json_body(p: &ErrorPayload, request_id: &str) -> serde_json::Value {
    let mut body =
        serde_json::json!({"error": p.code, "message": p.message, "request_id": request_id});
    if let Some(field) = &p.field {
        body["field"] = serde_json::Value::String(field.clone());
    }
    body
}

/// The client IP: the socket peer, or with N trusted proxies the address N hops back in
/// `X-Forwarded-For` (entries further left can be forged by the client). The entry is picked
/// by its position among all of them before it is read: a proxy that adds its peer with a port
/// (`203.0.113.5:41234`, `[2001:db8::1]:443`) must not shift the count onto an entry the
/// client wrote. An entry there that is not an address gives the socket peer.
pub fn client_ip(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted_hops: i64,
) -> Option<String> {
    let peer_ip = || peer.map(|p| ip_text(p.ip()));
    if trusted_hops <= 0 {
        return peer_ip();
    }
    // Bytes, not `to_str`: a header line that is not visible ASCII keeps its place.
    let entries: Vec<&[u8]> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .collect();
    if entries.is_empty() {
        return peer_ip();
    }
    let hops = usize::try_from(trusted_hops).unwrap_or(usize::MAX);
    let entry = entries[entries.len().saturating_sub(hops)];
    match forwarded_address(entry) {
        Some(ip) => Some(ip_text(ip)),
        None => peer_ip(),
    }
}

/// `ip.to_string()`, for IPv4 without `core::fmt` (which pads, and so writes each address to
/// a buffer first: about 3 % of a session check's instructions).
fn ip_text(ip: std::net::IpAddr) -> String {
    let std::net::IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        text.push_str(itoa::Buffer::new().format(octet));
    }
    text
}

/// One `X-Forwarded-For` entry's address, with or without a port.
fn forwarded_address(entry: &[u8]) -> Option<std::net::IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<std::net::IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

fn wants_html(headers: &HeaderMap, path: &str) -> bool {
    if path.starts_with("/api/") || path == "/metrics" {
        return false;
    }
    crate::http::extract::accepts(headers, crate::http::extract::HTML)
}

/// The one middleware of every route: builds the RequestContext; after the handler,
/// renders error bodies, adds the headers every response carries (and the page headers of
/// HTML responses), writes the access log line and counts the request in the metrics under
/// its route template. One layer rather than one per concern: each layer boxes and moves
/// the request's future once more.
pub async fn finish(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = crate::http::metrics::route_label(req.extensions().get::<MatchedPath>());
    // A version-4 UUID from the thread's generator: no system call per request. (Encoded
    // directly: its `Display` goes through `core::fmt`'s padding.)
    let request_id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned();
    let eff = state.settings.current();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = req.headers();
    let ip = client_ip(
        peer,
        headers,
        eff.int("forwarded-for-trusted-hops").unwrap_or(0),
    );
    let forwarded_https = headers
        .get(X_FORWARDED_PROTO)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or("localhost")
        .to_owned();
    let scheme = if forwarded_https { "https" } else { "http" };
    let own_base = [scheme, "://", &host, "/"].concat();
    let site_origin = eff
        .site_url
        .as_ref()
        .map(|u| u.origin().ascii_serialization());
    let ctx = RequestContext {
        request_id: request_id.clone(),
        ip,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| at_most_chars(s, 512).to_owned()),
        site_origin,
        own_base,
        https: forwarded_https,
    };
    let html = wants_html(req.headers(), req.uri().path());
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    req.extensions_mut().insert(ctx);

    let mut res = next.run(req).await;
    if may_write(&method, &path) {
        // The handler has committed: what this instance cached before is stale now.
        state.caches.invalidate();
    }
    let latency = started.elapsed();
    let status = res.status().as_u16();
    log_access(
        crate::telemetry::direct(),
        &request_id,
        &method,
        &path,
        status,
        latency,
    );

    let payload = match res.extensions().get::<ErrorPayload>() {
        Some(p) => Some(p.clone()),
        None if res.extensions().get::<RenderedPage>().is_some() => None,
        None => plain_error(&res),
    };
    if let Some(p) = payload {
        if let Some(internal) = &p.internal {
            tracing::error!(request_id = %request_id, %method, path = %LogSafe(&path), error = %internal, "request failed");
        }
        let status = res.status();
        let retry_after = res.headers().get(header::RETRY_AFTER).cloned();
        let mut out = if html {
            let page = crate::http::pages::error_page(status, &p, &request_id);
            (status, axum::response::Html(page)).into_response()
        } else {
            (status, axum::Json(json_body(&p, &request_id))).into_response()
        };
        if let Some(v) = retry_after {
            out.headers_mut().insert(header::RETRY_AFTER, v);
        }
        for (k, v) in res.headers() {
            if k == header::SET_COOKIE
                || k == header::CACHE_CONTROL
                || k == header::REFERRER_POLICY
                || k == header::LOCATION
            {
                out.headers_mut().append(k, v.clone());
            }
        }
        res = out;
    }
    if path == "/auth/sso" || path.starts_with("/auth/sso/") {
        res = crate::http::sso::sso_headers(res);
    }
    let too_large = res.status() == StatusCode::PAYLOAD_TOO_LARGE;
    let h = res.headers_mut();
    // A body refused as too large is left unread (at once, when its declared length is over
    // the limit), so the connection cannot carry another request: saying so keeps a client
    // from sending its next one on a connection that is about to close.
    if too_large {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert(X_REQUEST_ID, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::REFERRER_POLICY) {
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
    }
    // API answers carry session tokens, the signing key being generated, the settings and
    // who is signed in: no cache, shared or private, keeps them.
    if path.starts_with("/api/") {
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    let framable = path == "/" || path.starts_with("/auth/");
    crate::http::ui::add_page_headers(&state, framable, &mut res);
    state.metrics.request_finished(
        crate::metrics::method_label(&method),
        route,
        res.status().as_u16(),
        started.elapsed(),
    );
    res
}

/// The request's access line. It has the path only: query strings can carry tokens (`jwt=`).
/// With `direct` ([`crate::telemetry::direct`]) and no span entered, the line is written by
/// [`crate::telemetry::access_line`], without `tracing`'s visitors, if `tracing` would write it
/// at all; otherwise `tracing` writes it, as the span's prefix needs.
fn log_access(
    direct: bool,
    request_id: &str,
    method: &axum::http::Method,
    path: &str,
    status: u16,
    latency: std::time::Duration,
) {
    if direct && tracing::Span::current().is_none() {
        if tracing::enabled!(tracing::Level::INFO) {
            let path = if LogSafe::is_plain(path) {
                std::borrow::Cow::Borrowed(path)
            } else {
                std::borrow::Cow::Owned(LogSafe(path).to_string())
            };
            crate::telemetry::access_line(request_id, method.as_str(), &path, status, latency);
        }
    } else {
        tracing::info!(
            request_id = %request_id,
            %method,
            path = %LogSafe(path),
            status,
            latency_ms = crate::telemetry::millis(latency),
            "request"
        );
    }
}

/// The first `n` characters of `s` (all of it when it is shorter).
fn at_most_chars(s: &str, n: usize) -> &str {
    &s[..s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)]
}

/// A client-sent string as the log shows it: control characters (C0, DEL and C1, e.g. the
/// CSI that starts a terminal escape, or NEL), the line and paragraph separators and the
/// invisible format characters (bidirectional and zero-width ones, the same set the email
/// check refuses) are written as `\u{…}`, and a backslash as `\\`, so a request can neither
/// forge nor hide a log line. hyper refuses CR and LF in a request line, but lets other bytes
/// through.
struct LogSafe<'a>(&'a str);

impl LogSafe<'_> {
    /// Whether `s` is shown as it is: printable ASCII without a backslash.
    fn is_plain(s: &str) -> bool {
        s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
    }
}

impl std::fmt::Display for LogSafe<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if LogSafe::is_plain(self.0) {
            return f.write_str(self.0);
        }
        for c in self.0.chars() {
            if c == '\\' {
                f.write_str("\\\\")?;
            } else if c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}')
                || crate::domain::email::is_invisible_format(c)
            {
                write!(f, "\\u{{{:x}}}", c as u32)?;
            } else {
                std::fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Whether a request can change sessions, users or groups: every state-changing method, and
/// the two GETs that sign in and out. Their completion invalidates the instance's caches.
fn may_write(method: &axum::http::Method, path: &str) -> bool {
    !matches!(
        *method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    ) || path == "/auth/sso"
        || path == "/auth/logout"
}

/// Errors produced outside our handlers (unknown route, axum's own rejections) get the
/// same shape as ours. Pages our handlers render ([`RenderedPage`]) are not touched.
fn plain_error(res: &Response) -> Option<ErrorPayload> {
    let (code, message) = match res.status() {
        StatusCode::NOT_FOUND => ("not_found", "There is nothing at this address."),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ("body_too_large", "The request body is larger than 1 MiB.")
        }
        // Not a validation failure (SPEC §4.8 gives those 400): a code of its own.
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "This address does not accept that method.",
        ),
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("validation_failed", "The request could not be understood.")
        }
        _ => return None,
    };
    Some(ErrorPayload {
        code,
        message: message.into(),
        // SPEC §6: a validation failure names its field, `body` when nothing else fits (our
        // extractors name theirs; these are axum's own rejections).
        field: (code == "validation_failed").then(|| "body".to_owned()),
        internal: None,
    })
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn the_log_escapes_what_could_forge_or_hide_a_line() {
        let shown = |s: &str| super::LogSafe(s).to_string();
        assert_eq!(shown("/api/user/7"), "/api/user/7");
        assert_eq!(shown("/caf\u{e9}"), "/caf\u{e9}");
        assert_eq!(
            shown("/x\u{9b}31m\u{85}INFO\u{2028}fake\u{202e}\u{7}\u{61c}"),
            "/x\\u{9b}31m\\u{85}INFO\\u{2028}fake\\u{202e}\\u{7}\\u{61c}"
        );
        // A backslash is doubled: a path cannot pass for an escaped character.
        assert_eq!(shown("/a\\u{a}"), "/a\\\\u{a}");
    }

    /// Inside a span the access line is `tracing`'s, which writes the span's prefix, even when
    /// it could otherwise be written directly.
    #[test]
    fn inside_a_span_tracing_writes_the_access_line() {
        let lines = crate::telemetry::tests::Collect::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .with_writer(lines.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("outer");
            let _inside = span.enter();
            let latency = std::time::Duration::from_micros(250);
            log_access(true, "r-1", &axum::http::Method::GET, "/x\n", 200, latency);
        });
        let text = String::from_utf8(crate::store::lock(&lines.0).clone()).unwrap();
        assert!(
            text.ends_with(
                " outer: request request_id=r-1 method=GET path=/x\\u{a} status=200 latency_ms=0.25\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_user_agent_keeps_its_first_512_characters() {
        assert_eq!(at_most_chars("curl/8", 512), "curl/8");
        let ascii = "a".repeat(600);
        assert_eq!(at_most_chars(&ascii, 512), &ascii[..512]);
        // Characters, not bytes: 512 two-byte characters are 1,024 bytes.
        let accented = "é".repeat(600);
        assert_eq!(at_most_chars(&accented, 512), "é".repeat(512));
        assert_eq!(at_most_chars(&"é".repeat(512), 512), "é".repeat(512));
    }

    #[test]
    fn client_ip_trusts_only_the_configured_hops() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        assert_eq!(client_ip(Some(peer), &h, 0).as_deref(), Some("10.0.0.1"));
        assert_eq!(client_ip(Some(peer), &h, 1).as_deref(), Some("1.2.3.4"));
        assert_eq!(client_ip(Some(peer), &h, 2).as_deref(), Some("6.6.6.6"));
        assert_eq!(client_ip(Some(peer), &h, 5).as_deref(), Some("6.6.6.6"));
    }

    #[test]
    fn ip_text_is_to_string() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "192.168.0.100",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:10.0.0.1",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for n in (0..=u32::MAX).step_by(65_537) {
            let ip = std::net::IpAddr::V4(n.into());
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }

    #[test]
    fn client_ip_counts_every_forwarded_entry_before_reading_one() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let ip = |values: &[&'static str], hops| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", HeaderValue::from_static(v));
            }
            client_ip(Some(peer), &h, hops)
        };
        // A proxy that writes its peer with a port: that entry is still the one counted.
        let cases: [(&[&str], i64, &str); 9] = [
            (&["6.6.6.6, 203.0.113.5:41234"], 1, "203.0.113.5"),
            (&["6.6.6.6, [2001:db8::1]:443"], 1, "2001:db8::1"),
            (&["6.6.6.6, 2001:db8::1"], 1, "2001:db8::1"),
            (&["6.6.6.6", "203.0.113.5:41234"], 1, "203.0.113.5"),
            (
                &["6.6.6.6, 198.51.100.7:80", "203.0.113.5"],
                2,
                "198.51.100.7",
            ),
            // Not an address where the count lands: the socket peer, never an entry further
            // left.
            (&["6.6.6.6, unknown"], 1, "10.0.0.1"),
            (&["6.6.6.6,"], 1, "10.0.0.1"),
            (&[""], 1, "10.0.0.1"),
            // Fewer entries than trusted hops: the leftmost, as before.
            (&["6.6.6.6:1"], 3, "6.6.6.6"),
        ];
        for (values, hops, want) in cases {
            assert_eq!(
                ip(values, hops).as_deref(),
                Some(want),
                "{values:?} with {hops} hops"
            );
        }
        // A line that is not visible ASCII keeps its place in the count.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff6.6.6.6").unwrap(),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.5"));
        assert_eq!(client_ip(Some(peer), &h, 2).as_deref(), Some("10.0.0.1"));
        assert_eq!(client_ip(Some(peer), &h, 1).as_deref(), Some("203.0.113.5"));
    }
}
