//! `POST /v1/filter/leases`: the filter's budget leases (`docs/protocol.md`, "Filter → control
//! plane: budget leases"): settlements, then grants.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::{AppState, JsonBody};
use crate::app::leases::{self, LeaseBody};
use crate::domain::Grant;
use crate::error::ApiError;

/// The largest request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct LeaseView {
    now_ms: i64,
    settled: u64,
    grants: Vec<Grant>,
}

pub async fn lease(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LeaseBody>,
) -> Result<Json<LeaseView>, ApiError> {
    let (now_ms, answer) = leases::lease(&state, body).await?;
    Ok(Json(LeaseView {
        now_ms,
        settled: answer.settled,
        grants: answer.grants,
    }))
}
