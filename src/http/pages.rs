//! Server-rendered pages: first-run setup, sign-in, home, and the HTML error page.
//! Forms post same-origin and work without JavaScript.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::app::AppState;
use crate::auth::{self, password, session};
use crate::domain::email::Email;
use crate::error::{Error, Result};
use crate::http::audit;
use crate::http::context::{ErrorPayload, RequestContext};
use crate::http::extract::read_body;
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
.error{background:#fde8e8;border:1px solid #f5b5b5;padding:.75rem;border-radius:4px}.muted{color:#616e7c;font-size:.875rem}\
dl{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem}dt{font-weight:600}";

pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Latchkey</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        escape(title)
    )
}

fn page(title: &str, body: &str) -> Response {
    let mut res = Html(layout(title, body)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The HTML error page for browsers: the sentence, what to do, a way back, the request id.
pub fn error_page(status: StatusCode, p: &ErrorPayload, request_id: &str) -> String {
    layout(
        "Sign-in problem",
        &format!(
            "<h1>{}</h1><p class=\"error\" role=\"alert\">{}</p><p><a class=\"button\" href=\"/auth/login\">Try again</a></p>\
             <p class=\"muted\">Error code <code>{}</code> · request id <code>{}</code>. Give both to your administrator if this keeps happening.</p>",
            escape(status.canonical_reason().unwrap_or("Error")),
            escape(&p.message),
            escape(p.code),
            escape(request_id)
        ),
    )
}

fn query_param(req: &Request, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn setup_form(token: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    format!(
        "<h1>Welcome to Latchkey</h1><p>Create the first administrator account. This page works once: after this, the setup link stops working.</p>{error}\
         <form method=\"post\" action=\"/setup\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
         <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required>\
         <label for=\"first_name\">First name</label><input id=\"first_name\" name=\"first_name\" autocomplete=\"given-name\">\
         <label for=\"last_name\">Last name</label><input id=\"last_name\" name=\"last_name\" autocomplete=\"family-name\">\
         <label for=\"password\">Password (at least 8 characters)</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" minlength=\"8\" required>\
         <button type=\"submit\">Create administrator</button></form>",
        escape(token)
    )
}

pub async fn setup_page(State(state): State<AppState>, req: Request) -> Result<Response> {
    if state.store.admin_exists().await? {
        return Ok(page(
            "Setup",
            "<h1>Setup is done</h1><p>An administrator exists already.</p><p><a class=\"button\" href=\"/auth/login\">Sign in</a></p>",
        ));
    }
    let token = query_param(&req, "token").unwrap_or_default();
    Ok(page("Setup", &setup_form(&token, None)))
}

/// `POST /setup` from the setup form.
pub async fn setup_submit(
    State(state): State<AppState>,
    ctx: RequestContext,
    req: Request,
) -> Result<Response> {
    let body = read_body(req, &state).await?;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let token = get("token");
    let Ok(email) = Email::parse(get("email").trim()) else {
        return Ok(page(
            "Setup",
            &setup_form(&token, Some("Enter a valid email address.")),
        ));
    };
    let pw = get("password");
    if password::check_new_password(&pw).is_err() {
        return Ok(page(
            "Setup",
            &setup_form(
                &token,
                Some("The password must have at least 8 characters."),
            ),
        ));
    }
    let new = NewUser {
        email: email.as_str().to_owned(),
        first_name: crate::http::api::session::clean_name(form.get("first_name").cloned()),
        last_name: crate::http::api::session::clean_name(form.get("last_name").cloned()),
        password_hash: Some(state.passwords.hash(pw).await?),
        is_superuser: true,
        now: crate::clock::now(),
    };
    let created = state
        .store
        .complete_setup(
            &session::hash_token(&token),
            &new,
            &audit(&ctx, "user_created", "success"),
        )
        .await?;
    let Some(user) = created else {
        return Err(Error::Forbidden(
            "The setup link is not valid, or setup is already done.".into(),
        ));
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

fn login_body(eff: &crate::settings::Effective, redirect: &str, error: Option<&str>) -> String {
    let mut body = String::from("<h1>Sign in</h1>");
    if let Some(e) = error {
        body.push_str(&format!(
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(e)
        ));
    }
    if eff.jwt_configured() {
        let href = if redirect.is_empty() {
            "/auth/sso".to_owned()
        } else {
            format!(
                "/auth/sso?redirect={}",
                url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
            )
        };
        body.push_str(&format!(
            "<p><a class=\"button\" id=\"sso\" href=\"{}\">Sign in with SSO</a></p>",
            escape(&href)
        ));
    }
    if eff.password_login_enabled() {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/auth/login\"><input type=\"hidden\" name=\"redirect\" value=\"{}\">\
             <label for=\"username\">Email</label><input id=\"username\" name=\"username\" type=\"email\" autocomplete=\"username\" required>\
             <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            escape(redirect)
        ));
    }
    body
}

pub async fn login_page(State(state): State<AppState>, req: Request) -> Result<Response> {
    let eff = state.settings.current();
    let redirect = query_param(&req, "redirect").unwrap_or_default();
    Ok(page("Sign in", &login_body(&eff, &redirect, None)))
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
    let body = read_body(req, &state).await?;
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let eff = state.settings.current();
    let redirect = get("redirect");
    let base = match &eff.site_url {
        Some(u) => u.clone(),
        None => url::Url::parse(&ctx.own_base).map_err(|_| Error::InvalidRedirect)?,
    };
    let target = crate::domain::return_to::parse_return_to(
        Some(redirect.as_str()).filter(|r| !r.is_empty()),
        &base,
        &eff.strings("redirect-allowed-origins"),
    )
    .map_err(|_| Error::InvalidRedirect)?;
    match crate::http::api::session::password_login(&state, &ctx, &get("username"), get("password"))
        .await
    {
        Ok((token, _)) => {
            let cookie = session::session_cookie(&token, &eff, ctx.https);
            Ok((
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, target.to_string()),
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
            let mut res = page(
                "Sign in",
                &login_body(&eff, &redirect, Some(&e.to_string())),
            );
            *res.status_mut() = e.status();
            Ok(res)
        }
        Err(e) => Err(e),
    }
}

pub async fn home_page(State(state): State<AppState>, req: Request) -> Result<Response> {
    let user = match auth::request_token(req.headers()) {
        Some((token, _)) => auth::live_session(&state, &token).await?,
        None => None,
    };
    let Some((_, user)) = user else {
        return Ok((StatusCode::FOUND, [(header::LOCATION, "/auth/login")]).into_response());
    };
    let groups = state.store.user_groups(user.id).await?;
    let groups = groups
        .iter()
        .map(|g| escape(&g.name))
        .collect::<Vec<_>>()
        .join(", ");
    let attrs = if user.login_attributes.is_empty() {
        "none".to_owned()
    } else {
        escape(&serde_json::Value::Object(user.login_attributes.clone()).to_string())
    };
    Ok(page(
        "Home",
        &format!(
            "<h1>Signed in as {}</h1><dl><dt>Email</dt><dd>{}</dd><dt>Groups</dt><dd>{}</dd><dt>Attributes</dt><dd><code>{}</code></dd></dl>\
             <p><a class=\"button\" href=\"/auth/logout\">Sign out</a></p>",
            escape(&user.display_name()),
            escape(&user.email),
            groups,
            attrs
        ),
    ))
}
