//! The one error type of the HTTP API and how it becomes a response.
//!
//! Every error, from any route, is JSON `{"error": "<code>", "message": "<text>"}` (plus
//! `reason` where a client can act on it) with its status. Server faults become a bare 500 whose
//! detail stays in the logs: [`ApiError::into_response`] puts it in a response extension and the
//! `observe` middleware in `routes` writes it, once. An unreachable store (or Redis) is no
//! fault of ours to hide behind a 500: it is `503 unavailable` with `Retry-After`, logged alike.

use std::sync::Arc;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

pub use crate::domain::WeakPasswordReason;
use crate::{domain::PasswordRejected, service};

/// The realm named in every `WWW-Authenticate` challenge.
pub const REALM: &str = "auth-service";

/// The `Retry-After` of `503 unavailable`, in seconds: about the store's pool acquire timeout.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// `Result` with [`ApiError`] as the default error.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_request`: malformed JSON, a missing field, a malformed header.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `unsupported_grant_type`: `/token` without `grant_type=pkce` (RFC 6749 §5.2).
    #[error("grant_type must be pkce")]
    UnsupportedGrantType,
    /// 401 with a bare `Bearer realm` challenge: no credentials were presented.
    #[error("authentication required")]
    MissingToken,
    /// 401 `invalid_token`: the access token is not acceptable (RFC 6750 §3.1).
    #[error("{0}")]
    InvalidToken(String),
    /// 401 `invalid_credentials`: unknown email or wrong password, on purpose not told apart.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// 401 `invalid_grant`: the refresh token is unknown, expired, revoked or reused.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// 401 `mfa_required`, with the `mfa_token` to complete the login at `/login/mfa`: the
    /// password is right and the account has a second factor.
    #[error("a second factor is required")]
    MfaRequired {
        /// The single-use challenge.
        mfa_token: secrecy::SecretString,
    },
    /// 401 `invalid_mfa_token`: the challenge of `/login/mfa` is unknown, expired, used or
    /// voided by a credential change; log in again.
    #[error("the mfa_token is invalid, expired or used; log in again")]
    InvalidMfaToken,
    /// 401 `invalid_code`: a TOTP or recovery code is wrong, malformed or already used.
    #[error("the code is wrong or already used")]
    InvalidCode,
    /// 409 `totp_already_enabled`: disable the second factor (with a code) before enrolling
    /// again.
    #[error("a second factor is already enabled; disable it first")]
    TotpAlreadyEnabled,
    /// 409 `totp_not_pending`: no enrolment waits for a first code (none, or older than ten
    /// minutes).
    #[error("no TOTP enrolment waits for confirmation; start again")]
    TotpNotPending,
    /// 409 `totp_not_enabled`: the user has no second factor to disable.
    #[error("no second factor is enabled")]
    TotpNotEnabled,
    /// 409 `totp_unavailable`: an account without a password (made by an external sign-in)
    /// cannot add a second factor that no login would ask for.
    #[error("an account without a password cannot add a second factor here")]
    TotpUnavailable,
    /// 403 `wrong_password`: a signed-in user's current password, asked again before a
    /// password change, is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// 400 `invalid_email_token`: the token of a verification or reset link is unknown, used,
    /// replaced by a newer one, expired, or voided by a password change.
    #[error("this link is invalid, used or expired; ask for a new one")]
    InvalidEmailToken,
    /// 403 `account_disabled`: only ever sent after the password was verified.
    #[error("this account is disabled")]
    AccountDisabled,
    /// 404 `not_found`.
    #[error("no such route")]
    NotFound,
    /// 404 `user_not_found`: the Admin API names a user that does not exist.
    #[error("no user with this id")]
    UserNotFound,
    /// 404 `session_not_found`: the Admin API names a session that does not exist.
    #[error("no session with this id")]
    SessionNotFound,
    /// 404 `key_not_found`: the Admin API names a signing key that does not exist.
    #[error("no signing key with this kid")]
    KeyNotFound,
    /// 422 `invalid_role`: a role name that is not 1-64 letters, digits, `_ - . :`.
    #[error("{0}")]
    InvalidRole(String),
    /// 422 `unsupported_alg`: a key algorithm other than ES256, EdDSA, RS256 or HS256.
    #[error("{0}")]
    UnsupportedAlgorithm(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409 `email_taken`.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// 408 `request_timeout`: the request was not answered within `AUTH_REQUEST_TIMEOUT_SECS`
    /// (a body too slow to arrive, a backing service too slow to answer); its work is dropped.
    #[error("the request took too long")]
    RequestTimeout,
    /// 413 `payload_too_large`.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// 415 `unsupported_media_type`.
    #[error("expected a body of content-type application/json")]
    UnsupportedMediaType,
    /// 422 `invalid_email`.
    #[error("{0}")]
    InvalidEmail(String),
    /// 422 `weak_password`, with a machine-readable `reason`.
    #[error("{message}")]
    WeakPassword {
        /// The rule that failed.
        reason: WeakPasswordReason,
        /// What to do about it.
        message: String,
    },
    /// 422 `password_too_long`.
    #[error("the password is longer than {max_bytes} bytes")]
    PasswordTooLong {
        /// The limit, in bytes of UTF-8.
        max_bytes: usize,
    },
    /// 429 `rate_limited` with `Retry-After`: too many attempts (per email or per address).
    #[error("too many attempts, retry later")]
    RateLimited {
        /// Seconds until a new attempt may be made.
        retry_after_secs: u64,
    },
    /// 503 `overloaded` with `Retry-After`: too many password hashes are already waiting.
    #[error("the service is busy, retry shortly")]
    Overloaded,
    /// 503 `not_ready`: the store or the key ring is not available.
    #[error("{0}")]
    NotReady(String),
    /// 503 `unavailable` with `Retry-After`: the store (or Redis) cannot be reached right now
    /// (see [`service::is_unavailable`]); its detail is logged, never sent.
    #[error("a backing service is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// 500 `internal`: a database fault; its detail is logged, never sent.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// 500 `internal`: any other fault; its detail is logged, never sent.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    /// 503 `unavailable` for an unreachable store, else 500: classified once, by the service.
    fn from(err: sqlx::Error) -> Self {
        service::Error::from(err).into()
    }
}

impl From<anyhow::Error> for ApiError {
    /// 503 `unavailable` when the chain holds an unreachable store or Redis, else 500.
    fn from(err: anyhow::Error) -> Self {
        service::Error::from(err).into()
    }
}

/// The error body every route answers with, as documented in the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_credentials`.
    pub error: String,
    /// What happened, for people.
    pub message: String,
    /// For `weak_password`: `length`, `common` or `contains_email`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `mfa_required`: the single-use challenge (five minutes) to send to `/login/mfa`
    /// with a code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
}

/// The detail of a 5xx, carried from [`ApiError::into_response`] to the logging middleware.
#[derive(Debug, Clone)]
pub struct ServerFault(pub Arc<String>);

/// Marks a response that refused a request for want of a bcrypt slot (503 `overloaded`), so that
/// the metrics tell load shedding from faults among the 503s (`http_requests_shed_total`).
#[derive(Debug, Clone, Copy)]
pub struct Shed;

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a WeakPasswordReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
}

impl From<service::Error> for ApiError {
    fn from(err: service::Error) -> Self {
        use service::Error as E;
        match err {
            E::InvalidEmail(message) => Self::InvalidEmail(message),
            E::PasswordRejected(PasswordRejected::Weak { reason, message }) => {
                Self::WeakPassword { reason, message }
            }
            E::PasswordRejected(PasswordRejected::TooLong { max_bytes }) => {
                Self::PasswordTooLong { max_bytes }
            }
            E::EmailTaken => Self::EmailTaken,
            E::InvalidCredentials => Self::InvalidCredentials,
            E::AccountDisabled => Self::AccountDisabled,
            E::Locked { retry_after_secs } => Self::RateLimited { retry_after_secs },
            E::InvalidGrant => Self::InvalidGrant,
            E::InvalidToken(description) => Self::InvalidToken(description),
            E::WrongPassword => Self::WrongPassword,
            E::MfaRequired { mfa_token } => Self::MfaRequired { mfa_token },
            E::InvalidMfaToken => Self::InvalidMfaToken,
            E::InvalidCode => Self::InvalidCode,
            E::TotpAlreadyEnabled => Self::TotpAlreadyEnabled,
            E::TotpNotPending => Self::TotpNotPending,
            E::TotpNotEnabled => Self::TotpNotEnabled,
            E::TotpUnavailable => Self::TotpUnavailable,
            E::InvalidEmailToken => Self::InvalidEmailToken,
            E::UnknownUser => Self::UserNotFound,
            E::UnknownSession => Self::SessionNotFound,
            E::UnknownKey => Self::KeyNotFound,
            E::InvalidRole(message) => Self::InvalidRole(message),
            E::UnsupportedAlgorithm(message) => Self::UnsupportedAlgorithm(message),
            E::InvalidRequest(message) => Self::InvalidRequest(message),
            E::Overloaded => Self::Overloaded,
            E::NotReady(why) => Self::NotReady(why),
            E::Unavailable(e) => Self::Unavailable(e),
            E::Database(e) => Self::Database(e),
            E::Internal(e) => Self::Internal(e),
        }
    }
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::UnsupportedGrantType | Self::InvalidEmailToken => {
                StatusCode::BAD_REQUEST
            }
            Self::MissingToken
            | Self::InvalidToken(_)
            | Self::InvalidCredentials
            | Self::InvalidGrant
            | Self::MfaRequired { .. }
            | Self::InvalidMfaToken
            | Self::InvalidCode => StatusCode::UNAUTHORIZED,
            Self::AccountDisabled | Self::WrongPassword => StatusCode::FORBIDDEN,
            Self::NotFound | Self::UserNotFound | Self::SessionNotFound | Self::KeyNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::EmailTaken
            | Self::TotpAlreadyEnabled
            | Self::TotpNotPending
            | Self::TotpNotEnabled
            | Self::TotpUnavailable => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidEmail(_)
            | Self::WeakPassword { .. }
            | Self::PasswordTooLong { .. }
            | Self::InvalidRole(_)
            | Self::UnsupportedAlgorithm(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::NotReady(_) | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::MissingToken => "missing_token",
            Self::InvalidToken(_) => "invalid_token",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidGrant => "invalid_grant",
            Self::AccountDisabled => "account_disabled",
            Self::WrongPassword => "wrong_password",
            Self::MfaRequired { .. } => "mfa_required",
            Self::InvalidMfaToken => "invalid_mfa_token",
            Self::InvalidCode => "invalid_code",
            Self::TotpAlreadyEnabled => "totp_already_enabled",
            Self::TotpNotPending => "totp_not_pending",
            Self::TotpNotEnabled => "totp_not_enabled",
            Self::TotpUnavailable => "totp_unavailable",
            Self::InvalidEmailToken => "invalid_email_token",
            Self::NotFound => "not_found",
            Self::UserNotFound => "user_not_found",
            Self::SessionNotFound => "session_not_found",
            Self::KeyNotFound => "key_not_found",
            Self::InvalidRole(_) => "invalid_role",
            Self::UnsupportedAlgorithm(_) => "unsupported_alg",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::EmailTaken => "email_taken",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidEmail(_) => "invalid_email",
            Self::WeakPassword { .. } => "weak_password",
            Self::PasswordTooLong { .. } => "password_too_long",
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::NotReady(_) => "not_ready",
            Self::Unavailable(_) => "unavailable",
            Self::Database(_) | Self::Internal(_) => "internal",
        }
    }

    /// The RFC 6750 challenge for a 401 (or a bearer-related 400), if any.
    pub(crate) fn challenge(&self) -> Option<String> {
        match self {
            Self::MissingToken
            | Self::InvalidCredentials
            | Self::InvalidGrant
            | Self::MfaRequired { .. }
            | Self::InvalidMfaToken
            | Self::InvalidCode => Some(format!("Bearer realm=\"{REALM}\"")),
            Self::InvalidToken(description) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                quoted_string_safe(description)
            )),
            _ => None,
        }
    }
}

/// Keeps a description legal inside an RFC 7230 quoted-string (RFC 6750 §3 restricts it to
/// printable ASCII without `"` and `\`).
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl ApiError {
    /// The message a client is told: the error's own text, except that a server fault's
    /// detail stays in the logs.
    pub(crate) fn client_message(&self) -> String {
        match self {
            Self::Overloaded | Self::NotReady(_) => self.to_string(),
            Self::Unavailable(_) => {
                "the service is temporarily unavailable, retry later".to_owned()
            }
            _ if self.status().is_server_error() => "internal server error".to_owned(),
            _ => self.to_string(),
        }
    }

    /// Why a password was refused, where a client can act on it.
    pub(crate) fn weak_password_reason(&self) -> Option<&WeakPasswordReason> {
        match self {
            Self::WeakPassword { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The challenge of `mfa_required`.
    fn mfa_token(&self) -> Option<&str> {
        match self {
            Self::MfaRequired { mfa_token } => {
                Some(secrecy::ExposeSecret::expose_secret(mfa_token))
            }
            _ => None,
        }
    }

    /// How long a client should wait before retrying (`Retry-After`), for the errors that say.
    pub(crate) fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Overloaded => Some(1),
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Whether the error is a fault whose detail must be logged (it is never sent).
    pub(crate) fn is_server_fault(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::Database(_) | Self::Internal(_)
        )
    }

    /// The JSON error body every front end sends: `{"error", "message", "reason"?}`.
    pub(crate) fn body_json(&self) -> String {
        let body = Body {
            error: self.code(),
            message: self.client_message(),
            reason: self.weak_password_reason(),
            mfa_token: self.mfa_token(),
        };
        serde_json::to_string(&body).unwrap_or_else(|_| {
            r#"{"error":"internal","message":"internal server error"}"#.to_owned()
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mfa_token = self.mfa_token();
        // The challenge is a credential for five minutes: no cache keeps it (RFC 6749 §5.1).
        let carries_secret = mfa_token.is_some();
        let body = Body {
            error: self.code(),
            message: self.client_message(),
            reason: self.weak_password_reason(),
            mfa_token,
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        if carries_secret {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if let Some(challenge) = self
            .challenge()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after_secs() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.is_server_fault() {
            response
                .extensions_mut()
                .insert(ServerFault(Arc::new(self.to_string())));
        }
        if matches!(self, Self::Overloaded) {
            response.extensions_mut().insert(Shed);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_detail_is_never_in_the_body() {
        let response =
            ApiError::Database(sqlx::Error::Protocol("secret detail".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let fault = response.extensions().get::<ServerFault>().unwrap();
        assert!(fault.0.contains("secret detail"));
    }

    #[test]
    fn invalid_token_challenge_escapes_quotes() {
        let challenge = ApiError::InvalidToken("bad \"kid\"\n".to_owned())
            .challenge()
            .unwrap();
        assert_eq!(
            challenge,
            "Bearer realm=\"auth-service\", error=\"invalid_token\", error_description=\"bad ?kid??\""
        );
    }

    #[test]
    fn an_unreachable_store_is_503_unavailable_with_retry_after() {
        for (reason, err) in [
            ("pool timeout", sqlx::Error::PoolTimedOut),
            ("pool closed", sqlx::Error::PoolClosed),
            (
                "connection refused",
                sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
            ),
        ] {
            let response = ApiError::from(err).into_response();
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{reason}"
            );
            assert_eq!(
                response.headers().get(header::RETRY_AFTER).unwrap(),
                "5",
                "{reason}"
            );
            let fault = response.extensions().get::<ServerFault>().unwrap();
            assert!(fault.0.contains("unavailable"), "{reason}: logged");
        }
    }

    #[test]
    fn a_query_error_stays_a_500() {
        let err = sqlx::Error::ColumnNotFound("nope".to_owned());
        assert_eq!(
            ApiError::from(err).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn an_unreachable_store_inside_context_is_still_503() {
        let err = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("cannot reload the keys");
        let api = ApiError::from(err);
        assert_eq!(api.code(), "unavailable");
    }
}
