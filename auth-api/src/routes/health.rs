//! Liveness, readiness and metrics.

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

use crate::{
    error::{ApiError, Result},
    state::AppState,
};

/// `GET /healthz`: the process answers; touches nothing else.
pub(super) async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the store answers and a key can sign; 503 otherwise.
pub(super) async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Value>> {
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return Err(ApiError::NotReady("the database is unreachable".to_owned()));
    }
    if state.ring.signer(state.clock.now()).is_none() {
        return Err(ApiError::NotReady("no signing key is active".to_owned()));
    }
    Ok(axum::Json(json!({"status": "ready"})))
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .hash_waiting
        .set(i64::try_from(state.hasher.waiting()).unwrap_or(i64::MAX));
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
