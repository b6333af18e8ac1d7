//! `GET /validate`: the stateful check of an access token.

use axum::{extract::State, http::HeaderMap};

use crate::{
    error::{ApiError, Result},
    extract::bearer_token,
    state::{AppState, VerifiedToken},
};

/// 200 with the token's claims when its signature, claims, session and user all check out;
/// 401 `invalid_token` otherwise (also after logout, logout-all or disabling, although the
/// signature and `exp` are still fine); 401 without `error` when no bearer token is sent.
#[tracing::instrument(skip_all)]
pub(super) async fn validate(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Map<String, serde_json::Value>>> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    let VerifiedToken { kid, claims, typed } = state.verify_access_token(token).await?;
    let invalid = |why: &str| ApiError::InvalidToken(why.to_owned());
    let status = state
        .store
        .token_status(&typed.sid, &kid)
        .await?
        .ok_or_else(|| invalid("the session does not exist"))?;
    if status.user_id != typed.sub {
        return Err(invalid("the session belongs to another user"));
    }
    if status.key_revoked_at.is_some() {
        return Err(invalid("the signing key has been revoked"));
    }
    if status.revoked_at.is_some() {
        return Err(invalid("the session has been revoked"));
    }
    if status.disabled_at.is_some() {
        return Err(invalid("the account is disabled"));
    }
    if typed.iat < status.tokens_valid_after {
        return Err(invalid("the token predates a revocation of all sessions"));
    }
    Ok(axum::Json(claims))
}
