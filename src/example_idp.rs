//! `latchkey example-idp`: a small identity provider for trying the flow on one machine.
//! Its form takes any email, names and groups, signs an HS256 token with the shared secret
//! and sends the browser back to `<site>/auth/sso?jwt=…&return_to=…`, as a Metabase
//! identity provider does.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::http::pages::{escape, layout};

#[derive(Clone)]
struct Idp {
    secret: String,
    site: String,
}

pub fn router(secret: &str, site: &str) -> Router {
    let idp = Idp {
        secret: secret.to_owned(),
        site: site.trim_end_matches('/').to_owned(),
    };
    Router::new()
        .route("/", get(form))
        .route("/login", get(form).post(submit))
        .with_state(idp)
}

pub async fn run(secret: &str, site: &str, listen: &str) -> anyhow::Result<()> {
    if secret.chars().count() < crate::sso::verify::MIN_SECRET_BYTES {
        anyhow::bail!(
            "the secret must have at least 32 characters (the server's jwt-shared-secret)"
        );
    }
    // Parsed and written back, so that the Location it sends is a valid URL.
    let site = match url::Url::parse(site) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none() =>
        {
            u.to_string()
        }
        _ => anyhow::bail!(
            "--site must be the Latchkey server's http(s) address, such as http://localhost:3000"
        ),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(
        "example identity provider listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router(secret, &site)).await?;
    Ok(())
}

fn return_to_of(req: &Request) -> String {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "return_to")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

async fn form(req: Request) -> Html<String> {
    let return_to = return_to_of(&req);
    Html(layout(
        "Example identity provider",
        &format!(
            "<h1>Example identity provider</h1><p>Sign in as anyone: this stands in for your organisation's login.</p>\
             <form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"return_to\" value=\"{}\">\
             <label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" required>\
             <label for=\"first_name\">First name</label><input id=\"first_name\" name=\"first_name\">\
             <label for=\"last_name\">Last name</label><input id=\"last_name\" name=\"last_name\">\
             <label for=\"groups\">Groups (comma-separated)</label><input id=\"groups\" name=\"groups\">\
             <button type=\"submit\">Sign in</button></form>",
            escape(&return_to)
        ),
    ))
}

async fn submit(State(idp): State<Idp>, req: Request) -> Response {
    let Ok(body) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
    };
    let form: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let Some(email) = field("email") else {
        return (
            StatusCode::BAD_REQUEST,
            Html(layout(
                "Error",
                "<p>Enter an email address. <a href=\"/\">Back</a></p>",
            )),
        )
            .into_response();
    };
    let now = crate::clock::now();
    let mut claims = match crate::commands::token_claims(
        &crate::commands::TokenShape::default(),
        &email,
        field("groups").as_deref(),
        &[],
        now,
    ) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    for k in ["first_name", "last_name"] {
        if let Some(v) = field(k) {
            claims.insert(k.into(), json!(v));
        }
    }
    let token = match crate::sso::verify::sign_hmac("HS256", &claims, idp.secret.as_bytes()) {
        Ok(t) => t,
        Err(r) => return (StatusCode::INTERNAL_SERVER_ERROR, r.code()).into_response(),
    };
    let mut location = format!("{}/auth/sso?jwt={token}", idp.site);
    if let Some(rt) = field("return_to") {
        location.push_str("&return_to=");
        location.extend(url::form_urlencoded::byte_serialize(rt.as_bytes()));
    }
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}
