//! Key material: the public JWKS, and the verification keys for the gateway on the internal
//! listener.

use auth_jwt::{Jwk, JwkSet};
use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::{
    error::{ApiError, Result},
    extract::bearer_token,
    state::AppState,
};

/// `GET /.well-known/jwks.json`: public keys only, so empty while the ring holds HMAC keys
/// (an `oct` key is a secret and never appears here).
pub(super) async fn public_jwks(State(state): State<AppState>) -> Response {
    let max_age = state.config.jwks_max_age.as_secs();
    let mut response = axum::Json(JwkSet { keys: Vec::new() }).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

/// `GET /internal/keys`: every published key (pending, active, retired) as a JWK Set with
/// `kty: "oct"`, for the gateway filter.
pub(super) async fn internal_keys(State(state): State<AppState>) -> axum::Json<JwkSet> {
    let now = state.clock.now();
    let snapshot = state.ring.snapshot();
    let keys = snapshot
        .published(now, state.ring.policy())
        .map(|k| Jwk::from_key(&k.key))
        .collect();
    axum::Json(JwkSet { keys })
}

/// Lets a request through only with `Authorization: Bearer <AUTH_INTERNAL_TOKEN>`, compared in
/// constant time.
pub(super) async fn require_internal_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Result<Response> {
    let expected = state
        .config
        .internal_token
        .as_ref()
        .ok_or_else(|| ApiError::NotReady("AUTH_INTERNAL_TOKEN is not set".to_owned()))?;
    let presented = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    if bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    ) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::InvalidToken("wrong internal token".to_owned()))
    }
}
