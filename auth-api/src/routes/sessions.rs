//! `POST /refresh` and `POST /logout`: adapters of [`service::sessions`].

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{token_reply, TokenResponse};
use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::{bearer_token, Json, OptionalJson},
    service::{self, LogoutCredential, LogoutScope},
    state::AppState,
};

/// `{"refresh_token"}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct RefreshRequest {
    refresh_token: String,
}

/// `{"refresh_token"?, "all"?}`, or nothing when a bearer token is sent. `"all": true` is
/// `?scope=all`.
#[derive(Default, Deserialize, ToSchema)]
pub(super) struct LogoutRequest {
    refresh_token: Option<String>,
    #[serde(default)]
    all: bool,
}

/// `?scope=local|all|others`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LogoutQuery {
    /// `local` (default): this session; `all` (or `global`): every session of the user;
    /// `others`: every session but this one.
    scope: Option<LogoutScope>,
}

/// The scope asked for by the query and the body, which must agree.
fn logout_scope(
    query: Result<Query<LogoutQuery>, QueryRejection>,
    body: &LogoutRequest,
) -> Result<LogoutScope> {
    let Query(query) = query.map_err(|_| {
        ApiError::InvalidRequest("scope must be one of local, all, others".to_owned())
    })?;
    match (query.scope, body.all) {
        (None, all) => Ok(if all {
            LogoutScope::All
        } else {
            LogoutScope::Local
        }),
        (Some(scope), false) | (Some(scope @ LogoutScope::All), true) => Ok(scope),
        (Some(_), true) => Err(ApiError::InvalidRequest(
            "\"all\": true contradicts the scope asked for".to_owned(),
        )),
    }
}

/// Rotates a refresh token: 200 with a new pair, 401 `invalid_grant`, or 503 `unavailable`.
///
/// The live token rotates to its successor (one conditional update: of concurrent rotations
/// one wins, the others see the new generation and answer with the same successor). Its
/// immediate predecessor, inside `AUTH_REFRESH_REUSE_GRACE_SECS`, answers with the live token
/// again; any other reuse revokes the session.
#[utoipa::path(post, path = "/refresh", request_body = RefreshRequest, responses(
    (status = 200, description = "a new pair, with a new refresh token", body = TokenResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "invalid_grant", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "unavailable: the store cannot be reached", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Response> {
    let tokens = service::sessions::refresh(&state, &body.refresh_token).await?;
    Ok(token_reply(tokens))
}

/// Ends the session of a refresh token or of a bearer access token; with `?scope=all` (or
/// `"all": true`) every session of the user, with `?scope=others` every other one. 204, also
/// for tokens already revoked or unknown (RFC 7009 §2.2); 400 with neither token or an
/// unknown scope; 401 for a bearer token that does not verify; 503 `unavailable` when the
/// store cannot be reached (never a 204 for sessions that did not end).
#[utoipa::path(post, path = "/logout", params(LogoutQuery), request_body(content = Option<LogoutRequest>, description = "empty when a bearer token is sent"), responses(
    (status = 204, description = "logged out (also for unknown or already revoked tokens)"),
    (status = 400, description = "neither a refresh token nor a bearer token, an unknown scope, or malformed JSON", body = ErrorBody),
    (status = 401, description = "a bearer token that does not verify", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 503, description = "unavailable: the store cannot be reached", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
), security((), ("bearer" = [])))]
pub(super) async fn logout(
    State(state): State<AppState>,
    query: Result<Query<LogoutQuery>, QueryRejection>,
    headers: HeaderMap,
    OptionalJson(request): OptionalJson<LogoutRequest>,
) -> Result<StatusCode> {
    let scope = logout_scope(query, &request)?;
    let credential = match (bearer_token(&headers)?, &request.refresh_token) {
        (Some(access_token), _) => LogoutCredential::AccessToken(access_token),
        (None, Some(refresh_token)) => LogoutCredential::RefreshToken(refresh_token),
        (None, None) => {
            return Err(ApiError::InvalidRequest(
                "send {\"refresh_token\"} or an Authorization: Bearer access token".to_owned(),
            ))
        }
    };
    service::sessions::logout(&state, credential, scope).await?;
    Ok(StatusCode::NO_CONTENT)
}
