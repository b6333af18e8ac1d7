//! `POST /signup` and `POST /login`: adapters of [`service::accounts`].

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse as _, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{token_reply, TokenResponse};
use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::Json,
    service::{self, accounts::SignupOutcome},
    state::AppState,
};

/// `{"email", "password"}`; deliberately without `Debug`, so it cannot be logged.
#[derive(Deserialize, ToSchema)]
pub(super) struct Credentials {
    email: String,
    password: String,
}

/// `{"email", "password", "device_token"?}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct LoginRequest {
    email: String,
    password: String,
    /// The device token a previous login on this device returned, if any. One that is not
    /// valid for this email's account (expired, altered, another user's) counts as none.
    #[serde(default)]
    device_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SignupResponse {
    id: String,
    email: String,
    created_at: String,
}

/// With email verification on: the same for a new and a taken address.
#[derive(Serialize, ToSchema)]
pub(super) struct VerificationSentResponse {
    /// Always `verification_sent`.
    status: &'static str,
    /// The address, normalised, where the mail goes.
    email: String,
}

/// Creates an account. With `AUTH_EMAIL_VERIFICATION=off`: 201, or 409 `email_taken`. With it
/// on: 202 `verification_sent` for a new and a taken email alike (a new account gets a link by
/// mail, the owner of a taken address a note), so that the answer tells nobody which emails
/// have accounts. 422 `invalid_email` / `weak_password` / `password_too_long` either way.
#[utoipa::path(post, path = "/signup", request_body = Credentials, responses(
    (status = 201, description = "account created (verification off)", body = SignupResponse),
    (status = 202, description = "verification on: a link was mailed (new account) or the owner told (taken address), not said which", body = VerificationSentResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 409, description = "email_taken (verification off only)", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 422, description = "invalid_email, weak_password (with reason), password_too_long", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "overloaded (password hashing is saturated) or unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn signup(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<Response> {
    let outcome = service::accounts::signup(&state, &body.email, &body.password).await?;
    Ok(match outcome {
        SignupOutcome::Created(account) => (
            StatusCode::CREATED,
            axum::Json(SignupResponse {
                id: account.id,
                email: account.email,
                created_at: rfc3339(account.created_at)?,
            }),
        )
            .into_response(),
        SignupOutcome::VerificationSent { email } => (
            StatusCode::ACCEPTED,
            axum::Json(VerificationSentResponse {
                status: "verification_sent",
                email,
            }),
        )
            .into_response(),
    })
}

/// Verifies the credentials and opens a session: 200 with tokens and a device token, 401
/// `invalid_credentials` (the same for an unknown email and a wrong password, in about the same
/// time), 403 `account_disabled` (only once the password is right), 429 `rate_limited` while
/// the email is locked after consecutive failures (known or not, right password or not), or,
/// for a login with a valid device token, while that token is locked. For an account with a
/// TOTP second factor a right password answers 401 `mfa_required` with an `mfa_token` (a
/// single-use challenge, five minutes) instead of tokens: `POST /login/mfa` completes it with
/// a code.
#[utoipa::path(post, path = "/login", request_body = LoginRequest, responses(
    (status = 200, description = "a session, and a device token for later logins", body = TokenResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "invalid_credentials; or, the password right and a second factor on, mfa_required with the mfa_token to send to /login/mfa", body = ErrorBody),
    (status = 403, description = "account_disabled", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "overloaded (password hashing is saturated) or unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> Result<Response> {
    let tokens = service::accounts::login(
        &state,
        &body.email,
        &body.password,
        body.device_token.as_deref(),
    )
    .await?;
    Ok(token_reply(tokens))
}

/// A Unix time as RFC 3339 (UTC), as the API answers times.
pub(crate) fn rfc3339(unix: i64) -> Result<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| ApiError::Internal(e.into()))?;
    at.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::Internal(e.into()))
}
