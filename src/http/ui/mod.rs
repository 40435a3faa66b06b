//! The admin web UI: server-rendered askama pages over the store and settings, a little
//! hand-written JS (assets/) that calls the JSON API for changes, the embedded assets, and
//! the security headers every HTML page carries.

pub mod admin;
pub mod assets;
pub mod directory;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::app::AppState;
use crate::auth::{self, CurrentUser};
use crate::error::{Error, Result};
use crate::settings::Effective;

/// What every page's frame needs: the title, the asset version, the nav state, the scripts.
pub struct Chrome {
    pub title: String,
    pub asset_v: &'static str,
    /// Which admin nav entry is current ("auth", "people", "groups", "audit"); "" elsewhere.
    pub nav: &'static str,
    pub user_email: String,
    /// ES modules under /assets/<version>/ to load.
    pub scripts: Vec<&'static str>,
}

impl Chrome {
    pub fn public(title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            asset_v: assets::version(),
            nav: "",
            user_email: String::new(),
            scripts: Vec::new(),
        }
    }

    pub fn admin(
        title: impl Into<String>,
        nav: &'static str,
        admin: &CurrentUser,
        scripts: Vec<&'static str>,
    ) -> Chrome {
        Chrome {
            title: title.into(),
            asset_v: assets::version(),
            nav,
            user_email: admin.user.email.clone(),
            scripts,
        }
    }
}

/// Renders a template into an HTML response (headers are added by `add_page_headers`).
pub fn render(t: &impl askama::Template) -> Result<Response> {
    let html = t.render().map_err(Error::internal)?;
    let mut res = Html(html).into_response();
    // Whatever status the handler gives it, this page is the answer.
    res.extensions_mut()
        .insert(crate::http::context::RenderedPage);
    Ok(res)
}

/// JSON for a `<script type="application/json">` block: `<` is escaped so the text can
/// never close the element.
pub fn script_json(value: &serde_json::Value) -> String {
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// An administrator's page: signed out → the sign-in page (coming back here afterwards);
/// signed in without admin rights → the 403 page.
pub struct AdminPage(pub CurrentUser);

impl FromRequestParts<AppState> for AdminPage {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Response> {
        let Some(current) = signed_in(&parts.headers, state)
            .await
            .map_err(IntoResponse::into_response)?
        else {
            return Err(to_login(parts));
        };
        if !current.user.is_superuser {
            return Err(Error::Forbidden(
                "This page is for administrators, and your account is not one.".into(),
            )
            .into_response());
        }
        Ok(AdminPage(current))
    }
}

/// The signed-in user of a page request, if any (pages are GETs: no CSRF check needed).
pub async fn signed_in(headers: &HeaderMap, state: &AppState) -> Result<Option<CurrentUser>> {
    let Some((token, via_cookie)) = auth::request_token(headers) else {
        return Ok(None);
    };
    Ok(auth::live_session(state, &token)
        .await?
        .map(|live| CurrentUser { live, via_cookie }))
}

/// A redirect to the sign-in page that comes back to this page afterwards.
fn to_login(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = format!(
        "/auth/login?redirect={}",
        url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
    );
    (StatusCode::FOUND, [(header::LOCATION, target)]).into_response()
}

/// The security headers of every HTML page (SPEC §7), added by `context::finish` to any
/// `text/html` response. Scripts and styles only from our own /assets (no inline script),
/// no plugins, forms post to this site (or to an allowed origin, where a sign-in may
/// continue).
///
/// Framing follows `session-cookie-samesite`: with `None` the operator wants Latchkey in
/// iframes of their apps, so the `framable` pages (home, sign-in and the sign-in's error
/// pages: `/` and `/auth/…`) may be framed by this site and the `redirect-allowed-origins`;
/// otherwise nothing may frame us. Every other page (admin, setup, API docs) is never
/// framable (clickjacking on settings toggles).
pub fn add_page_headers(state: &AppState, framable: bool, res: &mut Response) {
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if !is_html {
        return;
    }
    let eff = state.settings.current();
    let ancestors = frame_ancestors(&eff, framable);
    let csp = content_security_policy(&eff, &ancestors);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if ancestors == "'none'" {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    h.entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// The `frame-ancestors` sources for a page.
pub fn frame_ancestors(eff: &Effective, framable: bool) -> String {
    if !framable || eff.str("session-cookie-samesite") != Some("None") {
        return "'none'".into();
    }
    let mut sources = vec!["'self'".to_owned()];
    if let Some(site) = &eff.site_url {
        sources.push(site.origin().ascii_serialization());
    }
    sources.extend_from_slice(eff.strings("redirect-allowed-origins"));
    sources.dedup();
    sources.join(" ")
}

pub fn content_security_policy(eff: &Effective, ancestors: &str) -> String {
    let mut form_action = vec!["'self'".to_owned()];
    form_action.extend_from_slice(eff.strings("redirect-allowed-origins"));
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; form-action {}; base-uri 'none'; \
         object-src 'none'; frame-ancestors {ancestors}",
        form_action.join(" ")
    )
}

/// "2026-05-12 14:03" (UTC) for tables; "never" for none.
pub fn when(at: Option<i64>) -> String {
    match at {
        None => "never".into(),
        Some(t) => {
            let s = crate::clock::rfc3339(t);
            // 2026-05-12T14:03:09Z → 2026-05-12 14:03
            s.get(..16).map(|d| d.replace('T', " ")).unwrap_or(s)
        }
    }
}
