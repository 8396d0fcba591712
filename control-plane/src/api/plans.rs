use axum::extract::State;
use axum::Json;

use super::{AppState, List};
use crate::error::ApiError;
use crate::store::Plan;

pub async fn list(State(state): State<AppState>) -> Result<Json<List<Plan>>, ApiError> {
    Ok(Json(List {
        data: state.store.plans().await?,
    }))
}
