//! `GET /validate`: the stateful check of an access token; an adapter of
//! [`service::access::validate`].

use axum::{extract::State, http::HeaderMap};

use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::bearer_token,
    service,
    state::AppState,
    tokens::AccessClaims,
};

/// 200 with the token's claims when its signature, claims, session and user all check out;
/// 401 `invalid_token` otherwise (also after logout, logout-all or disabling, although the
/// signature and `exp` are still fine); 401 without `error` when no bearer token is sent; 503
/// `unavailable` when the store cannot be reached.
#[utoipa::path(get, path = "/validate", responses(
    (status = 200, description = "the token's claims", body = AccessClaims),
    (status = 401, description = "no bearer token (bare challenge), or invalid_token", body = ErrorBody),
    (status = 503, description = "unavailable: the store cannot be reached", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
), security(("bearer" = [])))]
pub(super) async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Map<String, serde_json::Value>>> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    let verified = service::access::validate(&state, token).await?;
    Ok(axum::Json(verified.claims))
}
