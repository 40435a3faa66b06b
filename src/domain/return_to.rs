//! Validation of post-login redirect targets (`return_to`, `redirect`, `rd`) — SPEC §4.6.
//!
//! An open redirect on a sign-in endpoint turns the organisation's own login page into a
//! phishing springboard, so this module is deliberately strict and small:
//!
//! * the raw input is screened *before* parsing, because browsers silently strip tabs,
//!   newlines and leading/trailing C0 characters and treat `\` like `/` for http(s) — so
//!   what our parser sees and what the browser follows could otherwise differ;
//! * a relative target must start with exactly one `/` (never `//` or `/\`, which browsers
//!   read as "another host");
//! * an absolute target must literally be `http://…` or `https://…` (so `https:evil.com` and
//!   `https:///evil.com`, which parsers disagree about, never get a chance), carry no
//!   userinfo, and have an allowed origin (scheme, host *and* port — not just the host);
//! * the result is the WHATWG-parsed, **re-serialised** absolute URL, never the raw string,
//!   so the `Location` header says exactly what was validated;
//! * the path of the result is percent-decoded repeatedly and must not then look like a
//!   protocol-relative URL or carry control characters or backslashes, so that a later hop
//!   (an SPA router, a proxy that normalises paths) cannot turn `/%2F%2Fevil.com` into
//!   `//evil.com`.

use url::{Origin, Url};

/// The one error of this module. It carries no detail on purpose: the response says
/// `invalid_redirect` and never echoes the input or the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redirect target")]
pub struct InvalidRedirect;

/// Longest raw input (and longest resulting URL) we accept, in bytes. Real return paths
/// are short; a cap keeps parsing cheap and keeps `Location` headers a sane size. The
/// same cap on the output keeps the validator idempotent (its output is always accepted
/// again).
pub const MAX_REDIRECT_LEN: usize = 2048;

/// How many rounds of percent-decoding we look through when checking the path. A URL
/// still changing after this many rounds is not something a person typed; reject it.
const MAX_DECODE_ROUNDS: usize = 8;

/// Validates a redirect target and returns the absolute URL to put in `Location`.
///
/// `base` is `site-url` when set, else the request's own scheme+host (for example
/// `http://127.0.0.1:3000/`). `allowed_origins` are the `redirect-allowed-origins`
/// entries; unparseable or non-http(s) entries are ignored rather than failing the
/// request, because a bad setting must not lock everybody out of signing in.
///
/// `None` or an empty string means "no preference" and yields `base` joined with `/`, as
/// `/` itself does.
pub fn parse_return_to(
    raw: Option<&str>,
    base: &Url,
    allowed_origins: &[String],
) -> Result<Url, InvalidRedirect> {
    let base_origin = http_origin(base).ok_or(InvalidRedirect)?;
    let raw = match raw {
        // `/` (the most common target) is what the relative branch below would make of it.
        None | Some("" | "/") => {
            // A base that is its own origin's `/` already (the request's own base always
            // is) is what joining `/` would give: no second parse.
            let root = if base.path() == "/" && base.query().is_none() && base.fragment().is_none()
            {
                base.clone()
            } else {
                base.join("/").map_err(|_| InvalidRedirect)?
            };
            check_origin(&root, &base_origin, &[])?;
            check_strict(&root)?;
            return Ok(root);
        }
        Some(raw) => raw,
    };
    if raw.len() > MAX_REDIRECT_LEN {
        return Err(InvalidRedirect);
    }
    let url = parse_on_allowed_origin(raw, base, &base_origin, allowed_origins)?;
    check_strict(&url)?;
    Ok(url)
}

/// [`parse_return_to`] for forward-auth (`/auth/verify`), where the target is whatever page
/// a browser asked an app for: when the target is on an allowed origin and well-formed but
/// fails the stricter checks of the full URL (its length, or what its percent-decoded
/// query, fragment or path could turn into), the way back is the same origin's path
/// without query and fragment, or, if that fails too, the origin's `/`. A target that is
/// malformed or on another origin is still refused.
///
/// The stricter checks guard against what a later hop might make of a URL; an ordinary app
/// URL such as a GET form's `?q=line1%0D%0Aline2` or a long query trips them, and refusing
/// it would leave a signed-out browser with an error page (nginx turns a `400` from the
/// check into a `500`) instead of the sign-in page.
pub fn parse_return_to_or_fallback(
    raw: Option<&str>,
    base: &Url,
    allowed_origins: &[String],
) -> Result<Url, InvalidRedirect> {
    if let Ok(url) = parse_return_to(raw, base, allowed_origins) {
        return Ok(url);
    }
    let raw = raw.filter(|r| !r.is_empty()).ok_or(InvalidRedirect)?;
    let base_origin = http_origin(base).ok_or(InvalidRedirect)?;
    let url = match parse_on_allowed_origin(raw, base, &base_origin, allowed_origins) {
        Ok(url) => url,
        // A character refused only in the query or fragment (a raw `\`, which browsers send
        // unencoded in a query) does not stop the fallback: the part before the first `?` or
        // `#`, where the origin and the path are, is checked on its own.
        Err(e) => match raw.find(['?', '#']) {
            Some(end) => parse_on_allowed_origin(&raw[..end], base, &base_origin, allowed_origins)?,
            None => return Err(e),
        },
    };
    let mut path_only = url.clone();
    path_only.set_query(None);
    path_only.set_fragment(None);
    let root = url.join("/").map_err(|_| InvalidRedirect)?;
    // Each candidate goes through the full check again: the answer is always a target
    // `parse_return_to` itself accepts.
    parse_return_to(Some(path_only.as_str()), base, allowed_origins)
        .or_else(|_| parse_return_to(Some(root.as_str()), base, allowed_origins))
}

/// Everything [`parse_return_to`] checks except the length caps and the percent-decoded
/// checks of [`check_strict`]: the raw characters, the relative or canonical absolute
/// spelling, the parse, the scheme, no userinfo, and an allowed origin.
fn parse_on_allowed_origin(
    raw: &str,
    base: &Url,
    base_origin: &Origin,
    allowed_origins: &[String],
) -> Result<Url, InvalidRedirect> {
    screen_raw(raw)?;

    if raw.starts_with('/') {
        // Relative: exactly one leading slash. `//host` and `/\host` name another host in
        // browsers; the backslash case is already gone (screen_raw) but stays explicit.
        if raw.starts_with("//") || raw.starts_with("/\\") {
            return Err(InvalidRedirect);
        }
        let joined = base.join(raw).map_err(|_| InvalidRedirect)?;
        // Defence in depth: a relative reference must never leave the base's origin,
        // whatever the parser did with it; allowed origins do not apply here.
        check_origin(&joined, base_origin, &[])?;
        return Ok(joined);
    }

    // Absolute: insist on the canonical `scheme://` spelling before parsing, so that
    // scheme-relative oddities (`https:evil.com`, `https:/x`, `https:///evil.com`) and
    // every other scheme (`javascript:`, `data:`, `localhost:3000`) are refused outright.
    if !has_canonical_http_prefix(raw) {
        return Err(InvalidRedirect);
    }
    let url = Url::parse(raw).map_err(|_| InvalidRedirect)?;
    let allowed: Vec<Origin> = allowed_origins
        .iter()
        .filter_map(|entry| parse_allowed_origin(entry))
        .collect();
    check_origin(&url, base_origin, &allowed)?;
    Ok(url)
}

/// `scheme://host[:port]` of an http(s) URL, the port only when it is not the scheme's
/// default — the form browsers send in the `Origin` header, used for CSRF checks.
///
/// For a URL without a tuple origin (not http/https, or without a host) this returns the
/// empty string rather than the WHATWG `"null"`: browsers really do send `Origin: null`
/// (sandboxed frames, cross-origin redirects), and a `"null" == "null"` match must never
/// count as same-origin. Use [`origin_matches`] to compare against a header.
pub fn origin_of(url: &Url) -> String {
    match http_origin(url) {
        Some(origin) => origin.ascii_serialization(),
        None => String::new(),
    }
}

/// Whether an `Origin` header value names the same origin as `expected`.
///
/// False for an empty value, for `null`, and whenever `expected` has no http(s) origin,
/// so that "both unknown" never passes a CSRF check. The header is parsed (not compared
/// as a string) so `https://SITE:443` and `https://site` agree.
pub fn origin_matches(header_value: &str, expected: &Url) -> bool {
    let Some(expected) = http_origin(expected) else {
        return false;
    };
    if header_value.is_empty() || header_value.eq_ignore_ascii_case("null") {
        return false;
    }
    match Url::parse(header_value) {
        Ok(url) => {
            url.username().is_empty()
                && url.password().is_none()
                && http_origin(&url).is_some_and(|o| o == expected)
        }
        Err(_) => false,
    }
}

/// The tuple origin of an http(s) URL with a host; `None` otherwise. `Url::origin`
/// already normalises default ports (`https://site:443` == `https://site`) and host case.
fn http_origin(url: &Url) -> Option<Origin> {
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    match url.origin() {
        origin @ Origin::Tuple(..) => Some(origin),
        Origin::Opaque(_) => None,
    }
}

/// Parses one `redirect-allowed-origins` entry leniently: surrounding whitespace and any
/// path are ignored; entries with userinfo or a non-http(s) scheme are dropped, since an
/// origin never carries either and accepting them would hide a typo.
fn parse_allowed_origin(entry: &str) -> Option<Origin> {
    let url = Url::parse(entry.trim()).ok()?;
    if !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    http_origin(&url)
}

/// Character-level screening of the raw input, done before any parsing because the
/// WHATWG parser (like browsers) silently strips or rewrites exactly these characters.
/// The length cap is applied by the caller.
fn screen_raw(raw: &str) -> Result<(), InvalidRedirect> {
    if raw.starts_with(char::is_whitespace) || raw.ends_with(char::is_whitespace) {
        return Err(InvalidRedirect);
    }
    if raw.chars().any(|c| is_forbidden_char(c) || c == '\\') {
        return Err(InvalidRedirect);
    }
    Ok(())
}

/// C0 controls (tab, CR, LF and NUL included), DEL and the C1 controls.
fn is_forbidden_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1F}' | '\u{7F}'..='\u{9F}')
}

/// `http://` or `https://` (any case) followed by something that is not another slash:
/// the only absolute spellings every URL parser agrees on.
fn has_canonical_http_prefix(raw: &str) -> bool {
    let rest = strip_prefix_ignore_ascii_case(raw, "https://")
        .or_else(|| strip_prefix_ignore_ascii_case(raw, "http://"));
    match rest {
        Some(rest) => !rest.is_empty() && !rest.starts_with('/'),
        None => false,
    }
}

fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Checks applied to every candidate *after* parsing, whatever its spelling was: the
/// parsed URL is what we will emit, so it is what must be safe. First where it points:
/// http(s), no userinfo, an allowed origin.
fn check_origin(
    url: &Url,
    base_origin: &Origin,
    allowed: &[Origin],
) -> Result<(), InvalidRedirect> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(InvalidRedirect);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidRedirect);
    }
    let origin = http_origin(url).ok_or(InvalidRedirect)?;
    if origin != *base_origin && !allowed.contains(&origin) {
        return Err(InvalidRedirect);
    }
    Ok(())
}

/// Then the stricter checks of the whole URL: its length, and what a later hop could make
/// of its percent-decoded path, query and fragment.
fn check_strict(url: &Url) -> Result<(), InvalidRedirect> {
    if url.as_str().len() > MAX_REDIRECT_LEN {
        return Err(InvalidRedirect);
    }
    check_decoded_path(url.path())?;
    for part in [url.query(), url.fragment()].into_iter().flatten() {
        check_decoded(part, false)?;
    }
    Ok(())
}

/// The path, percent-decoded round after round, must never start with `//`, and must
/// never contain a backslash or a control character: some hop after us (an SPA router,
/// a proxy, a framework's trailing-slash redirect) may decode it and emit it as a
/// path-only `Location`, where `//evil.com` or `/\evil.com` means another host.
///
/// Nor may a decoded path hold a `.` or `..` segment: the parser has already removed the
/// literal ones, so these were encoded (`/..%2F/evil.com`, `/%252e%252e//evil.com`), and
/// a hop that decodes *and* normalises the path would turn them into `//evil.com`
/// (found by the differential test against Node's URL parser, tests/reliability).
fn check_decoded_path(path: &str) -> Result<(), InvalidRedirect> {
    check_decoded(path, true)
}

fn check_decoded(part: &str, is_path: bool) -> Result<(), InvalidRedirect> {
    let mut current: Vec<u8> = part.as_bytes().to_vec();
    for _ in 0..=MAX_DECODE_ROUNDS {
        if current.iter().any(|&b| b < 0x20 || b == 0x7F) {
            return Err(InvalidRedirect);
        }
        // C1 controls as UTF-8 (U+0080..U+009F are encoded as C2 80..C2 9F).
        if current.windows(2).any(|w| matches!(w, [0xC2, 0x80..=0x9F])) {
            return Err(InvalidRedirect);
        }
        if is_path
            && (current.starts_with(b"//")
                || current.contains(&b'\\')
                || current
                    .split(|&b| b == b'/')
                    .any(|segment| segment == b"." || segment == b".."))
        {
            return Err(InvalidRedirect);
        }
        let next = percent_decode_once(&current);
        if next == current {
            return Ok(());
        }
        current = next;
    }
    // Still changing after many rounds: nested encoding nobody types by hand.
    Err(InvalidRedirect)
}

/// One round of `%XX` decoding; malformed escapes are left as they are (as browsers do).
/// Written with slice patterns so it cannot index out of bounds on any input.
fn percent_decode_once(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%'
            && let [hi, lo, after @ ..] = tail
            && let (Some(hi), Some(lo)) = (hex_value(*hi), hex_value(*lo))
        {
            out.push((hi << 4) | lo);
            rest = after;
            continue;
        }
        out.push(first);
        rest = tail;
    }
    out
}

/// The value of one hex digit (always below 16).
fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The `Location` to send for a validated target: a relative input gets a relative answer
/// (path, query and fragment re-serialised from the parsed URL, as Metabase answers), an
/// absolute input the re-serialised absolute URL. Either way the raw input is never echoed.
pub fn location(raw: Option<&str>, target: &url::Url) -> String {
    let relative = raw.is_none_or(|r| r.is_empty() || r.starts_with('/'));
    if relative {
        relative_reference(target)
    } else {
        target.to_string()
    }
}

/// Path, query and fragment of a URL: the same place, relative to its own origin.
pub fn relative_reference(target: &url::Url) -> String {
    let mut out = target.path().to_owned();
    if let Some(q) = target.query() {
        out.push('?');
        out.push_str(q);
    }
    if let Some(f) = target.fragment() {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SITE: &str = "https://mb.example.com/app/";

    fn base() -> Url {
        Url::parse(SITE).unwrap()
    }

    fn check(raw: &str) -> Result<String, InvalidRedirect> {
        parse_return_to(Some(raw), &base(), &[]).map(|u| u.to_string())
    }

    fn check_allowed(raw: &str, allowed: &[&str]) -> Result<String, InvalidRedirect> {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        parse_return_to(Some(raw), &base(), &allowed).map(|u| u.to_string())
    }

    fn assert_rejected(raw: &str) {
        assert_eq!(
            check(raw),
            Err(InvalidRedirect),
            "expected rejection of {raw:?}"
        );
    }

    // --- missing / empty ---------------------------------------------------------------

    #[test]
    fn missing_target_goes_to_site_root() {
        let got = parse_return_to(None, &base(), &[]).unwrap();
        assert_eq!(got.as_str(), "https://mb.example.com/");
    }

    #[test]
    fn empty_target_goes_to_site_root() {
        assert_eq!(check("").unwrap(), "https://mb.example.com/");
    }

    #[test]
    fn missing_target_with_request_base_uses_request_origin() {
        let base = Url::parse("http://127.0.0.1:3000/").unwrap();
        let got = parse_return_to(None, &base, &[]).unwrap();
        assert_eq!(got.as_str(), "http://127.0.0.1:3000/");
    }

    #[test]
    fn no_target_and_slash_give_the_bases_root_whatever_the_base() {
        for base in [
            "http://127.0.0.1:3000/",
            "https://mb.example.com/metabase/",
            "https://mb.example.com/?q=1",
            "https://mb.example.com/#top",
        ] {
            let base = Url::parse(base).unwrap();
            let root = base.join("/").unwrap();
            for raw in [None, Some(""), Some("/")] {
                assert_eq!(
                    parse_return_to(raw, &base, &[]).unwrap(),
                    root,
                    "{base} {raw:?}"
                );
            }
        }
    }

    // --- ordinary targets -------------------------------------------------

    #[test]
    fn r01_relative_paths_become_absolute_same_origin() {
        assert_eq!(check("/").unwrap(), "https://mb.example.com/");
        assert_eq!(
            check("/dashboard/1?x=1#f").unwrap(),
            "https://mb.example.com/dashboard/1?x=1#f"
        );
    }

    #[test]
    fn r02_absolute_same_origin_accepted() {
        assert_eq!(
            check("https://mb.example.com/x").unwrap(),
            "https://mb.example.com/x"
        );
    }

    #[test]
    fn absolute_same_origin_scheme_and_host_case_insensitive() {
        assert_eq!(
            check("HTTPS://MB.Example.COM/x").unwrap(),
            "https://mb.example.com/x"
        );
    }

    #[test]
    fn default_port_equals_no_port() {
        assert_eq!(
            check("https://mb.example.com:443/x").unwrap(),
            "https://mb.example.com/x"
        );
        let http_base = Url::parse("http://site.test").unwrap();
        assert_eq!(
            parse_return_to(Some("http://site.test:80/y"), &http_base, &[])
                .unwrap()
                .as_str(),
            "http://site.test/y"
        );
    }

    #[test]
    fn base_with_explicit_port_matches_only_that_port() {
        let base = Url::parse("http://127.0.0.1:3000/").unwrap();
        assert_eq!(
            parse_return_to(Some("http://127.0.0.1:3000/a"), &base, &[])
                .unwrap()
                .as_str(),
            "http://127.0.0.1:3000/a"
        );
        assert_eq!(
            parse_return_to(Some("http://127.0.0.1:3001/a"), &base, &[]),
            Err(InvalidRedirect)
        );
        assert_eq!(
            parse_return_to(Some("http://127.0.0.1/a"), &base, &[]),
            Err(InvalidRedirect)
        );
    }

    #[test]
    fn output_is_reserialised_not_raw() {
        assert_eq!(
            check("/a b/ü?q=x y#f g").unwrap(),
            "https://mb.example.com/a%20b/%C3%BC?q=x%20y#f%20g"
        );
        assert_eq!(check("/a/./b/../c").unwrap(), "https://mb.example.com/a/c");
    }

    #[test]
    fn relative_path_ignores_base_path() {
        // `/x` is origin-relative, not relative to `/app/`.
        assert_eq!(check("/x").unwrap(), "https://mb.example.com/x");
    }

    // --- allowed origins ---------------------------------------------------------------

    #[test]
    fn allowed_origin_accepted() {
        assert_eq!(
            check_allowed(
                "https://app.example.com/p?q=1",
                &["https://app.example.com"]
            )
            .unwrap(),
            "https://app.example.com/p?q=1"
        );
    }

    #[test]
    fn allowed_origin_entries_parsed_leniently() {
        let allowed = [
            "not a url",
            "",
            "javascript:alert(1)",
            " https://app.example.com/ignored/path ",
            "http://other.example.com:8080",
        ];
        assert!(check_allowed("https://app.example.com/x", &allowed).is_ok());
        assert!(check_allowed("http://other.example.com:8080/x", &allowed).is_ok());
        assert_eq!(
            check_allowed("http://other.example.com/x", &allowed),
            Err(InvalidRedirect)
        );
    }

    #[test]
    fn allowed_origin_with_userinfo_entry_is_ignored() {
        assert_eq!(
            check_allowed("https://app.example.com/", &["https://u:p@app.example.com"]),
            Err(InvalidRedirect)
        );
    }

    #[test]
    fn allowed_origin_default_port_normalised() {
        assert!(
            check_allowed(
                "https://app.example.com/x",
                &["https://app.example.com:443"]
            )
            .is_ok()
        );
        assert!(
            check_allowed(
                "https://app.example.com:443/x",
                &["https://app.example.com"]
            )
            .is_ok()
        );
    }

    #[test]
    fn allowed_origin_must_match_scheme_and_port() {
        let allowed = ["https://app.example.com"];
        assert_eq!(
            check_allowed("http://app.example.com/", &allowed),
            Err(InvalidRedirect)
        );
        assert_eq!(
            check_allowed("https://app.example.com:444/", &allowed),
            Err(InvalidRedirect)
        );
        assert_eq!(
            check_allowed("https://sub.app.example.com/", &allowed),
            Err(InvalidRedirect)
        );
        assert_eq!(
            check_allowed("https://app.example.com.evil.com/", &allowed),
            Err(InvalidRedirect)
        );
    }

    #[test]
    fn site_port_not_allowed_unless_listed() {
        assert_rejected("https://mb.example.com:444/");
        assert!(
            check_allowed(
                "https://mb.example.com:444/",
                &["https://mb.example.com:444"]
            )
            .is_ok()
        );
    }

    #[test]
    fn allowed_origins_do_not_apply_to_non_http_targets() {
        assert_eq!(
            check_allowed("javascript:alert(1)", &["javascript:alert(1)"]),
            Err(InvalidRedirect)
        );
    }

    #[test]
    fn non_http_base_rejects_everything() {
        let base = Url::parse("file:///tmp/x").unwrap();
        assert_eq!(
            parse_return_to(Some("/a"), &base, &[]),
            Err(InvalidRedirect)
        );
        assert_eq!(parse_return_to(None, &base, &[]), Err(InvalidRedirect));
    }

    // --- R-03 .. R-22 payloads ------------------------------------------------------------

    #[test]
    fn r03_protocol_relative_rejected() {
        assert_rejected("//evil.com");
    }

    #[test]
    fn r04_extra_slashes_rejected() {
        assert_rejected("///evil.com");
        assert_rejected("////evil.com");
    }

    #[test]
    fn r05_backslash_variants_rejected() {
        for p in [
            "/\\evil.com",
            "\\\\evil.com",
            "/\\/evil.com",
            "https:\\\\evil.com",
            "/ok\\x",
        ] {
            assert_rejected(p);
        }
    }

    #[test]
    fn r06_encoded_slashes_rejected() {
        // Stricter than "accept as-is": a later hop that decodes the path would see
        // `//evil.com` / `/\evil.com`.
        assert_rejected("/%2F%2Fevil.com");
        assert_rejected("/%2f%2fevil.com");
        assert_rejected("/%5Cevil.com");
        assert_rejected("/%2F%5Cevil.com");
        // Double and triple encoding too.
        assert_rejected("/%252F%252Fevil.com");
        assert_rejected("/%25252F%25252Fevil.com");
    }

    #[test]
    fn encoded_slash_inside_path_is_harmless() {
        assert_eq!(check("/a%2Fb").unwrap(), "https://mb.example.com/a%2Fb");
        assert_eq!(
            check("/search?q=100%25").unwrap(),
            "https://mb.example.com/search?q=100%25"
        );
    }

    #[test]
    fn r07_scheme_relative_http_forms_rejected() {
        for p in [
            "https:evil.com",
            "https:/evil.com",
            "http:evil.com",
            "http:/evil.com",
            "https:mb.example.com/x",
        ] {
            assert_rejected(p);
        }
    }

    #[test]
    fn r08_triple_slash_absolute_rejected() {
        assert_rejected("https:///evil.com");
        assert_rejected("https:///mb.example.com/x");
    }

    #[test]
    fn r09_userinfo_tricks_rejected() {
        for p in [
            "http://mb.example.com@evil.com/",
            "https://mb.example.com@evil.com/",
            "//mb.example.com@evil.com",
            "//mb.example.com%2F@evil.com",
            "https://user@mb.example.com/",
            "https://user:pw@mb.example.com/",
            "https://:pw@mb.example.com/",
            "https://evil.com@mb.example.com/",
        ] {
            assert_rejected(p);
        }
    }

    #[test]
    fn r10_fragment_and_backslash_at_tricks_rejected() {
        assert_rejected("https://evil.com#@mb.example.com");
        assert_rejected("//evil.com\\@mb.example.com");
        assert_rejected("https://evil.com\\@mb.example.com");
        assert_rejected("https://evil.com?@mb.example.com");
    }

    #[test]
    fn r11_suffix_and_prefix_matches_rejected() {
        assert_rejected("https://mb.example.com.evil.com/");
        assert_rejected("https://evil.com/mb.example.com");
        assert_rejected("https://evilmb.example.com/");
    }

    #[test]
    fn r12_script_and_data_schemes_rejected() {
        for p in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "java%09script:alert(1)",
            "java\tscript:alert(1)",
            "java%0d%0ascript:alert(1)",
            "java\r\nscript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "ftp://mb.example.com/",
        ] {
            assert_rejected(p);
        }
    }

    #[test]
    fn r13_control_and_whitespace_smuggling_rejected() {
        for p in [
            "/\t/evil.com",
            "/\n/evil.com",
            "\t//evil.com",
            " //evil.com",
            "\0//evil.com",
            // the literal (double-encoded) forms
            "/%09/evil.com",
            "/%0a/evil.com",
            "/%0A/evil.com",
            "%09//evil.com",
            "%20//evil.com",
            "%00//evil.com",
            "/%00",
            "/%7F",
            "/%C2%85x",
        ] {
            assert_rejected(p);
        }
    }

    #[test]
    fn leading_or_trailing_whitespace_rejected() {
        for p in [" /a", "/a ", "/a\u{3000}", "\u{00A0}/a", "/a\n", "\r/a"] {
            assert_rejected(p);
        }
    }

    #[test]
    fn every_control_character_rejected() {
        for c in ('\u{0}'..='\u{1F}').chain('\u{7F}'..='\u{9F}') {
            assert_rejected(&format!("/a{c}b"));
            assert_rejected(&format!("https://mb.example.com/a{c}b"));
        }
    }

    #[test]
    fn r14_ideographic_full_stop_host_rejected() {
        assert_rejected("//evil%E3%80%82com");
        assert_rejected("//evil\u{3002}com");
        assert_rejected("https://evil\u{3002}com/");
    }

    #[test]
    fn r15_unicode_lookalikes_stay_on_site() {
        assert_eq!(
            check("/%E3%80%82evil.com").unwrap(),
            "https://mb.example.com/%E3%80%82evil.com"
        );
        // No leading slash: a relative reference we refuse.
        assert_rejected("%EF%BC%8F%EF%BC%8Fevil.com");
        assert_rejected("\u{FF0F}\u{FF0F}evil.com");
    }

    #[test]
    fn r16_unicode_normalisation_split_rejected() {
        assert_rejected("//evil.c\u{2100}.mb.example.com");
        assert_rejected("https://evil.c\u{2100}.mb.example.com/");
    }

    #[test]
    fn idn_confusable_host_rejected() {
        // Cyrillic "а" in place of Latin "a": punycodes to another host.
        assert_rejected("https://mb.ex\u{0430}mple.com/");
        assert_rejected("https://xn--mb-example.com/");
    }

    #[test]
    fn r17_dot_segments() {
        // `/./evil.com` normalises to an ordinary same-origin path.
        assert_eq!(
            check("/./evil.com").unwrap(),
            "https://mb.example.com/evil.com"
        );
        // `/..//evil.com` would leave a path `//evil.com`: refused, so nobody downstream
        // can emit it path-only.
        assert_rejected("/..//evil.com");
        assert_rejected("/a/..//evil.com");
        assert_rejected("/%2e%2e//evil.com");
        assert_rejected("/a/%2E%2E/%2F/evil.com");
    }

    #[test]
    fn encoded_dot_segments_rejected() {
        // A hop that decodes and then normalises the path would make these `//evil.com`
        // (cases found by tests/reliability's differential test against Node's URL).
        for p in [
            "/..%2F/evil.com",
            "/..%2F//",
            "/.%2F/evil.com",
            "/%252e%252e//evil.com",
            "/a/%252e%252e/%252e%252e//evil.com",
            "/%252e/%2Fevil.com",
            "/x/..%252F/evil.com",
        ] {
            assert_rejected(p);
        }
        // Dots that are not whole segments are ordinary characters.
        assert_eq!(
            check("/files/v1.2..3/.well-known/a%2E..b").unwrap(),
            "https://mb.example.com/files/v1.2..3/.well-known/a%2E..b"
        );
    }

    #[test]
    fn r18_other_origins_of_same_host_rejected() {
        assert_rejected("http://mb.example.com/x");
        assert_rejected("https://mb.example.com:8443/x");
        assert_rejected("https://MB.EXAMPLE.COM./x");
    }

    #[test]
    fn r19_bare_host_forms_rejected() {
        assert_rejected("localhost:3000");
        assert_rejected("mb.example.com");
        assert_rejected("mb.example.com/x");
        assert_rejected("dashboard");
        assert_rejected("?x=1");
        assert_rejected("#frag");
    }

    #[test]
    fn r20_query_metacharacters_stay_inside_the_value() {
        // The start endpoint percent-encodes the validated value; here we only check the
        // target itself is kept intact and on-site.
        assert_eq!(
            check("/a&jwt=x#y").unwrap(),
            "https://mb.example.com/a&jwt=x#y"
        );
    }

    #[test]
    fn r21_crlf_injection_rejected() {
        assert_rejected("/\r\nSet-Cookie: x=y");
        assert_rejected("/%0d%0aSet-Cookie:%20x=y");
        assert_rejected("/?a=%0d%0aSet-Cookie:%20x=y");
        assert_rejected("/#%0d%0a");
    }

    #[test]
    fn r22_each_value_validated_on_its_own() {
        // Parameter pollution is resolved by the handler; the validator must refuse the
        // evil value whichever one it is given.
        assert!(check("/ok").is_ok());
        assert_rejected("//evil.com");
    }

    #[test]
    fn overlong_input_rejected() {
        let long = format!("/{}", "a".repeat(MAX_REDIRECT_LEN));
        assert_rejected(&long);
        let fits = format!("/{}", "a".repeat(1000));
        assert!(check(&fits).is_ok());
    }

    #[test]
    fn overlong_output_rejected() {
        // 700 chars of 'ü' is 1400 bytes raw but 4200 bytes once percent-encoded.
        let expanding = format!("/{}", "ü".repeat(700));
        assert!(expanding.len() <= MAX_REDIRECT_LEN);
        assert_rejected(&expanding);
    }

    #[test]
    fn percent_decoding_handles_malformed_escapes() {
        assert_eq!(percent_decode_once(b"%2F%2f%5c"), b"//\\".to_vec());
        assert_eq!(percent_decode_once(b"%"), b"%".to_vec());
        assert_eq!(percent_decode_once(b"a%2"), b"a%2".to_vec());
        assert_eq!(percent_decode_once(b"%zz%4"), b"%zz%4".to_vec());
        assert_eq!(percent_decode_once(b"%252F"), b"%2F".to_vec());
        assert_eq!(percent_decode_once(b"%C3%BC"), "\u{fc}".as_bytes().to_vec());
    }

    #[test]
    fn deeply_nested_encoding_rejected() {
        // Nine rounds of encoding of "/" still decode to something new after eight.
        let mut enc = "%2F".to_string();
        for _ in 0..8 {
            enc = enc.replace('%', "%25");
        }
        assert_rejected(&format!("/a{enc}b"));
        assert!(check("/a%252Fb").is_ok());
    }

    // --- forward-auth fallback --------------------------------------------------------------

    fn fallback(raw: &str) -> Result<String, InvalidRedirect> {
        parse_return_to_or_fallback(Some(raw), &base(), &allowed_list()).map(|u| u.to_string())
    }

    #[test]
    fn fallback_keeps_what_the_strict_check_accepts() {
        for raw in ["/x?a=1#f", "https://app.example.com/d?q=a%20b", ""] {
            assert_eq!(
                parse_return_to_or_fallback(Some(raw), &base(), &allowed_list()),
                parse_return_to(Some(raw), &base(), &allowed_list()),
                "{raw}"
            );
        }
        assert_eq!(
            parse_return_to_or_fallback(None, &base(), &[])
                .unwrap()
                .as_str(),
            "https://mb.example.com/"
        );
    }

    #[test]
    fn fallback_drops_the_query_then_the_path_on_an_allowed_origin() {
        // Encoded CR/LF/tab in a query or fragment (a GET form with a textarea).
        assert_eq!(
            fallback("https://app.example.com/search?q=line1%0D%0Aline2%09x#a%0A").unwrap(),
            "https://app.example.com/search"
        );
        assert_eq!(
            fallback("/search?q=a%0Ab").unwrap(),
            "https://mb.example.com/search"
        );
        // Over the length cap because of the query, or of the path.
        let long_query = format!(
            "http://localhost:8080/r/7?d={}",
            "x".repeat(MAX_REDIRECT_LEN)
        );
        assert_eq!(fallback(&long_query).unwrap(), "http://localhost:8080/r/7");
        let long_path = format!("/{}?a=1", "p".repeat(MAX_REDIRECT_LEN));
        assert_eq!(fallback(&long_path).unwrap(), "https://mb.example.com/");
        // A path a later hop could decode into `..` or `//`.
        assert_eq!(
            fallback("https://app.example.com/a/%252e%252e/b?x=1").unwrap(),
            "https://app.example.com/"
        );
        assert_eq!(
            fallback("/%2F%2Fevil.com?q=%0A").unwrap(),
            "https://mb.example.com/"
        );
        // A raw backslash in the query or fragment: browsers send it unencoded there.
        assert_eq!(
            fallback("https://app.example.com/search?p=C:\\Users").unwrap(),
            "https://app.example.com/search"
        );
        assert_eq!(
            fallback("/search#C:\\x").unwrap(),
            "https://mb.example.com/search"
        );
    }

    #[test]
    fn fallback_still_refuses_other_origins_and_malformed_targets() {
        for raw in [
            "https://evil.example/search?q=a%0Ab",
            "http://app.example.com/search?q=a%0Ab",
            "https://app.example.com:8443/?q=%0A",
            "//evil.example/?q=%0A",
            "https://user:pw@app.example.com/?q=%0A",
            "https://app.example.com/a\\b?q=%0A",
            "https://app.example.com\\@evil.example/?q=\\",
            "https://evil.example/?p=C:\\x",
            "/\\evil.example/?p=\\",
            "https://app.example.com/a\nb?q=%0A",
            " /x?q=%0A",
            "https:app.example.com/?q=%0A",
            "javascript:alert(1)//%0A",
        ] {
            assert_eq!(fallback(raw), Err(InvalidRedirect), "{raw:?}");
        }
        let long_elsewhere = format!("https://evil.example/?d={}", "x".repeat(MAX_REDIRECT_LEN));
        assert_eq!(fallback(&long_elsewhere), Err(InvalidRedirect));
    }

    // --- origin helpers -------------------------------------------------------------------

    #[test]
    fn origin_of_omits_default_ports_only() {
        let o = |s: &str| origin_of(&Url::parse(s).unwrap());
        assert_eq!(o("https://site.test/a?b#c"), "https://site.test");
        assert_eq!(o("https://site.test:443/"), "https://site.test");
        assert_eq!(o("http://site.test:80/"), "http://site.test");
        assert_eq!(o("https://site.test:8443/"), "https://site.test:8443");
        assert_eq!(o("http://127.0.0.1:3000/"), "http://127.0.0.1:3000");
        assert_eq!(o("http://[::1]:3000/"), "http://[::1]:3000");
        assert_eq!(o("HTTPS://Site.TEST/"), "https://site.test");
    }

    #[test]
    fn origin_of_non_http_is_empty_not_null() {
        assert_eq!(origin_of(&Url::parse("file:///x").unwrap()), "");
        assert_eq!(origin_of(&Url::parse("data:text/plain,x").unwrap()), "");
    }

    #[test]
    fn origin_matches_header_values() {
        let site = Url::parse("https://site.test/app/").unwrap();
        assert!(origin_matches("https://site.test", &site));
        assert!(origin_matches("https://site.test:443", &site));
        assert!(!origin_matches("http://site.test", &site));
        assert!(!origin_matches("https://evil.test", &site));
        assert!(!origin_matches("null", &site));
        assert!(!origin_matches("", &site));
        assert!(!origin_matches("https://u@site.test", &site));
        let opaque = Url::parse("data:text/plain,x").unwrap();
        assert!(!origin_matches("null", &opaque));
        assert!(!origin_matches("", &opaque));
    }

    // --- properties -----------------------------------------------------------------------

    fn allowed_list() -> Vec<String> {
        vec![
            "https://app.example.com".to_string(),
            "http://localhost:8080".to_string(),
        ]
    }

    fn allowed_origin_set() -> Vec<String> {
        vec![
            origin_of(&base()),
            "https://app.example.com".to_string(),
            "http://localhost:8080".to_string(),
        ]
    }

    /// Inputs built from the pieces open-redirect payloads are made of, so the search
    /// spends its time near the interesting boundaries rather than on random noise.
    fn payload() -> impl Strategy<Value = String> {
        let prefixes = prop::sample::select(vec![
            "",
            "/",
            "//",
            "///",
            "/\\",
            "\\",
            "http://",
            "https://",
            "HTTPS://",
            "https:",
            "https:/",
            "https:///",
            "javascript:",
            "https://mb.example.com",
            "https://mb.example.com:443",
            "https://mb.example.com:444",
            "https://app.example.com",
            "http://localhost:8080",
            "https://evil.com",
            "//evil.com",
            "/%2F",
            "/%5C",
            "/..",
            "/./",
            " ",
            "\t",
            "%09",
            "%2e%2e/",
        ]);
        let pieces = prop::collection::vec(
            prop::sample::select(vec![
                "/",
                "\\",
                "@",
                ":",
                ".",
                "..",
                "%",
                "%2F",
                "%2f",
                "%5C",
                "%25",
                "%2e",
                "%00",
                "%0a",
                "%09",
                "?",
                "#",
                "evil.com",
                "mb.example.com",
                "app.example.com",
                "a",
                "\u{3002}",
                "\u{FF0F}",
                "\u{2100}",
                "ü",
                " ",
                "\t",
                "\n",
                "\0",
                "\u{85}",
                ":443",
                ":8080",
                "[::1]",
                "xn--",
                "&",
                "=",
            ]),
            0..8,
        );
        (prefixes, pieces).prop_map(|(p, v)| format!("{p}{}", v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        #[test]
        fn accepted_targets_stay_on_allowed_origins_and_are_idempotent(raw in payload()) {
            let allowed = allowed_list();
            if let Ok(url) = parse_return_to(Some(&raw), &base(), &allowed) {
                prop_assert!(allowed_origin_set().contains(&origin_of(&url)), "{raw:?} -> {url}");
                prop_assert!(url.username().is_empty() && url.password().is_none());
                prop_assert!(!url.path().starts_with("//"));
                let again = parse_return_to(Some(url.as_str()), &base(), &allowed);
                prop_assert_eq!(again, Ok(url.clone()), "not idempotent for {:?}", raw);
            }
        }

        #[test]
        fn fallback_targets_are_strictly_valid_and_on_allowed_origins(raw in payload()) {
            let allowed = allowed_list();
            let strict = parse_return_to(Some(&raw), &base(), &allowed);
            match parse_return_to_or_fallback(Some(&raw), &base(), &allowed) {
                Ok(url) => {
                    prop_assert!(allowed_origin_set().contains(&origin_of(&url)), "{raw:?} -> {url}");
                    let again = parse_return_to(Some(url.as_str()), &base(), &allowed);
                    prop_assert_eq!(again, Ok(url.clone()), "not strictly valid for {:?}", raw);
                    if let Ok(strict) = strict {
                        prop_assert_eq!(strict, url);
                    }
                }
                Err(_) => prop_assert!(strict.is_err()),
            }
        }

        #[test]
        fn arbitrary_strings_never_panic_and_never_leave_site(raw in any::<String>()) {
            let allowed = allowed_list();
            if let Ok(url) = parse_return_to(Some(&raw), &base(), &allowed) {
                prop_assert!(allowed_origin_set().contains(&origin_of(&url)));
                let again = parse_return_to(Some(url.as_str()), &base(), &allowed);
                prop_assert_eq!(again, Ok(url.clone()));
            }
        }

        #[test]
        fn relative_targets_stay_on_base_origin_and_are_idempotent(
            raw in "/[a-zA-Z0-9/%.?#@:&= \u{fc}-]{0,30}"
        ) {
            let allowed = allowed_list();
            if let Ok(url) = parse_return_to(Some(&raw), &base(), &allowed) {
                prop_assert_eq!(origin_of(&url), origin_of(&base()));
                let again = parse_return_to(Some(url.as_str()), &base(), &allowed);
                prop_assert_eq!(again, Ok(url.clone()));
            }
        }
    }
}
