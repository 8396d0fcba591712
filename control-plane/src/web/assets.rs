//! Static files compiled into the binary. URLs carry a content hash (`?v=`), so they can be
//! cached for a year and still change with each build.

use std::sync::LazyLock;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::PageError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 3] = [
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

/// Short content hash of every asset together, computed once.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    for asset in &ASSETS {
        hasher.update(asset.body);
    }
    hex::encode(&hasher.finalize()[..6])
});

/// `/ui/assets/<name>?v=<hash>`.
pub fn url(name: &str) -> String {
    format!("/ui/assets/{name}?v={}", *VERSION)
}

pub async fn serve(Path(file): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return PageError::NotFound.into_response();
    };
    let cache = if query.is_some_and(|q| q == format!("v={}", *VERSION)) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        asset.body,
    )
        .into_response()
}
