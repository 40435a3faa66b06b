//! Password login, logout, first-run setup and the public session properties.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::{self, CurrentUser, password, session, throttle};
use crate::domain::email::Email;
use crate::domain::name::MAX_NAME_CHARS;
use crate::error::{Error, Result};
use crate::http::audit;
use crate::http::context::RequestContext;
use crate::http::extract::ApiJson;
use crate::store::{NewSession, NewUser};

/// What the sign-in page needs to know before anyone is signed in.
#[derive(Serialize, ToSchema)]
pub struct SessionProperties {
    /// No administrator exists yet: the first one is created through `POST /api/setup`.
    setup_required: bool,
    /// The effective value: false while JWT SSO is on and password login is switched off.
    password_login_enabled: bool,
    /// JWT SSO is enabled and configured.
    jwt_enabled: bool,
    site_url: Option<String>,
}

/// Public session properties.
#[utoipa::path(
    get,
    path = "/api/session/properties",
    tag = "session",
    responses((status = 200, body = SessionProperties)),
    extensions(("x-error-codes" = json!(["database_unavailable"])))
)]
pub async fn properties(State(state): State<AppState>) -> Result<Json<SessionProperties>> {
    let eff = state.settings.current();
    Ok(Json(SessionProperties {
        setup_required: !state.store.admin_exists().await?,
        password_login_enabled: eff.password_login_enabled(),
        jwt_enabled: eff.jwt_configured(),
        site_url: eff.str("site-url").map(str::to_owned),
    }))
}

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    /// The email address.
    #[schema(example = "ada@example.com")]
    username: String,
    password: String,
}

/// A new session: its token is also set as the `latchkey.session` cookie.
#[derive(Serialize, ToSchema)]
pub struct NewSessionToken {
    /// The session token, for the `X-Latchkey-Session` header.
    pub id: String,
}

/// Opens a session for `user_id` and answers `{"id": token}` with the cookie.
pub async fn start_session(
    state: &AppState,
    ctx: &RequestContext,
    user_id: i64,
    auth_method: &'static str,
    audit_row: crate::store::AuditRecord,
) -> Result<Response> {
    let token = open_session(state, ctx, user_id, auth_method, audit_row, None).await?;
    let cookie = session::session_cookie(&token, &state.settings.current(), ctx.https);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(NewSessionToken { id: token }),
    )
        .into_response())
}

/// Stores a new session for `user_id` (with its audit row), ending the one it `replaces`
/// (the session in the request's cookie) when that is another user's, and returns its token.
pub async fn open_session(
    state: &AppState,
    ctx: &RequestContext,
    user_id: i64,
    auth_method: &'static str,
    audit_row: crate::store::AuditRecord,
    replaces: Option<Vec<u8>>,
) -> Result<String> {
    let eff = state.settings.current();
    let (token, key) = session::new_token();
    let now = crate::clock::now();
    let new = NewSession {
        id_hash: key.as_bytes().to_vec(),
        user_id,
        now,
        expires_at: now + eff.int("session-max-age-minutes").unwrap_or(20_160) * 60,
        auth_method,
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
        replaces,
    };
    if !state.store.create_session(&new, &audit_row).await? {
        // Deactivated since the caller checked: refused as a deactivated account's
        // password is.
        return Err(Error::InvalidCredentials);
    }
    Ok(token)
}

/// Password sign-in.
///
/// Throttled per email (10 failures an hour) and per client IP (50 an hour); while
/// throttled even the right password is refused.
#[utoipa::path(
    post,
    path = "/api/session",
    tag = "session",
    request_body = LoginBody,
    responses((status = 200, body = NewSessionToken, headers(("set-cookie" = String, description = "`latchkey.session=<token>; HttpOnly; Path=/; …`")))),
    extensions(("x-error-codes" = json!(["validation_failed", "invalid_credentials", "password_login_disabled", "body_too_large", "too_many_attempts", "database_unavailable"])))
)]
pub async fn login(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response> {
    let replaces = auth::cookie_session_key(&headers);
    let (token, _user) =
        password_login(&state, &ctx, &body.username, body.password, replaces).await?;
    let cookie = session::session_cookie(&token, &state.settings.current(), ctx.https);
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(NewSessionToken { id: token }),
    )
        .into_response())
}

/// Email + password sign-in (SPEC §5), shared by the API and the login form: the switch,
/// the throttle (the attempt is reserved first, so even the right password is refused while
/// throttled), argon2 on a blocking thread, then a new session. Returns the session token.
pub async fn password_login(
    state: &AppState,
    ctx: &RequestContext,
    username: &str,
    password: String,
    replaces: Option<Vec<u8>>,
) -> Result<(String, crate::store::User)> {
    let result = check_password_login(state, ctx, username, password, replaces).await;
    state.metrics.record_login("password", result)
}

async fn check_password_login(
    state: &AppState,
    ctx: &RequestContext,
    username: &str,
    password: String,
    replaces: Option<Vec<u8>>,
) -> Result<(String, crate::store::User)> {
    // The sign-in form can carry a NUL (the JSON API refuses it earlier). No address has
    // one, and PostgreSQL cannot store one in the throttle bucket or the audit row.
    let email = username.trim().to_lowercase().replace('\0', "\u{FFFD}");
    let now = crate::clock::now();
    let mut failure = audit(ctx, "password_login", "failure");
    // The account is read once: for its password below, and for the address this attempt is
    // recorded and throttled by. Only an address is: what is typed into the name field is
    // sometimes the password, and passwords never reach the audit log (SPEC §4.8). A name
    // that is not an address stands for the account stored under it before today's address
    // rules, if there is one; else it counts only against its IP.
    let found = state.store.find_user_by_email(&email).await?;
    let address = if Email::parse(&email).is_ok() {
        Some(email.clone())
    } else {
        found.as_ref().map(|f| f.user.email.clone())
    };
    let email_bucket = address.as_deref().map(throttle::email_bucket);
    failure.email = address;
    let mut buckets: Vec<_> = email_bucket
        .iter()
        .map(|b| (b.clone(), throttle::PER_EMAIL))
        .collect();
    if let Some(ip) = &ctx.ip {
        buckets.push((throttle::ip_bucket(ip), throttle::PER_IP));
    }
    if !state.settings.current().password_login_enabled() {
        failure.reason = Some("password_login_disabled".into());
        state.store.audit(&failure).await?;
        return Err(Error::PasswordLoginDisabled);
    }
    // The attempt is counted before argon2 runs (its failure recorded in advance), so
    // guesses sent side by side cannot all pass the throttle while the first are verified.
    let reserved = match throttle::reserve(&state.store, &buckets, now).await {
        Ok(ids) => ids,
        Err(e @ Error::TooManyAttempts { .. }) => {
            failure.reason = Some("too_many_attempts".into());
            state.store.audit(&failure).await?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let judged = judge_password(state, found, password).await;
    let user = match judged {
        Ok(Ok(user)) => user,
        Ok(Err(user_id)) => {
            // The reserved failure stays: it is this attempt's.
            failure.user_id = user_id;
            failure.reason = Some("invalid_credentials".into());
            state.store.audit(&failure).await?;
            return Err(Error::InvalidCredentials);
        }
        Err(e) => {
            // Not judged (the database or the hashing failed): the attempt does not count.
            let _ = state.store.forget_login_failures(None, &reserved).await;
            return Err(e);
        }
    };
    let mut success = audit(ctx, "password_login", "success");
    success.user_id = Some(user.id);
    success.actor_id = Some(user.id);
    success.email = Some(user.email.clone());
    let token = match open_session(state, ctx, user.id, "password", success, replaces).await {
        Err(Error::InvalidCredentials) => {
            // Deactivated while the password was checked: refused, recorded and counted
            // (the reserved failure stays) as a deactivated account's password is.
            failure.user_id = Some(user.id);
            failure.reason = Some("invalid_credentials".into());
            state.store.audit(&failure).await?;
            return Err(Error::InvalidCredentials);
        }
        other => other?,
    };
    // The session is stored: the login stands. Should the reserved failure not go away, it
    // is one more counted attempt, not a reason to refuse a signed-in user.
    if let Err(e) = state
        .store
        .forget_login_failures(email_bucket.as_deref(), &reserved)
        .await
    {
        tracing::warn!(error = %e, "cannot clear a successful login's reserved failure");
    }
    Ok((token, user))
}

/// Checks the password of the account `found` under the sign-in name: `Ok(Ok(user))` when it
/// is right and the account active, else `Ok(Err(the account's id, if there is one))`.
/// Unknown accounts, and passwords too long to hash, cost the same argon2 time.
async fn judge_password(
    state: &AppState,
    found: Option<crate::store::UserWithPassword>,
    password: String,
) -> Result<std::result::Result<crate::store::User, Option<i64>>> {
    let found = found.filter(|_| password.len() <= password::MAX_PASSWORD_BYTES);
    let phc = found.as_ref().and_then(|f| f.password_hash.clone());
    let ok = state.passwords.verify(password, phc).await?;
    Ok(match found {
        Some(f) if ok && f.user.is_active => Ok(f.user),
        other => Err(other.map(|f| f.user.id)),
    })
}

/// Sign out: revokes this session and clears the cookie.
#[utoipa::path(
    delete,
    path = "/api/session",
    tag = "session",
    security(("session_cookie" = []), ("session_header" = [])),
    responses((status = 204, description = "Signed out.")),
    extensions(("x-error-codes" = json!(["unauthenticated", "csrf_failed", "database_unavailable"])))
)]
pub async fn logout(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    current: CurrentUser,
) -> Result<Response> {
    let mut row = audit(&ctx, "logout", "success");
    row.user_id = Some(current.user.id);
    row.actor_id = Some(current.user.id);
    row.email = Some(current.user.email.clone());
    if let Some((token, _)) = auth::request_token(&headers) {
        state
            .store
            .delete_session(session::session_key(&token).as_bytes(), Some(&row))
            .await?;
    }
    let eff = state.settings.current();
    Ok((
        axum::http::StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie(&eff, ctx.https))],
    )
        .into_response())
}

#[derive(Deserialize, ToSchema)]
pub struct SetupBody {
    /// The one-time setup token the server printed at its first start.
    token: String,
    #[serde(deserialize_with = "crate::http::extract::object_only")]
    user: SetupUser,
}

#[derive(Deserialize, ToSchema)]
pub struct SetupUser {
    #[schema(example = "admin@example.com", format = "email")]
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    /// At least 8 characters (at most 1024 bytes).
    #[schema(min_length = 8)]
    password: String,
}

/// First-run setup: creates the first administrator with the one-time setup token, and
/// signs them in.
#[utoipa::path(
    post,
    path = "/api/setup",
    tag = "session",
    request_body = SetupBody,
    responses((status = 200, body = NewSessionToken, headers(("set-cookie" = String, description = "The session cookie.")))),
    extensions(("x-error-codes" = json!(["validation_failed", "forbidden", "conflict", "body_too_large", "database_unavailable"])))
)]
pub async fn setup(
    State(state): State<AppState>,
    ctx: RequestContext,
    ApiJson(body): ApiJson<SetupBody>,
) -> Result<Response> {
    let email = Email::parse(&body.user.email)
        .map_err(|_| Error::validation("user.email", "Enter a valid email address."))?;
    password::check_new_password(&body.user.password).map_err(|_| {
        Error::validation(
            "user.password",
            "The password must have at least 8 characters.",
        )
    })?;
    let first_name = clean_name(body.user.first_name, "user.first_name")?;
    let last_name = clean_name(body.user.last_name, "user.last_name")?;
    let refused =
        || Error::Forbidden("The setup token is not valid, or setup is already done.".into());
    // Checked before argon2 runs, so that clients without the token cannot make the server
    // hash at will; `complete_setup` checks again, atomically.
    let token_hash = session::hash_token(&body.token);
    if !state.store.setup_token_is_live(&token_hash).await? {
        return Err(refused());
    }
    let hash = state.passwords.hash(body.user.password).await?;
    let new = NewUser {
        email: email.as_str().to_owned(),
        first_name,
        last_name,
        password_hash: Some(hash),
        is_superuser: true,
        now: crate::clock::now(),
    };
    let row = audit(&ctx, "user_created", "success");
    let user = state
        .store
        .complete_setup(&token_hash, &new, &row)
        .await?
        .ok_or_else(refused)?;
    let mut login = audit(&ctx, "password_login", "success");
    login.user_id = Some(user.id);
    login.actor_id = Some(user.id);
    login.email = Some(user.email.clone());
    start_session(&state, &ctx, user.id, "password", login).await
}

/// A name as typed (`domain::name::clean`); one over the limit is a 400 naming `field`.
pub fn clean_name(name: Option<String>, field: &str) -> Result<Option<String>> {
    let Some(name) = name else { return Ok(None) };
    crate::domain::name::clean(&name).map_err(|_| {
        Error::validation(
            field,
            format!("{field} must be at most {MAX_NAME_CHARS} characters."),
        )
    })
}
