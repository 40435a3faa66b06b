//! The HTTP layer: routers only. Handlers extract, call the domain or the store, and map
//! the result; `context::finish` renders every error.

pub mod api;
pub mod context;
pub mod extract;
pub mod forward_auth;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod server;
pub mod sso;
pub mod ui;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::Redirect;

use crate::app::AppState;
use crate::http::context::RequestContext;
use crate::http::ui::{admin, assets, directory};
use crate::store::AuditRecord;

/// What a route serves. `Api` routes are in the OpenAPI document with the same method and
/// path (the tests in `openapi` check both ways); `Page` routes (HTML pages, assets, Swagger
/// UI) are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Api,
    Page,
}

/// One row of the route table. `method` is an `axum::routing` function name: `get`,
/// `post`, `put`, `delete`, or `any`.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub kind: RouteKind,
    pub method: &'static str,
    pub path: &'static str,
}

/// Declares the route table once: `ROUTES` (the rows, for the tests and tools) and
/// `table_routes()` (the router built from those rows and nothing else).
macro_rules! route_table {
    ($( $kind:ident $method:ident $path:literal => $handler:expr; )*) => {
        /// Every route of the server, in the order they are declared.
        pub const ROUTES: &[Route] = &[
            $( Route { kind: RouteKind::$kind, method: stringify!($method), path: $path }, )*
        ];

        fn table_routes() -> Router<AppState> {
            Router::new() $( .route($path, axum::routing::$method($handler)) )*
        }
    };
}

route_table! {
    Api get "/api/health" => health::health;
    Api get "/api/ready" => health::ready;
    Api get "/api/openapi.json" => openapi::document;
    Api get "/api/session/properties" => api::session::properties;
    Api post "/api/session" => api::session::login;
    Api delete "/api/session" => api::session::logout;
    Api post "/api/setup" => api::session::setup;
    Api get "/api/user/current" => api::users::current;
    Api get "/api/user" => api::users::list;
    Api post "/api/user" => api::users::create;
    Api get "/api/user/{id}" => api::users::get_one;
    Api put "/api/user/{id}" => api::users::update;
    Api delete "/api/user/{id}" => api::users::deactivate;
    Api put "/api/user/{id}/reactivate" => api::users::reactivate;
    Api put "/api/user/{id}/password" => api::users::set_password;
    Api delete "/api/user/{id}/sessions" => api::users::revoke_sessions;
    Api get "/api/permissions/group" => api::groups::list;
    Api post "/api/permissions/group" => api::groups::create;
    Api get "/api/permissions/group/{id}" => api::groups::get_one;
    Api put "/api/permissions/group/{id}" => api::groups::rename;
    Api delete "/api/permissions/group/{id}" => api::groups::remove;
    Api post "/api/permissions/membership" => api::groups::add_member;
    Api delete "/api/permissions/membership/{id}" => api::groups::remove_member;
    Api get "/api/setting" => api::settings::list;
    Api put "/api/setting" => api::settings::put_many;
    Api get "/api/setting/{key}" => api::settings::get_one;
    Api put "/api/setting/{key}" => api::settings::put_one;
    Api get "/api/util/random_token" => api::settings::random_token;
    Api get "/api/audit" => api::audit::list;
    Api post "/api/sso/jwt/test" => sso::dry_run;
    Api get "/auth/sso" => sso::sso_get;
    Api post "/auth/sso" => sso::sso_post;
    Api post "/auth/sso/logout" => sso::backchannel_logout;
    Api get "/auth/logout" => sso::logout;
    Api any "/auth/verify" => forward_auth::verify;
    Api get "/metrics" => metrics::metrics;
    Page get "/api/docs" => openapi::docs_redirect;
    Page get "/api/docs/" => openapi::docs_index;
    Page get "/api/docs/{*file}" => openapi::docs_file;
    Page get "/setup" => pages::setup_page;
    Page post "/setup" => pages::setup_submit;
    Page get "/auth/login" => pages::login_page;
    Page post "/auth/login" => pages::login_submit;
    Page get "/" => pages::home_page;
    Page get "/assets/{version}/{file}" => assets::versioned;
    Page get "/assets/{file}" => assets::unversioned;
    Page get "/admin" => || async { Redirect::to("/admin/settings/authentication") };
    Page get "/admin/settings/authentication" => admin::methods_page;
    Page get "/admin/settings/authentication/jwt" => admin::jwt_page;
    Page get "/admin/people" => directory::people_page;
    Page get "/admin/people/groups" => directory::groups_page;
    Page get "/admin/people/groups/{id}" => directory::group_page;
    Page get "/admin/audit" => directory::audit_page;
}

/// The routes without state or middleware: the route table and the fallback.
pub fn routes() -> Router<AppState> {
    table_routes().fallback(fallback)
}

pub fn router(state: AppState) -> Router {
    // `Router::layer` runs after routing, so `finish` knows the route template (MatchedPath)
    // it counts the request under. The two layers go in as one (`finish` outside the body
    // limit): each `Router::layer` wraps every route in a boxed service of its own, which a
    // request then clones and whose future it boxes.
    let layers = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::finish,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES));
    routes().layer(layers).with_state(state)
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
