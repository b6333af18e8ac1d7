//! `POST /password`: a signed-in user changes their password.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
};
use serde::Deserialize;
use utoipa::ToSchema;

use super::accounts::{count_password_failure, refuse_while_locked};
use crate::{
    domain::{Email, Password},
    error::{ApiError, ErrorBody, Result},
    extract::{bearer_token, Json},
    state::AppState,
    store::PasswordChange,
};

/// `{"current_password", "new_password"}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct ChangePasswordRequest {
    current_password: String,
    new_password: String,
}

/// Changes the password of the access token's user: 204. The current password is asked again
/// (an access token alone, perhaps stolen, must not be enough to take the account over), and
/// wrong answers count towards the same lock as failed logins. The new password follows the
/// signup policy. By default (`AUTH_PASSWORD_CHANGE_ENDS_OTHER_SESSIONS`) every other session
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
    (status = 503, description = "password hashing is saturated", body = ErrorBody),
), security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(user_id))]
pub(super) async fn change_password(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    let verified = state.verify_access_token(token).await?;
    state.check_session(&verified).await?;
    let claims = &verified.typed;
    tracing::Span::current().record("user_id", claims.sub.as_str());
    let user = state
        .store
        .user_by_id(&claims.sub)
        .await?
        .ok_or_else(|| ApiError::InvalidToken("the user no longer exists".to_owned()))?;
    let now = state.clock.now();
    refuse_while_locked(&state, &user.email, now).await?;
    let current_is_right = match Password::for_login(&body.current_password) {
        Some(current) => {
            state
                .hasher
                .verify(&current, Some(&user.password_hash))
                .await?
        }
        None => false,
    };
    if !current_is_right {
        count_password_failure(&state, &user.email, now).await?;
        return Err(ApiError::WrongPassword);
    }
    state.store.clear_login_failures(&user.email).await?;
    let email = Email::parse(&user.email).map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    let new_password =
        Password::for_signup(&body.new_password, &email, state.config.password_min_chars)?;
    let password_hash = state.hasher.hash(&new_password).await?;
    let end_others = state
        .config
        .password_change_ends_other_sessions
        .then(|| state.revoke_at());
    let outcome = state
        .store
        .change_password(
            &user.id,
            &user.password_hash,
            &password_hash,
            &claims.sid,
            end_others,
        )
        .await?;
    match outcome {
        PasswordChange::Changed {
            other_sessions_ended,
        } => {
            tracing::info!(
                event = "password_changed",
                other_sessions_ended,
                "password changed"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        // Another change came first: the current password given is no longer the password.
        PasswordChange::Conflict => Err(ApiError::WrongPassword),
        PasswordChange::SessionEnded => {
            Err(ApiError::InvalidToken("the session has ended".to_owned()))
        }
    }
}
