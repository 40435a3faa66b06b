//! Server-rendered public pages (askama templates in templates/): first-run setup,
//! sign-in, home, and the HTML error page. Forms post same-origin and work without
//! JavaScript.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::auth::{self, password, session};
use crate::domain::email::Email;
use crate::domain::name::MAX_NAME_CHARS;
use crate::error::{Error, Result};
use crate::http::api::session::clean_name;
use crate::http::audit;
use crate::http::context::{ErrorPayload, RequestContext};
use crate::http::extract::read_body;
use crate::http::ui::{Chrome, render};
use crate::settings::Effective;
use crate::store::NewUser;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1f2933;line-height:1.5}\
h1{font-size:1.5rem}label{display:block;margin:.75rem 0 .25rem}input{width:100%;padding:.5rem;box-sizing:border-box;font-size:1rem}\
button,.button{display:inline-block;margin-top:1rem;padding:.6rem 1rem;background:#2563eb;color:#fff;border:0;border-radius:4px;font-size:1rem;text-decoration:none;cursor:pointer}\
.error{background:#fde8e8;border:1px solid #f5b5b5;padding:.75rem;border-radius:4px}.muted{color:#616e7c;font-size:.875rem}";

/// A self-contained page with inline styles, for the example identity provider (a separate
/// server that cannot use our /assets).
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Latchkey</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    )
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Chrome,
    heading: &'static str,
    message: &'a str,
    next_step: &'static str,
    code: &'a str,
    request_id: &'a str,
}

/// A short heading and what to do next, for each kind of failure a browser can meet.
fn error_guidance(status: StatusCode, code: &str) -> (&'static str, &'static str) {
    match code {
        "sso_not_configured" => (
            "Single sign-on is not set up",
            "Sign in with your email and password instead, or ask an administrator to finish the JWT settings.",
        ),
        "invalid_redirect" => (
            "That link points somewhere we won't send you",
            "Go back to the application you came from and start again from there, or sign in here and continue from the home page.",
        ),
        "token_replayed" | "token_expired" | "token_too_old" => (
            "The sign-in link has already been used or has expired",
            "Sign-in links work once and only for a short time. Press Try again to start a fresh sign-in.",
        ),
        "user_deactivated" => (
            "Your account is deactivated",
            "Ask an administrator to reactivate your account. Signing in again will not change this.",
        ),
        "user_not_provisioned" => (
            "You don't have an account here yet",
            "Ask an administrator to create your account, then try again.",
        ),
        "password_login_disabled" => (
            "Password sign-in is turned off",
            "Use “Sign in with SSO” on the sign-in page.",
        ),
        "forbidden" => (
            "You don't have access to this page",
            "Sign in with an administrator account, or go back to your home page.",
        ),
        "csrf_failed" => (
            "The request was refused",
            "Reload the page you came from and try again. If it keeps happening, your browser may be blocking the Origin header.",
        ),
        "not_found" => (
            "Page not found",
            "Check the address, or start again from the home page.",
        ),
        "too_many_attempts" => (
            "Too many attempts",
            "Wait a while before trying again; the limit resets within the hour.",
        ),
        "database_unavailable" | "internal_error" => (
            "Something went wrong on our side",
            "Wait a moment and try again. If it keeps happening, give the request id below to your administrator.",
        ),
        _ if status == StatusCode::UNAUTHORIZED => (
            "Sign-in failed",
            "Try signing in again. If it fails again, your identity provider and Latchkey may not agree on their settings: give the error code and request id below to your administrator.",
        ),
        _ => (
            "That did not work",
            "Try again. If it keeps happening, give the error code and request id below to your administrator.",
        ),
    }
}

/// The HTML error page for browsers: the sentence, what to do next, a way back, the
/// request id. Never raw JSON.
pub fn error_page(status: StatusCode, p: &ErrorPayload, request_id: &str) -> String {
    let (heading, next_step) = error_guidance(status, p.code);
    let page = ErrorPage {
        chrome: Chrome::public(heading),
        heading,
        message: &p.message,
        next_step,
        code: p.code,
        request_id,
    };
    page.render().unwrap_or_else(|_| {
        layout(
            "Error",
            &format!(
                "<h1>{}</h1><p>{}</p><p><a href=\"/auth/login\">Try again</a></p><p>Request id {}</p>",
                escape(heading),
                escape(&p.message),
                escape(request_id)
            ),
        )
    })
}

fn query_param(req: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    chrome: Chrome,
    done: bool,
    /// No administrator yet, and the token is not the live one.
    invalid_link: bool,
    /// The input `error` is about (`email`, `first_name`, `last_name`, `password`).
    error_field: &'static str,
    token: String,
    email: String,
    first_name: String,
    last_name: String,
    error: Option<String>,
}

impl SetupPage {
    fn new(token: String) -> SetupPage {
        SetupPage {
            chrome: Chrome::public("Set up Latchkey"),
            done: false,
            invalid_link: false,
            error_field: "",
            token,
            email: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            error: None,
        }
    }
}

pub async fn setup_page(State(state): State<AppState>, req: Request) -> Result<Response> {
    let mut page = SetupPage::new(query_param(&req, "token").unwrap_or_default());
    // A live link means no administrator yet; otherwise either setup is done or the link is
    // wrong, which is said at once rather than after the form is filled in.
    let live = state
        .store
        .setup_token_is_live(&session::hash_token(&page.token))
        .await?;
    page.done = !live && state.store.admin_exists().await?;
    page.invalid_link = !live && !page.done;
    let mut res = render(&page)?;
    if page.invalid_link {
        *res.status_mut() = StatusCode::FORBIDDEN;
    }
    Ok(res)
}

/// `POST /setup` from the setup form: the origin is checked first, then the setup token
/// (so that nobody without the link can make the server hash a password), then the
/// fields; on success a 303 to `/` signed in, else the form again with the error in place.
pub async fn setup_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    req: Request,
) -> Result<Response> {
    // Forms come from our own pages: refusing other origins stops login CSRF.
    auth::check_csrf(req.method(), req.headers(), &ctx)?;
    let body = read_body(req, &state).await?;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let token = get("token");
    let token_hash = session::hash_token(&token);
    let invalid_link =
        || Error::Forbidden("The setup link is not valid, or setup is already done.".into());
    if !state.store.setup_token_is_live(&token_hash).await? {
        return Err(invalid_link());
    }
    // The form again, with the error tied to the field it is about (which gets the focus).
    let again = |field: &'static str, error: &str| {
        let mut page = SetupPage::new(token.clone());
        page.email = get("email");
        page.first_name = get("first_name");
        page.last_name = get("last_name");
        page.error = Some(error.to_owned());
        page.error_field = field;
        let mut res = render(&page)?;
        *res.status_mut() = StatusCode::BAD_REQUEST;
        Ok(res)
    };
    let Ok(email) = Email::parse(get("email").trim()) else {
        return again("email", "Enter a valid email address.");
    };
    let pw = get("password");
    if let Err(e) = password::check_new_password(&pw) {
        // Which limit was missed: too short, or over 1024 bytes.
        return again("password", &e.to_string());
    }
    let name = |field: &str| clean_name(form.get(field).cloned(), field);
    let too_long = format!("Names can have at most {MAX_NAME_CHARS} characters.");
    let (first_name, last_name) = match (name("first_name"), name("last_name")) {
        (Ok(first), Ok(last)) => (first, last),
        (Err(_), _) => return again("first_name", &too_long),
        (_, Err(_)) => return again("last_name", &too_long),
    };
    let new = NewUser {
        email: email.as_str().to_owned(),
        first_name,
        last_name,
        password_hash: Some(state.passwords.hash(pw).await?),
        is_superuser: true,
        now: crate::clock::now(),
    };
    let created = match state
        .store
        .complete_setup(&token_hash, &new, &audit(&ctx, "user_created", "success"))
        .await
    {
        // The address is taken (an SSO login made the account): say so on the form.
        Err(Error::Conflict(message)) => {
            let mut res = again("email", &message)?;
            *res.status_mut() = StatusCode::CONFLICT;
            return Ok(res);
        }
        other => other?,
    };
    let Some(user) = created else {
        return Err(invalid_link());
    };
    let mut row = audit(&ctx, "password_login", "success");
    row.user_id = Some(user.id);
    row.actor_id = Some(user.id);
    row.email = Some(user.email.clone());
    let api_response =
        crate::http::api::session::start_session(&state, &ctx, user.id, "password", row).await?;
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    for v in api_response.headers().get_all(header::SET_COOKIE) {
        res.headers_mut().append(header::SET_COOKIE, v.clone());
    }
    Ok(res)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    chrome: Chrome,
    redirect: String,
    email: String,
    sso_href: Option<String>,
    password_form: bool,
    error: Option<String>,
    /// The `redirect` given could not be used (it was dropped).
    redirect_dropped: bool,
    signed_in_as: Option<String>,
    setup_required: bool,
}

async fn login_page_for(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    redirect: &str,
    email: &str,
    error: Option<String>,
) -> Result<LoginPage> {
    let eff = state.settings.current();
    let sso_href = eff.jwt_configured().then(|| {
        if redirect.is_empty() {
            "/auth/sso".to_owned()
        } else {
            format!(
                "/auth/sso?redirect={}",
                url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
            )
        }
    });
    let signed_in_as = crate::http::ui::signed_in(headers, state)
        .await?
        .map(|c| c.user.display_name());
    Ok(LoginPage {
        chrome: Chrome::public("Sign in"),
        redirect: redirect.to_owned(),
        email: email.to_owned(),
        sso_href,
        password_form: eff.password_login_enabled(),
        error,
        redirect_dropped: false,
        signed_in_as,
        setup_required: !state.store.admin_exists().await?,
    })
}

pub async fn login_page(
    State(state): State<AppState>,
    ctx: RequestContext,
    req: Request,
) -> Result<Response> {
    let mut redirect = query_param(&req, "redirect").unwrap_or_default();
    // A target the sign-in would refuse is said now, and dropped, rather than after the
    // password is typed.
    let dropped =
        !redirect.is_empty() && sign_in_target(&state.settings.current(), &ctx, &redirect).is_err();
    if dropped {
        redirect.clear();
    }
    let mut page = login_page_for(&state, req.headers(), &redirect, "", None).await?;
    page.redirect_dropped = dropped;
    render(&page)
}

/// Where a sign-in with this `redirect` goes (empty: the home page); a target it may not
/// go to is `invalid_redirect`. The sign-in page asks the same as its form's POST.
fn sign_in_target(eff: &Effective, ctx: &RequestContext, redirect: &str) -> Result<url::Url> {
    crate::domain::return_to::parse_return_to(
        Some(redirect).filter(|r| !r.is_empty()),
        &ctx.redirect_base(eff)?,
        eff.strings("redirect-allowed-origins"),
    )
    .map_err(|_| Error::InvalidRedirect)
}

/// `POST /auth/login` from the form: on success a 303 to the (validated) redirect target,
/// else the form again with the error in place.
pub async fn login_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    req: Request,
) -> Result<Response> {
    // Forms come from our own pages: refusing other origins stops login CSRF.
    auth::check_csrf(req.method(), req.headers(), &ctx)?;
    let headers = req.headers().clone();
    let body = read_body(req, &state).await?;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let eff = state.settings.current();
    let redirect = get("redirect");
    let target = sign_in_target(&eff, &ctx, &redirect)?;
    let username = get("username");
    let replaces = auth::cookie_session_key(&headers);
    match crate::http::api::session::password_login(
        &state,
        &ctx,
        &username,
        get("password"),
        replaces,
    )
    .await
    {
        Ok((token, _)) => {
            let cookie = session::session_cookie(&token, &eff, ctx.https);
            Ok((
                StatusCode::SEE_OTHER,
                [
                    (
                        header::LOCATION,
                        crate::domain::return_to::location(Some(redirect.as_str()), &target),
                    ),
                    (header::SET_COOKIE, cookie),
                ],
            )
                .into_response())
        }
        Err(
            e @ (Error::InvalidCredentials
            | Error::PasswordLoginDisabled
            | Error::TooManyAttempts { .. }),
        ) => {
            let page =
                login_page_for(&state, &headers, &redirect, &username, Some(e.to_string())).await?;
            let mut res = render(&page)?;
            *res.status_mut() = e.status();
            if let Error::TooManyAttempts { retry_after_secs } = e {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Ok(res)
        }
        Err(e) => Err(e),
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    name: String,
    email: String,
    groups: Vec<String>,
    attributes: Vec<(String, String)>,
    is_admin: bool,
    via_sso: bool,
}

pub async fn home_page(State(state): State<AppState>, req: Request) -> Result<Response> {
    let Some(current) = crate::http::ui::signed_in(req.headers(), &state).await? else {
        return Ok((StatusCode::FOUND, [(header::LOCATION, "/auth/login")]).into_response());
    };
    let user = &current.user;
    let groups = state.store.user_groups(user.id).await?;
    render(&HomePage {
        chrome: Chrome::public("Home"),
        name: user.display_name(),
        email: user.email.clone(),
        groups: groups.into_iter().map(|g| g.name).collect(),
        attributes: user
            .login_attributes
            .iter()
            .map(|(k, v)| {
                let shown = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), shown)
            })
            .collect(),
        is_admin: user.is_superuser,
        via_sso: current.session.auth_method == "jwt",
    })
}
