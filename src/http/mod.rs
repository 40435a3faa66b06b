//! The HTTP layer: routers only. Handlers extract, call the domain or the store, and map
//! the result; `context::finish` renders every error.

pub mod api;
pub mod context;
pub mod extract;
pub mod forward_auth;
pub mod health;
pub mod metrics;
pub mod pages;
pub mod sso;
pub mod ui;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, delete, get, post, put};

use crate::app::AppState;
use crate::http::context::RequestContext;
use crate::store::AuditRecord;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/health", get(health::health))
        .route("/api/ready", get(health::ready))
        .route("/api/session/properties", get(api::session::properties))
        .route(
            "/api/session",
            post(api::session::login).delete(api::session::logout),
        )
        .route("/api/setup", post(api::session::setup))
        .route("/api/user/current", get(api::users::current))
        .route("/api/user", get(api::users::list).post(api::users::create))
        .route(
            "/api/user/{id}",
            get(api::users::get_one)
                .put(api::users::update)
                .delete(api::users::deactivate),
        )
        .route("/api/user/{id}/reactivate", put(api::users::reactivate))
        .route("/api/user/{id}/password", put(api::users::set_password))
        .route(
            "/api/user/{id}/sessions",
            delete(api::users::revoke_sessions),
        )
        .route(
            "/api/permissions/group",
            get(api::groups::list).post(api::groups::create),
        )
        .route(
            "/api/permissions/group/{id}",
            get(api::groups::get_one)
                .put(api::groups::rename)
                .delete(api::groups::remove),
        )
        .route("/api/permissions/membership", post(api::groups::add_member))
        .route(
            "/api/permissions/membership/{id}",
            delete(api::groups::remove_member),
        )
        .route(
            "/api/setting",
            get(api::settings::list).put(api::settings::put_many),
        )
        .route(
            "/api/setting/{key}",
            get(api::settings::get_one).put(api::settings::put_one),
        )
        .route("/api/util/random_token", get(api::settings::random_token))
        .route("/api/audit", get(api::audit::list))
        .route("/api/sso/jwt/test", post(sso::dry_run))
        .route("/auth/sso", get(sso::sso_get).post(sso::sso_post))
        .route("/auth/sso/logout", post(sso::backchannel_logout))
        .route("/auth/logout", get(sso::logout))
        .route("/auth/verify", any(forward_auth::verify))
        .route("/metrics", get(metrics::metrics))
        .route("/setup", get(pages::setup_page).post(pages::setup_submit))
        .route(
            "/auth/login",
            get(pages::login_page).post(pages::login_submit),
        )
        .route("/", get(pages::home_page))
        .merge(ui::routes())
        .fallback(fallback);
    api.layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::finish,
        ))
        // Around `finish`, so HTML error pages get the page headers too (CSP, framing).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ui::security_headers,
        ))
        // Outermost, so the latency includes error rendering; `Router::layer` runs after
        // routing, so the route template (MatchedPath) is known.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn fallback() -> crate::error::Error {
    crate::error::Error::NotFound("There is nothing at this address.".into())
}

/// An audit row about this request, to be completed by the caller.
pub fn audit(ctx: &RequestContext, kind: &'static str, outcome: &'static str) -> AuditRecord {
    AuditRecord {
        at: crate::clock::now(),
        kind,
        outcome,
        reason: None,
        actor_id: None,
        user_id: None,
        email: None,
        ip: ctx.ip.clone(),
        request_id: Some(ctx.request_id.clone()),
        details: serde_json::json!({}),
    }
}
