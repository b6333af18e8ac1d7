//! `POST /verify`, `/verify/resend`, `/recover` and `/reset` (issue 15): the links mailed to
//! prove an address and to reset a password; adapters of [`service::email_verification`] and
//! [`service::recovery`]. The hosted pages under `/account/` are the browser's way to the same
//! operations; these are for applications with pages of their own.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    error::{ErrorBody, Result},
    extract::Json,
    service,
    state::AppState,
};

/// `{"token"}`: the token of a mailed link (its `token` query parameter).
#[derive(Deserialize, ToSchema)]
pub(super) struct LinkToken {
    token: String,
}

/// `{"email"}`.
#[derive(Deserialize, ToSchema)]
pub(super) struct EmailRequest {
    email: String,
}

/// `{"token", "password"}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct ResetRequest {
    /// The token of the mailed reset link.
    token: String,
    /// The new password; the signup policy applies.
    password: String,
}

/// `{"email_verified": true}`.
#[derive(Serialize, ToSchema)]
pub(super) struct VerifiedResponse {
    email_verified: bool,
}

/// `{"status": "accepted"}`: the same whether or not the address has an account.
#[derive(Serialize, ToSchema)]
pub(super) struct AcceptedResponse {
    /// Always `accepted`.
    status: &'static str,
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(AcceptedResponse { status: "accepted" }),
    )
        .into_response()
}

/// Proves the address the link was sent to: 200; 400 `invalid_email_token` for a link that is
/// unknown, used, replaced by a newer one or expired. Access tokens issued from now on (at the
/// next refresh) carry `email_verified: true`.
#[utoipa::path(post, path = "/verify", request_body = LinkToken, responses(
    (status = 200, description = "the email is verified", body = VerifiedResponse),
    (status = 400, description = "invalid_email_token, or malformed JSON", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many requests from this address", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn verify(
    State(state): State<AppState>,
    Json(body): Json<LinkToken>,
) -> Result<axum::Json<VerifiedResponse>> {
    service::email_verification::verify_email(&state, &body.token).await?;
    Ok(axum::Json(VerifiedResponse {
        email_verified: true,
    }))
}

/// Mails a new verification link if the address has an account not verified yet: 202 alike
/// whether or not it has (at most five such mails per address and hour; the older links stop
/// working). 422 `invalid_email` only for an address that does not parse.
#[utoipa::path(post, path = "/verify/resend", request_body = EmailRequest, responses(
    (status = 202, description = "accepted: a link is mailed if the address has an unverified account", body = AcceptedResponse),
    (status = 400, description = "malformed JSON", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 422, description = "invalid_email", body = ErrorBody),
    (status = 429, description = "too many requests from this address", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn resend(
    State(state): State<AppState>,
    Json(body): Json<EmailRequest>,
) -> Result<Response> {
    service::email_verification::resend_verification(&state, &body.email).await?;
    Ok(accepted())
}

/// Mails a password-reset link if the address has an account: 202 alike, and as fast, whether
/// or not it has (at most five per address and hour; a newer link voids the older ones). 422
/// `invalid_email` only for an address that does not parse.
#[utoipa::path(post, path = "/recover", request_body = EmailRequest, responses(
    (status = 202, description = "accepted: a link is mailed if the address has an account", body = AcceptedResponse),
    (status = 400, description = "malformed JSON", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 422, description = "invalid_email", body = ErrorBody),
    (status = 429, description = "too many requests from this address", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn recover(
    State(state): State<AppState>,
    Json(body): Json<EmailRequest>,
) -> Result<Response> {
    service::recovery::request_password_reset(&state, &body.email).await?;
    Ok(accepted())
}

/// Sets a new password with the token of a reset link: 204. Every session of the account ends
/// (its access tokens are refused at `/validate` and, through the revocation feed, at the
/// gateway), the email's login lock is cleared and the email counts as verified. 400
/// `invalid_email_token` for a link unknown, used, replaced, expired or voided by a password
/// change; 422 for a password the signup policy refuses (the link still works then).
#[utoipa::path(post, path = "/reset", request_body = ResetRequest, responses(
    (status = 204, description = "the password is set; every session ended"),
    (status = 400, description = "invalid_email_token, or malformed JSON", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 403, description = "account_disabled", body = ErrorBody),
    (status = 422, description = "weak_password (with reason), password_too_long", body = ErrorBody),
    (status = 429, description = "too many requests from this address", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "overloaded or unavailable, with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn reset(
    State(state): State<AppState>,
    Json(body): Json<ResetRequest>,
) -> Result<StatusCode> {
    service::recovery::reset_password(&state, &body.token, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}
