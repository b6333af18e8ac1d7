//! The TOTP second factor (issue 15): `POST /totp/enroll`, `/totp/confirm` and `/totp/disable`
//! for a signed-in user, and `POST /login/mfa`, the second step of a login; adapters of
//! [`service::totp`] and [`service::mfa`].

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{token_reply, TokenResponse};
use crate::{
    error::{ApiError, ErrorBody, Result},
    extract::{bearer_token, Json},
    service::{self, totp::SecondFactor},
    state::AppState,
};

/// `{"password"}`: the account's password, asked again; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct EnrolRequest {
    password: String,
}

/// `{"code"}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct CodeRequest {
    /// A TOTP code (six digits; spaces ignored). For `/totp/disable`, a recovery code is
    /// accepted too.
    code: String,
}

/// `{"mfa_token", "code"}` or `{"mfa_token", "recovery_code"}`; deliberately without `Debug`.
#[derive(Deserialize, ToSchema)]
pub(super) struct MfaLoginRequest {
    /// The challenge of the `mfa_required` answer of `/login`.
    mfa_token: String,
    /// A TOTP code from the authenticator app.
    #[serde(default)]
    code: Option<String>,
    /// One of the recovery codes (hyphens, spaces and case ignored), good once.
    #[serde(default)]
    recovery_code: Option<String>,
}

/// What an enrolment shows, once.
#[derive(Serialize, ToSchema)]
pub(super) struct EnrolmentResponse {
    /// The secret in base32 (32 characters), for typing into an authenticator app.
    secret: String,
    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
    otpauth_uri: String,
    /// The URI as a QR code: one inline `<svg>` element, no external reference.
    qr_svg: String,
}

/// The recovery codes, shown once.
#[derive(Serialize, ToSchema)]
pub(super) struct RecoveryCodesResponse {
    /// Ten single-use codes (`xxxx-xxxx-xxxx-xxxx-xxxx-xxxx`); only their hashes are stored.
    recovery_codes: Vec<String>,
}

/// A JSON body that no cache keeps.
fn no_store(body: impl Serialize) -> Response {
    let mut response = axum::Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Starts a TOTP enrolment for the access token's user: 200 with the secret, its `otpauth://`
/// URI and a QR code of it. A pending enrolment is replaced; it must be confirmed within ten
/// minutes. 409 `totp_already_enabled` once a second factor is on (disable it first).
#[utoipa::path(post, path = "/totp/enroll", request_body = EnrolRequest, responses(
    (status = 200, description = "the new secret, waiting for a first code (ten minutes)", body = EnrolmentResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "no access token, or one that is not valid (expired, revoked, session ended, …)", body = ErrorBody),
    (status = 403, description = "wrong_password (counts on the login lock like a failed login)", body = ErrorBody),
    (status = 409, description = "totp_already_enabled, or totp_unavailable (an account without a password)", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many requests from this address", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
), security(("bearer" = [])))]
pub(super) async fn enroll(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<EnrolRequest>,
) -> Result<Response> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    let started = service::totp::enrol(&state, token, &body.password).await?;
    Ok(no_store(EnrolmentResponse {
        secret: started.secret.expose_secret().to_owned(),
        otpauth_uri: started.otpauth_uri.expose_secret().to_owned(),
        qr_svg: started.qr_svg.expose_secret().to_owned(),
    }))
}

/// Confirms the pending enrolment with a first code: 200 with ten recovery codes, and the
/// second factor is on. A wrong code is 401 `invalid_code` and counts against the email's
/// login lock like a wrong password (429 while it is locked).
#[utoipa::path(post, path = "/totp/confirm", request_body = CodeRequest, responses(
    (status = 200, description = "second factor on; the recovery codes, shown once", body = RecoveryCodesResponse),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "invalid_code, or no valid access token", body = ErrorBody),
    (status = 409, description = "totp_not_pending (none started, or started over ten minutes ago)", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
), security(("bearer" = [])))]
pub(super) async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CodeRequest>,
) -> Result<Response> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    let codes = service::totp::confirm(&state, token, &body.code).await?;
    Ok(no_store(RecoveryCodesResponse {
        recovery_codes: codes
            .iter()
            .map(|code| code.expose_secret().to_owned())
            .collect(),
    }))
}

/// Disables the second factor: 204. Needs a TOTP code or a recovery code (an access token
/// alone must not remove it), counted like a password; 409 `totp_not_enabled` without one.
#[utoipa::path(post, path = "/totp/disable", request_body = CodeRequest, responses(
    (status = 204, description = "second factor off; its secret and recovery codes deleted"),
    (status = 400, description = "malformed JSON or a missing field", body = ErrorBody),
    (status = 401, description = "invalid_code, or no valid access token", body = ErrorBody),
    (status = 409, description = "totp_not_enabled", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
), security(("bearer" = [])))]
pub(super) async fn disable(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<CodeRequest>,
) -> Result<StatusCode> {
    let token = bearer_token(&headers)?.ok_or(ApiError::MissingToken)?;
    service::totp::disable(&state, token, &body.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Completes a login that answered `mfa_required`: the challenge with a TOTP code or a
/// recovery code. 200 with the body of `/login` (the session's tokens say `amr`
/// `["pwd","otp"]`). The challenge is good for five minutes and one session; a wrong code
/// leaves it usable but counts against the login's lock like a wrong password (429 while it
/// is locked). 401 `invalid_mfa_token` for an unknown, expired or used challenge, or one
/// voided by a password change or "logout everywhere" since; 401 `invalid_code` for a wrong,
/// malformed or already used code.
#[utoipa::path(post, path = "/login/mfa", request_body = MfaLoginRequest, responses(
    (status = 200, description = "a session, and a device token for later logins", body = TokenResponse),
    (status = 400, description = "malformed JSON, or not exactly one of code and recovery_code", body = ErrorBody),
    (status = 401, description = "invalid_mfa_token, invalid_code", body = ErrorBody),
    (status = 403, description = "account_disabled", body = ErrorBody),
    (status = 413, description = "body over 64 KiB", body = ErrorBody),
    (status = 415, description = "not application/json", body = ErrorBody),
    (status = 429, description = "too many attempts", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
    (status = 503, description = "unavailable (the store cannot be reached), with Retry-After", body = ErrorBody, headers(("retry-after" = u64, description = "seconds to wait"))),
))]
pub(super) async fn login_mfa(
    State(state): State<AppState>,
    Json(body): Json<MfaLoginRequest>,
) -> Result<Response> {
    let factor = match (&body.code, &body.recovery_code) {
        (Some(code), None) => SecondFactor::Code(code),
        (None, Some(code)) => SecondFactor::RecoveryCode(code),
        _ => {
            return Err(ApiError::InvalidRequest(
                "send exactly one of code and recovery_code".to_owned(),
            ))
        }
    };
    let tokens = service::mfa::complete(&state, &body.mfa_token, factor).await?;
    Ok(token_reply(tokens))
}
