//! `GET /auth/verify`: forward-auth for reverse proxies (nginx `auth_request`, Traefik
//! `ForwardAuth`, Caddy `forward_auth`), SPEC §6.
//!
//! A request with a live session (cookie or `X-Latchkey-Session`) gets `200` and the
//! identity headers, which the proxy copies onto the request it sends to the app. Without
//! one, a browser (a client that accepts `text/html`, or any request with `rd`) is sent to
//! the sign-in page with the page it wanted as `redirect`; other clients get `401`:
//!
//! | the proxy sent | a browser gets |
//! |---|---|
//! | `?rd=<url>` (SPEC §6) | `302` to `/auth/login?redirect=<url>` (whatever the `Accept`) |
//! | `X-Forwarded-Host` + `X-Forwarded-Uri` (+ `X-Forwarded-Proto`): Traefik, Caddy, which pass our answer to the client | `302` to the sign-in page |
//! | `X-Original-URL` (our nginx snippet: `auth_request` cannot pass a `302` on) | `401` with the sign-in URL in `Location`, which nginx turns into its redirect |
//! | nothing | `401` |
//!
//! The wanted page is validated like `return_to` (its origin must be `site-url`'s or listed
//! in `redirect-allowed-origins`), else `400 invalid_redirect`, so a misconfigured proxy
//! shows up at once instead of sending people somewhere unexpected. A page on an allowed
//! origin that fails only the stricter checks of the whole URL (over 2048 bytes, or an
//! encoded CR/LF in its query, as a GET form with a textarea sends) is never refused: the
//! way back is then its path without the query, else the origin's `/`
//! ([`parse_return_to_or_fallback`]). Every answer is `Cache-Control: no-store`.
//!
//! Header values are ASCII: bytes outside printable ASCII, `%`, a leading or trailing
//! space and (in `X-Latchkey-Groups`, whose separator it is) `,` are percent-encoded as
//! UTF-8, so no value can carry CR/LF and any value can be decoded back exactly.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use crate::app::AppState;
use crate::auth;
use crate::domain::return_to::parse_return_to_or_fallback;
use crate::error::{Error, Result};
use crate::http::context::RequestContext;
use crate::store::{Group, User};

pub const USER_ID_HEADER: &str = "x-latchkey-user-id";
pub const EMAIL_HEADER: &str = "x-latchkey-email";
pub const NAME_HEADER: &str = "x-latchkey-name";
pub const GROUPS_HEADER: &str = "x-latchkey-groups";

/// `/auth/verify` for any method: nginx's `auth_request` subrequest keeps the method of the
/// original request, and the check never changes anything.
#[utoipa::path(
    get,
    path = "/auth/verify",
    tag = "forward-auth",
    description = "Forward-auth for reverse proxies (nginx `auth_request`, Traefik `ForwardAuth`, \
        Caddy `forward_auth`). Every method is accepted (nginx keeps the original request's); \
        only GET is listed. With a live session: 200 and the identity headers. Without one: 302 \
        to the sign-in page for `rd` or a browser behind Traefik/Caddy (`X-Forwarded-Host` + \
        `X-Forwarded-Uri`), 401 with the sign-in URL in `Location` for nginx \
        (`X-Original-URL`), else a plain 401. Values are percent-encoded UTF-8 where not \
        printable ASCII.",
    security((), ("session_cookie" = []), ("session_header" = [])),
    params(
        ("rd" = Option<String>, Query, description = "The page to come back to after signing in; validated like `return_to`, except that a URL on an allowed origin failing only the stricter checks (over 2048 bytes, encoded control characters) falls back to its path without the query, else `/`."),
        ("X-Original-URL" = Option<String>, Header, description = "nginx: the URL the browser asked for."),
        ("X-Forwarded-Host" = Option<String>, Header, description = "Traefik/Caddy: the host the browser asked for."),
        ("X-Forwarded-Uri" = Option<String>, Header, description = "Traefik/Caddy: the path and query the browser asked for."),
        ("X-Forwarded-Proto" = Option<String>, Header, description = "Traefik/Caddy: the scheme the browser used."),
    ),
    responses(
        (status = 200, description = "A live session; the proxy copies these headers onto the request.", headers(
            ("x-latchkey-user-id" = String, description = "The user's id."),
            ("x-latchkey-email" = String, description = "The user's email."),
            ("x-latchkey-name" = String, description = "\"First Last\", or the email when both names are empty."),
            ("x-latchkey-groups" = String, description = "Comma-separated group names (commas in names as `%2C`)."),
        )),
        (status = 302, description = "No live session: a browser goes to the sign-in page.", headers(
            ("location" = String, description = "`/auth/login?redirect=<the page>`"),
        )),
    ),
    extensions(("x-error-codes" = json!(["unauthenticated", "invalid_redirect", "database_unavailable"])))
)]
pub async fn verify(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let mut res = check(&state, &ctx, &headers, &uri)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn check(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response> {
    if let Some((token, _)) = auth::request_token(headers)
        && let Some(live) = auth::live_session(state, &token).await?
    {
        return Ok(identity_response(&live.user, &live.groups));
    }
    let Some(wanted) = wanted_page(uri, headers) else {
        return Err(Error::Unauthenticated);
    };
    if wanted.source != Source::Rd && !accepts_html(headers) {
        return Err(Error::Unauthenticated);
    }
    let eff = state.settings.current();
    let base = ctx.redirect_base(&eff)?;
    let target = parse_return_to_or_fallback(
        Some(wanted.url.as_str()),
        &base,
        eff.strings("redirect-allowed-origins"),
    )
    .map_err(|_| Error::InvalidRedirect)?;
    let login = login_url(&base, &target)?;
    let location = HeaderValue::from_str(login.as_str()).map_err(|_| Error::InvalidRedirect)?;
    let mut res = match wanted.source {
        Source::OriginalUrl => Error::Unauthenticated.into_response(),
        Source::Rd | Source::ForwardedHeaders => StatusCode::FOUND.into_response(),
    };
    res.headers_mut().insert(header::LOCATION, location);
    Ok(res)
}

/// Where the page the browser wanted came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Rd,
    ForwardedHeaders,
    OriginalUrl,
}

#[derive(Debug, PartialEq, Eq)]
struct WantedPage {
    url: String,
    source: Source,
}

/// The page the browser asked for: `rd`, else `X-Original-URL`, else
/// `X-Forwarded-Proto` + `X-Forwarded-Host` + `X-Forwarded-Uri`. Not yet validated.
fn wanted_page(uri: &Uri, headers: &HeaderMap) -> Option<WantedPage> {
    let rd = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned());
    if let Some(rd) = rd.filter(|r| !r.is_empty()) {
        return Some(WantedPage {
            url: rd,
            source: Source::Rd,
        });
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(original) = text("x-original-url") {
        return Some(WantedPage {
            url: original.to_owned(),
            source: Source::OriginalUrl,
        });
    }
    // Behind several proxies these may be lists; the first entry is what the client used.
    let first = |v: &str| v.split(',').next().unwrap_or("").trim().to_owned();
    let host = text("x-forwarded-host").map(first)?;
    let path = text("x-forwarded-uri")?;
    let scheme = text("x-forwarded-proto")
        .map(first)
        .unwrap_or_else(|| "http".to_owned());
    if !path.starts_with('/') {
        return None;
    }
    Some(WantedPage {
        url: format!("{scheme}://{host}{path}"),
        source: Source::ForwardedHeaders,
    })
}

/// A browser navigating asks for HTML; `fetch`, API clients and `curl` do not.
fn accepts_html(headers: &HeaderMap) -> bool {
    crate::http::extract::accepts(headers, crate::http::extract::HTML)
}

/// `<base>/auth/login?redirect=<target, percent-encoded>`.
fn login_url(base: &Url, target: &Url) -> Result<Url> {
    let mut login = base
        .join("/auth/login")
        .map_err(|_| Error::InvalidRedirect)?;
    login
        .query_pairs_mut()
        .clear()
        .append_pair("redirect", target.as_str());
    Ok(login)
}

fn identity_response(user: &User, groups: &[Group]) -> Response {
    let groups = groups
        .iter()
        .map(|g| header_value(&g.name, true))
        .collect::<Vec<_>>()
        .join(",");
    let values = [
        (USER_ID_HEADER, user.id.to_string()),
        (EMAIL_HEADER, header_value(&user.email, false)),
        (NAME_HEADER, header_value(&user.display_name(), false)),
        (GROUPS_HEADER, groups),
    ];
    let mut res = StatusCode::OK.into_response();
    for (name, value) in values {
        // Always valid: header_value leaves printable ASCII only.
        if let Ok(v) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    res
}

/// A header-safe spelling of `value`: printable ASCII stays as it is, except `%`, a
/// leading or trailing space and, with `encode_commas`, `,`; every other byte (controls,
/// CR/LF, non-ASCII UTF-8) becomes `%XX`. Decoding `%XX` as UTF-8 gives `value` back.
pub fn header_value(value: &str, encode_commas: bool) -> String {
    let bytes = value.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        let edge_space = b == b' ' && (i == 0 || i + 1 == bytes.len());
        let keep =
            (0x20..0x7f).contains(&b) && b != b'%' && !(encode_commas && b == b',') && !edge_space;
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn header_values_are_printable_ascii_and_reversible() {
        assert_eq!(header_value("Ada Lovelace", false), "Ada Lovelace");
        assert_eq!(header_value("Ada Lövelace", false), "Ada L%C3%B6velace");
        assert_eq!(header_value("a\r\nX-Evil: 1", false), "a%0D%0AX-Evil: 1");
        assert_eq!(header_value("100% sure", false), "100%25 sure");
        assert_eq!(header_value(" padded ", false), "%20padded%20");
        assert_eq!(header_value("Ops, EU", true), "Ops%2C EU");
        assert_eq!(header_value("Ops, EU", false), "Ops, EU");
        assert_eq!(header_value("tab\there", false), "tab%09here");
        for s in ["Ünïcødé ✓", "a,b%c\u{0}\u{7f}", " x ", "plain"] {
            let encoded = header_value(s, true);
            assert!(encoded.bytes().all(|b| (0x20..0x7f).contains(&b)));
            let decoded: Vec<u8> = percent_decode(&encoded);
            assert_eq!(String::from_utf8(decoded).unwrap(), s);
        }
    }

    fn percent_decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn rd_wins_over_proxy_headers() {
        let uri: Uri = "/auth/verify?rd=https%3A%2F%2Fapp.example%2Fx%3Fa%3D1%26b%3D2"
            .parse()
            .unwrap();
        let h = headers(&[("x-original-url", "https://other.example/")]);
        assert_eq!(
            wanted_page(&uri, &h),
            Some(WantedPage {
                url: "https://app.example/x?a=1&b=2".into(),
                source: Source::Rd
            })
        );
    }

    #[test]
    fn traefik_and_caddy_headers_rebuild_the_url() {
        let uri: Uri = "/auth/verify".parse().unwrap();
        let h = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example, proxy.internal"),
            ("x-forwarded-uri", "/dash?x=1"),
            ("x-forwarded-method", "GET"),
        ]);
        assert_eq!(
            wanted_page(&uri, &h),
            Some(WantedPage {
                url: "https://app.example/dash?x=1".into(),
                source: Source::ForwardedHeaders
            })
        );
        // Without a host or with a path that is not one, nothing is rebuilt.
        assert_eq!(
            wanted_page(&uri, &headers(&[("x-forwarded-uri", "/dash")])),
            None
        );
        let h = headers(&[
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-uri", "dash"),
        ]);
        assert_eq!(wanted_page(&uri, &h), None);
    }

    #[test]
    fn original_url_header_is_taken_whole() {
        let uri: Uri = "/auth/verify?rd=".parse().unwrap();
        let h = headers(&[
            ("x-original-url", "http://127.0.0.1:8080/a?b=c&d=e"),
            ("x-forwarded-host", "ignored.example"),
            ("x-forwarded-uri", "/ignored"),
        ]);
        assert_eq!(
            wanted_page(&uri, &h),
            Some(WantedPage {
                url: "http://127.0.0.1:8080/a?b=c&d=e".into(),
                source: Source::OriginalUrl
            })
        );
    }

    #[test]
    fn login_url_percent_encodes_the_whole_target() {
        let base = Url::parse("https://sso.example/").unwrap();
        let target = Url::parse("https://app.example/x?a=1&b=2#f").unwrap();
        assert_eq!(
            login_url(&base, &target).unwrap().as_str(),
            "https://sso.example/auth/login?redirect=https%3A%2F%2Fapp.example%2Fx%3Fa%3D1%26b%3D2%23f"
        );
    }
}
