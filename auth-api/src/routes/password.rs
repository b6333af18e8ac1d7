//! `POST /password`: a signed-in user changes their password; an adapter of
//! [`service::accounts::change_password`].

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::{bearer_token, Json},
    service,
    state::AppState,
};

/// `{"current_password", "new_password", "device_token"?}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
    /// This device's token from `/login`: the current-password check then counts against its
    /// lock, not the email's. One not valid for this user counts as none.
    #[serde(default)]
    device_token: Option<String>,
}

/// Changes the password of the access token's user: 204. The current password is asked again
/// (an access token alone, perhaps stolen, must not be enough to take the account over), and
/// wrong answers count towards the same lock as failed logins (the device token's, when one
/// valid for this user is sent). The new password follows the signup policy, and a change
/// clears the email's failed-login streak. By default (`AUTH_PASSWORD_CHANGE_ENDS_OTHER_SESSIONS`) every other session
/// of the user ends, at the gateway too; this one lives on.
#[utoipa::path(post, path = "/password", request_body = ChangePasswordRequest, responses(
    (status = 204, description = "password changed; the other sessions ended (by default)"),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "no access token, or one that is not valid (expired, revoked, …)", body = ErrorBody),
    (status = 403, description = "wrong_password", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 422, description = "weak_password (with reason), password_too_long", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "overloaded (password hashing is saturated) or unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
), security(("bearer" = [])))]
pub(super) async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    service::accounts::change_password(
        &state,
        token,
        &body.current_password,
        &body.new_password,
        body.device_token.as_deref(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
