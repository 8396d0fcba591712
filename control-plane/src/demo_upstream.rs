//! `tollgate demo-upstream`: answers every request with what reached it, so tests and demos can
//! see which headers the filter added, removed or passed through.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;

use axum::http::{HeaderMap, Method, Uri};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::server::tune_connection;

pub fn router() -> Router {
    Router::new().fallback(echo)
}

pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "demo upstream listening");
    axum::serve(listener.tap_io(tune_connection), router())
        .with_graceful_shutdown(shutdown)
        .await
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap) -> Json<Value> {
    // Header names are already lower-case in `HeaderMap`; repeated headers are joined as HTTP
    // allows (`a, b`). A BTreeMap keeps the output stable.
    let mut joined: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        joined
            .entry(name.as_str())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": joined,
    }))
}
