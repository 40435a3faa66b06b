//! `/auth/sso` (start and callback, SPEC §4), `/auth/logout`, back-channel logout and the
//! admin dry run.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::Url;

use crate::app::AppState;
use crate::auth::{self, AdminUser, session};
use crate::domain::return_to::parse_return_to;
use crate::error::{Error, Result, TokenFailure};
use crate::http::audit;
use crate::http::context::RequestContext;
use crate::http::extract::{ApiJson, HTML, accepts, is_json, json_object, read_body};
use crate::sso::verify::Members;
use crate::sso::{self, LoginResult};
use crate::store::{NewSession, SsoLogoutError};

/// The parameters of a callback or start request, from the query, a form or JSON.
#[derive(Default)]
struct SsoParams {
    jwt: Option<String>,
    return_to: Option<String>,
    redirect: Option<String>,
}

/// The first value of each parameter we know from a query or a form, decoded as
/// `application/x-www-form-urlencoded`; the others are not copied. A pair without `%` or `+`
/// (a token is base64url and dots) needs no decoding and is read in place: the general
/// decoder goes through it byte by byte, about 3 % of a login's instructions for the token.
/// The pairs and their `=` are found with `memchr` too: a split that tests each byte cost
/// about 1 % more.
fn params_from_form(form: &[u8]) -> SsoParams {
    let mut p = SsoParams::default();
    let mut start = 0;
    let ends = memchr::memchr_iter(b'&', form).chain(std::iter::once(form.len()));
    for end in ends {
        let pair = &form[start..end];
        start = end + 1;
        if pair.is_empty() {
            continue;
        }
        let (k, v) = if memchr::memchr2(b'%', b'+', pair).is_some() {
            match url::form_urlencoded::parse(pair).next() {
                Some(kv) => kv,
                None => continue,
            }
        } else {
            let (k, v) = match memchr::memchr(b'=', pair) {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            (text(k), text(v))
        };
        let slot = match &*k {
            "jwt" => &mut p.jwt,
            "return_to" => &mut p.return_to,
            "redirect" => &mut p.redirect,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    p
}

/// `String::from_utf8_lossy`, through the faster check of valid UTF-8 first.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(valid) => std::borrow::Cow::Borrowed(valid),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Every `/auth/sso` response keeps the token out of referrers and caches (SPEC §4.7); added
/// by `context::finish` to every response under `/auth/sso`, the router's own (405) included.
pub(super) fn sso_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn wants_json(headers: &HeaderMap) -> bool {
    accepts(headers, &["application/json"]) && !accepts(headers, HTML)
}

fn redirect_to(location: &str) -> Response {
    let mut res = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Start (without `jwt`) or callback (with `jwt`) of JWT SSO.
///
/// Without `jwt`: 302 to the identity provider with `return_to` = `redirect`. With `jwt`:
/// the token is verified (single use), the user provisioned and their groups synced, and a
/// session opened: 302 to `return_to` with the cookie, or 200 JSON for
/// `Accept: application/json`.
#[utoipa::path(
    get,
    path = "/auth/sso",
    tag = "sso",
    params(
        ("jwt" = Option<String>, Query, description = "The signed token (callback)."),
        ("return_to" = Option<String>, Query, description = "Where to go after the callback."),
        ("redirect" = Option<String>, Query, description = "Start: the page to come back to."),
    ),
    responses(
        (status = 200, body = crate::http::openapi::SsoLogin, description = "Signed in (`Accept: application/json`)."),
        (status = 302, description = "To the identity provider (start) or to `return_to` with the session cookie (callback).",
            headers(("location" = String), ("set-cookie" = String, description = "The session cookie (callback)."))),
    ),
    extensions(("x-error-codes" = json!(["sso_not_configured", "invalid_redirect", "validation_failed", "token_malformed", "token_too_large", "alg_not_allowed", "header_not_allowed", "bad_signature", "token_expired", "token_not_yet_valid", "token_too_old", "token_issued_in_future", "token_never_expires", "claim_invalid", "issuer_mismatch", "audience_mismatch", "token_replayed", "missing_email", "invalid_email", "claims_too_large", "user_not_provisioned", "user_deactivated", "database_unavailable"])))
)]
pub async fn sso_get(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let params = params_from_form(req.uri().query().unwrap_or("").as_bytes());
    // Boxed, here and in `sso_post`: the login's future is large (the store, the key
    // fetch), and the router moves the handler's future into a box of its own.
    Box::pin(handle(&state, &ctx, &headers, params, true))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The callback with the token in a form or JSON body (keeps it out of URLs and logs).
#[utoipa::path(
    post,
    path = "/auth/sso",
    tag = "sso",
    request_body(content(
        (crate::http::openapi::SsoCallback = "application/x-www-form-urlencoded"),
        (crate::http::openapi::SsoCallback = "application/json"),
    )),
    responses(
        (status = 200, body = crate::http::openapi::SsoLogin, description = "Signed in (`Accept: application/json`)."),
        (status = 302, description = "To `return_to` with the session cookie.",
            headers(("location" = String), ("set-cookie" = String, description = "The session cookie."))),
    ),
    extensions(("x-error-codes" = json!(["sso_not_configured", "invalid_redirect", "validation_failed", "token_malformed", "token_too_large", "alg_not_allowed", "header_not_allowed", "bad_signature", "token_expired", "token_not_yet_valid", "token_too_old", "token_issued_in_future", "token_never_expires", "claim_invalid", "issuer_mismatch", "audience_mismatch", "token_replayed", "missing_email", "invalid_email", "claims_too_large", "user_not_provisioned", "user_deactivated", "body_too_large", "database_unavailable"])))
)]
pub async fn sso_post(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let result = async {
        let body = read_body(req, &state).await?;
        let params = if is_json(&headers) {
            let v = json_object(&body)?;
            let field = |k: &str| -> Result<Option<String>> {
                match v.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(_) => Err(Error::validation(k, format!("{k} must be a string."))),
                }
            };
            SsoParams {
                jwt: field("jwt")?,
                return_to: field("return_to")?,
                redirect: None,
            }
        } else {
            params_from_form(&body)
        };
        Box::pin(handle(&state, &ctx, &headers, params, false)).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Both steps of `/auth/sso`; `may_start`: whether a request without `jwt` starts the
/// sign-in (a GET), rather than being a callback that lacks its token (a POST, SPEC §4.2).
async fn handle(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    params: SsoParams,
    may_start: bool,
) -> Result<Response> {
    let eff = state.settings.current();
    if !eff.jwt_configured() {
        return Err(Error::SsoNotConfigured);
    }
    if params.jwt.is_none() && !may_start {
        return Err(Error::validation(
            "jwt",
            "jwt is required (sign-in starts with GET /auth/sso).",
        ));
    }
    let base = ctx.redirect_base(&eff)?;
    let allowed = eff.strings("redirect-allowed-origins");
    let Some(token) = params.jwt else {
        // Step 1: send the browser to the identity provider.
        let target = match params.redirect.as_deref().filter(|r| !r.is_empty()) {
            Some(r) => {
                Some(parse_return_to(Some(r), &base, allowed).map_err(|_| Error::InvalidRedirect)?)
            }
            None => None,
        };
        let idp = eff
            .str("jwt-identity-provider-uri")
            .ok_or(Error::SsoNotConfigured)?;
        let mut location = Url::parse(idp).map_err(|_| Error::SsoNotConfigured)?;
        if let Some(t) = target {
            // Relative to our site when it is ours: the IdP hands it back as return_to.
            let value = if t.origin() == base.origin() {
                crate::domain::return_to::relative_reference(&t)
            } else {
                t.to_string()
            };
            location.query_pairs_mut().append_pair("return_to", &value);
        }
        return Ok(redirect_to(location.as_str()));
    };
    // Step 2: the callback. The redirect target is checked before the token is looked at.
    let target = parse_return_to(params.return_to.as_deref(), &base, allowed)
        .map_err(|_| Error::InvalidRedirect)
        .inspect_err(|e| state.metrics.login_failed("jwt", e.code()))?;
    let target = crate::domain::return_to::location(params.return_to.as_deref(), &target);
    let now = crate::clock::now();
    let (session_token, key) = session::new_token();
    let new_session = NewSession {
        id_hash: key.as_bytes().to_vec(),
        user_id: 0,
        now,
        expires_at: now + eff.int("session-max-age-minutes").unwrap_or(20_160) * 60,
        auth_method: "jwt",
        ip: ctx.ip.clone(),
        user_agent: ctx.user_agent.clone(),
        replaces: auth::cookie_session_key(headers),
    };
    let template = audit(ctx, "sso_login", "success");
    // Keys before verification: this may fetch the JWKS (bounded); the verifier never does.
    let keys = state.keys.key_set(&eff, &token, &state.metrics).await;
    let outcome = sso::login(&state.store, &eff, &keys, &token, new_session, template)
        .await
        .inspect_err(|e| state.metrics.login_failed("jwt", e.code()))?;
    match outcome {
        LoginResult::LoggedIn { user } => {
            state.metrics.login_succeeded("jwt");
            let cookie = session::session_cookie(&session_token, &eff, ctx.https);
            if wants_json(headers) {
                let groups = state.store.user_groups(user.id).await?;
                let body = json!({"id": session_token, "user": crate::http::api::user_json(&user, Some(&groups))});
                return Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response());
            }
            let mut res = redirect_to(&target);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(res)
        }
        LoginResult::Replayed { email, failure } => {
            // Refresh or back button: a browser already signed in as this user just goes on.
            if let Some((existing, _)) = auth::request_token(headers)
                && let Some(live) = auth::live_session(state, &existing).await?
                && live.user.email == email
                && !wants_json(headers)
            {
                return Ok(redirect_to(&target));
            }
            state.store.audit(&failure).await?;
            state.metrics.login_failed("jwt", "token_replayed");
            Err(Error::Token(TokenFailure::Replayed))
        }
    }
}

/// `GET /auth/logout`: ends this session, then goes to the IdP's logout for SSO sessions.
#[utoipa::path(
    get,
    path = "/auth/logout",
    tag = "sso",
    description = "Ends this session (if any) and clears the cookie, then 302 to \
        `jwt-logout-redirect-uri` for an SSO session, else to `/auth/login`.",
    security((), ("session_cookie" = []), ("session_header" = [])),
    responses((status = 302, description = "Signed out.",
        headers(("location" = String), ("set-cookie" = String, description = "Clears the session cookie.")))),
    extensions(("x-error-codes" = json!(["database_unavailable"])))
)]
pub async fn logout(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Response> {
    let eff = state.settings.current();
    let mut location = "/auth/login".to_owned();
    if let Some((token, _)) = auth::request_token(&headers) {
        let key = session::session_key(&token);
        let ended_by_sso = match auth::live_session(&state, &token).await? {
            Some(live) => {
                let user = &live.user;
                let mut row = audit(&ctx, "logout", "success");
                row.user_id = Some(user.id);
                row.actor_id = Some(user.id);
                row.email = Some(user.email.clone());
                state
                    .store
                    .delete_session(key.as_bytes(), Some(&row))
                    .await?;
                live.session.auth_method == "jwt"
            }
            // A session that has already ended (its lifetime, its idle timeout) is still
            // this browser's: its row goes, and an SSO session still signs out at the IdP,
            // whose own session may well be alive. Nothing is written for a token that
            // names no session.
            None if token.len() <= 256 => match state.store.session_identity(key.as_bytes()).await?
            {
                Some((ended, _, _)) => {
                    state.store.delete_session(key.as_bytes(), None).await?;
                    ended.auth_method == "jwt"
                }
                None => false,
            },
            None => false,
        };
        if ended_by_sso && let Some(uri) = eff.str("jwt-logout-redirect-uri") {
            location = uri.to_owned();
        }
    }
    let mut res = StatusCode::FOUND.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(&eff, ctx.https)) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `POST /auth/sso/logout`: the IdP ends every session of a user (SPEC §5).
#[utoipa::path(
    post,
    path = "/auth/sso/logout",
    tag = "sso",
    description = "Back-channel logout from the identity provider: a `logout_token` verified \
        like a login token (same keys, algorithms, time rules, single use) that names the \
        user by `email` or `sub` ends every session of that user.",
    request_body(content(
        (crate::http::openapi::LogoutTokenBody = "application/x-www-form-urlencoded"),
        (crate::http::openapi::LogoutTokenBody = "application/json"),
    )),
    responses((status = 200, body = crate::http::openapi::RevokedSessions)),
    extensions(("x-error-codes" = json!(["sso_not_configured", "validation_failed", "token_malformed", "token_too_large", "alg_not_allowed", "header_not_allowed", "bad_signature", "token_expired", "token_not_yet_valid", "token_too_old", "token_issued_in_future", "token_never_expires", "claim_invalid", "issuer_mismatch", "audience_mismatch", "token_replayed", "body_too_large", "database_unavailable"])))
)]
pub async fn backchannel_logout(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let result = async {
        let body = read_body(req, &state).await?;
        let token = if is_json(&headers) {
            let v = json_object(&body)?;
            v.get("logout_token")
                .and_then(Value::as_str)
                .map(str::to_owned)
        } else {
            url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "logout_token")
                .map(|(_, v)| v.into_owned())
        };
        let token =
            token.ok_or_else(|| Error::validation("logout_token", "logout_token is required."))?;
        let eff = state.settings.current();
        if !eff.jwt_configured() {
            return Err(Error::SsoNotConfigured);
        }
        let mut row = audit(&ctx, "logout", "success");
        let failed = |row: &crate::store::AuditRecord, code: &str| {
            let mut r = row.clone();
            r.outcome = "failure";
            r.reason = Some(code.to_owned());
            r
        };
        let ps = sso::PolicySettings::from_settings(&eff);
        let keys = state.keys.key_set(&eff, &token, &state.metrics).await;
        let verified = match sso::verify::verify(
            &token,
            &ps.policy(&keys, sso::verify::TokenPurpose::Logout),
            crate::clock::now(),
        ) {
            Ok(v) => v,
            Err(r) => {
                let f = TokenFailure::from(r);
                state.store.audit(&failed(&row, f.code())).await?;
                return Err(Error::Token(f));
            }
        };
        let names = sso::attribute_names(&eff);
        let email = match verified.claims.member(names.email) {
            None | Some(Value::Null) => None,
            Some(v) => match crate::domain::email::email_from_claim(Some(v)) {
                Ok(e) => Some(e.as_str().to_owned()),
                Err(_) => {
                    state.store.audit(&failed(&row, "claim_invalid")).await?;
                    return Err(Error::Token(TokenFailure::ClaimInvalid));
                }
            },
        };
        let subject = sso::stored_subject(&verified.claims);
        if email.is_none() && subject.is_none() {
            state.store.audit(&failed(&row, "claim_invalid")).await?;
            return Err(Error::Token(TokenFailure::ClaimInvalid));
        }
        row.email = email.clone();
        match state
            .store
            .sso_logout(
                &verified.replay_key,
                verified.replay_expires_at,
                email.as_deref(),
                subject.as_deref(),
                &row,
            )
            .await?
        {
            Ok(n) => Ok(Json(json!({"revoked": n})).into_response()),
            Err(SsoLogoutError::Replayed) => {
                state.store.audit(&failed(&row, "token_replayed")).await?;
                Err(Error::Token(TokenFailure::Replayed))
            }
            Err(SsoLogoutError::Ambiguous) => {
                state.store.audit(&failed(&row, "claim_invalid")).await?;
                Err(Error::Token(TokenFailure::ClaimInvalid))
            }
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[derive(serde::Deserialize)]
pub struct DryRunBody {
    token: String,
}

/// `POST /api/sso/jwt/test`: what the callback would do with this token, changing nothing.
#[utoipa::path(
    post,
    path = "/api/sso/jwt/test",
    tag = "sso",
    description = "The dry run (admin): each check's result, the resolved user fields, \
        attributes and group changes, without changing or consuming anything.",
    security(("session_cookie" = []), ("session_header" = [])),
    request_body = crate::http::openapi::DryRunRequest,
    responses((status = 200, body = crate::http::openapi::DryRunReport)),
    extensions(("x-error-codes" = json!(["validation_failed", "unauthenticated", "forbidden", "csrf_failed", "body_too_large", "database_unavailable"])))
)]
pub async fn dry_run(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiJson(body): ApiJson<DryRunBody>,
) -> Result<Json<Value>> {
    let eff = state.settings.current();
    // As sent, not trimmed: the callback does not trim either, and the dry run answers what
    // the callback would (the admin page trims what is pasted before sending it).
    let token = body.token.as_str();
    let keys = state.keys.key_set(&eff, token, &state.metrics).await;
    Ok(Json(
        sso::dry_run(&state.store, &eff, &keys, token, crate::clock::now()).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the general decoder makes of the same input: the first value of each key.
    fn reference(form: &[u8]) -> [Option<String>; 3] {
        let first = |key: &str| {
            url::form_urlencoded::parse(form)
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
        };
        [first("jwt"), first("return_to"), first("redirect")]
    }

    #[test]
    fn the_parameters_are_those_the_general_decoder_reads() {
        let cases: &[&[u8]] = &[
            b"",
            b"jwt=a.b.c",
            b"jwt=a.b.c&return_to=%2F",
            b"return_to=/x?y&jwt=first&jwt=second",
            b"&&jwt=&return_to",
            b"jw%74=escaped-key&redirect=a+b%20c",
            b"jwt=a%2Bb+c&jwt=plain",
            b"jwt==two=equals&return_to=%ZZ",
            b"redirect=%E2%82%AC&jwt=\xff\xfe",
            b"jwt%3Dx=y&jwt",
            b"&",
            b"=",
            b"jwt=x&",
            b"&jwt=x&&return_to=%2F&",
            b"=v&jwt=y+z",
        ];
        for form in cases {
            let p = params_from_form(form);
            assert_eq!(
                [p.jwt, p.return_to, p.redirect],
                reference(form),
                "{}",
                String::from_utf8_lossy(form)
            );
        }
    }
}
