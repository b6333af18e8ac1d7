//! `GET /.well-known/jwks.json`: the public key set.

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};

use auth_jwt::JwkSet;

use crate::{routes::openapi::JwksDoc, state::AppState};

/// `GET /.well-known/jwks.json`: public keys only, so empty while the ring holds HMAC keys
/// (an `oct` key is a secret and never appears here).
#[utoipa::path(get, path = "/.well-known/jwks.json", responses(
    (status = 200, description = "public keys only (none while the ring holds HMAC keys)", body = JwksDoc),
))]
pub(super) async fn public_jwks(State(state): State<AppState>) -> Response {
    let max_age = state.config.jwks_max_age.as_secs();
    let mut response = axum::Json(JwkSet { keys: Vec::new() }).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}
