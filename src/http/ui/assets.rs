//! The UI's CSS, JS and icon, embedded in the binary. Pages link them under
//! `/assets/<version>/<file>`, where the version is a digest of all of them: those answers
//! are cached for a year (`immutable`); any other address revalidates with an ETag.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::Error;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {
        Asset {
            name: $name,
            content_type: $ct,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/", $name)),
        }
    };
}

static ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("lib.js", "text/javascript; charset=utf-8"),
    asset!("authentication.js", "text/javascript; charset=utf-8"),
    asset!("jwt.js", "text/javascript; charset=utf-8"),
    asset!("people.js", "text/javascript; charset=utf-8"),
    asset!("groups.js", "text/javascript; charset=utf-8"),
];

/// A digest of every asset: changes whenever one of them does.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.name.as_bytes());
        h.update([0]);
        h.update(a.body);
    }
    hex::encode(&h.finalize()[..6])
});

pub fn version() -> &'static str {
    VERSION.as_str()
}

// A path that does not decode (e.g. `%FF`) names no asset: 404, as any other unknown name.
pub async fn versioned(
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    match path {
        Ok(Path((version, file))) => serve(&file, version == self::version(), &headers),
        Err(_) => serve("", false, &headers),
    }
}

pub async fn unversioned(
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    match path {
        Ok(Path(file)) => serve(&file, false, &headers),
        Err(_) => serve("", false, &headers),
    }
}

fn serve(name: &str, immutable: bool, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Error::NotFound("There is no such asset.".into()).into_response();
    };
    let etag = format!("\"{}-{}\"", version(), asset.name);
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    res
}
