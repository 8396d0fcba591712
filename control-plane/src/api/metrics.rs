//! `GET /metrics`: the control plane's metrics in Prometheus' text exposition format. No token,
//! as Prometheus scrapes are usually configured; `tollgate serve --metrics-listen` moves it to
//! an address of its own (README.md, "Metrics").

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::AppState;

/// The content type of the text exposition format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT_FORMAT)], state.metrics().render())
}
