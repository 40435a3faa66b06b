//! Who is asking: sessions, the CurrentUser / AdminUser extractors, the CSRF rule for
//! cookie-authenticated state changes, password hashing and login throttling.

pub mod cache;
pub mod password;
pub mod session;
pub mod throttle;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};

use crate::app::AppState;
use crate::error::{Error, Result};
use crate::http::context::RequestContext;
use std::sync::Arc;

pub use cache::LiveSession;

/// The signed-in user of a request. It derefs to the cached [`LiveSession`], so
/// `current.user` and `current.session` read the shared entry without copying it.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub live: Arc<LiveSession>,
    /// Authenticated by the cookie (CSRF rules apply) rather than the header.
    pub via_cookie: bool,
}

impl std::ops::Deref for CurrentUser {
    type Target = LiveSession;

    fn deref(&self) -> &LiveSession {
        &self.live
    }
}

/// The signed-in user, who must be an administrator.
#[derive(Debug, Clone)]
pub struct AdminUser(pub CurrentUser);

/// The stored key of the session the request's cookie carries, whether or not it is live:
/// what a login replaces. Only the cookie: it is what a browser brings to a sign-in (and what
/// a planted session would be), while a session in `X-Latchkey-Session` belongs to an API
/// client that chose to send it.
pub fn cookie_session_key(headers: &HeaderMap) -> Option<Vec<u8>> {
    cookie_token(headers).map(|token| session::session_key(token).as_bytes().to_vec())
}

/// The session token a request carries: the header wins over the cookie.
pub fn request_token(headers: &HeaderMap) -> Option<(String, bool)> {
    if let Some(v) = headers
        .get(session::HEADER_NAME)
        .and_then(|v| v.to_str().ok())
        && !v.is_empty()
    {
        return Some((v.to_owned(), false));
    }
    cookie_token(headers).map(|t| (t.to_owned(), true))
}

/// The session token in the request's `latchkey.session` cookie.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::token_from_cookie_header)
}

/// Loads the session behind `token` if it is live: not expired, not idle too long, and
/// its user active. Served from the instance's cache when it has a fresh entry (see
/// `cache`: revocations reach it within a second).
pub async fn live_session(state: &AppState, token: &str) -> Result<Option<Arc<LiveSession>>> {
    if token.len() > 256 {
        return Ok(None);
    }
    // The cache's key is the token's SHA-256; the stored key is only needed on a miss.
    let digest = session::token_digest(token);
    let caches = &state.caches;
    let found = match caches.get(&caches.sessions, &digest) {
        Some(hit) => Some(hit),
        None => {
            let epoch = caches.epoch();
            let loaded = state
                .store
                .session_identity(session::session_key(token).as_bytes())
                .await?
                .map(|(session, user, groups)| Arc::new(LiveSession::new(session, user, groups)));
            if let Some(v) = &loaded {
                caches.put(&caches.sessions, digest, epoch, v.clone());
            }
            loaded
        }
    };
    let Some(live) = found else {
        return Ok(None);
    };
    let now = crate::clock::now();
    if live.session.expires_at <= now || !live.user.is_active {
        return Ok(None);
    }
    let eff = state.settings.current();
    // The absolute lifetime is also the current setting's: lowering `session-max-age-minutes`
    // shortens sessions already issued (raising it does not lengthen them: `expires_at`).
    if let Some(max_age) = eff.int("session-max-age-minutes")
        && live
            .session
            .created_at
            .saturating_add(max_age.saturating_mul(60))
            <= now
    {
        return Ok(None);
    }
    // Ended for good by an earlier value of the lifetime or of the idle timeout.
    if live.session.created_at <= eff.sessions_created_before
        || live.session.last_seen_at < eff.sessions_seen_before
    {
        return Ok(None);
    }
    let idle = eff.int("session-idle-timeout-minutes").map(|m| m * 60);
    let every = crate::settings::touch_interval(idle);
    let seen = now - live.session.last_seen_at;
    // `last_seen_at` lags the last request by less than `every`, so a session counts as idle
    // only past `idle + every`: never before its holder was away for the whole timeout, at
    // most `every` later.
    if let Some(idle) = idle
        && seen > idle + every
    {
        return Ok(None);
    }
    // Whether or not a timeout is set (one may be set later), at most one write per
    // session per `every`. Best effort: a session that is valid stays usable while the
    // database cannot record its use (it is tried again at the next request).
    if seen >= every {
        match Box::pin(state.store.touch_session(&live.session.id_hash, now)).await {
            Ok(()) => caches.forget(&caches.sessions, &digest),
            Err(e) => tracing::warn!(error = %e, "cannot record a session's last use"),
        }
    }
    Ok(Some(live))
}

/// SPEC §5: a state-changing request authenticated by cookie must come from our origin.
pub fn check_csrf(method: &Method, headers: &HeaderMap, ctx: &RequestContext) -> Result<()> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        return if origin.to_str().ok() == Some(ctx.expected_origin().as_str()) {
            Ok(())
        } else {
            Err(Error::CsrfFailed)
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("same-origin") => Ok(()),
        _ => Err(Error::CsrfFailed),
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let ctx = RequestContext::from_parts(parts);
        let (token, via_cookie) = request_token(&parts.headers).ok_or(Error::Unauthenticated)?;
        let live = live_session(state, &token)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if via_cookie {
            check_csrf(&parts.method, &parts.headers, &ctx)?;
        }
        let current = CurrentUser { live, via_cookie };
        parts.extensions.insert(current.clone());
        Ok(current)
    }
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let current = CurrentUser::from_request_parts(parts, state).await?;
        if !current.user.is_superuser {
            return Err(Error::Forbidden("This needs an administrator.".into()));
        }
        Ok(AdminUser(current))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_seen_is_written_once_a_minute_or_a_quarter_of_a_shorter_idle_timeout() {
        assert_eq!(crate::settings::touch_interval(None), 60);
        assert_eq!(crate::settings::touch_interval(Some(30 * 60)), 60);
        assert_eq!(crate::settings::touch_interval(Some(60)), 15);
        assert_eq!(crate::settings::touch_interval(Some(2)), 1);
    }
}
