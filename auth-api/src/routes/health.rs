//! Liveness, readiness and metrics.

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorBody, Result},
    state::AppState,
};

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StatusDoc {
    /// `ok` or `ready`.
    pub(super) status: String,
}

/// `GET /healthz`: the process answers; touches nothing else.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive", body = StatusDoc)))]
pub(super) async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the store answers and a key can sign; 503 otherwise.
#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "ready", body = StatusDoc),
    (status = 503, description = "not_ready", body = ErrorBody),
))]
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
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text", content_type = "application/openmetrics-text", body = String),
))]
pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.collect(&state).await;
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
