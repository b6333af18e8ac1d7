//! An [`ApiError`] as a gRPC status: the code that matches its HTTP status, its message (a
//! server fault's detail stays in the logs), a `google.rpc.ErrorInfo` whose `reason` is the HTTP
//! error code (with what HTTP's body adds to it, `reason` and `mfa_token`, as its metadata), and
//! a `google.rpc.RetryInfo` where HTTP sends `Retry-After`.

use std::{collections::HashMap, time::Duration};

use axum::http::StatusCode;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::error::ApiError;

/// `ErrorInfo.domain` of every error.
pub(super) const ERROR_DOMAIN: &str = "auth-service";

/// The gRPC code for an HTTP status, as gRPC's own HTTP mapping and Google's API design guide
/// pair them.
pub(super) fn code_of(status: StatusCode) -> Code {
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::UNPROCESSABLE_ENTITY
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::InvalidArgument,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Code::Unimplemented,
        StatusCode::CONFLICT => Code::AlreadyExists,
        StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
        StatusCode::REQUEST_TIMEOUT => Code::DeadlineExceeded,
        StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The gRPC code of `err`: [`code_of`] its HTTP status, except that of the 409s only those
/// that say something exists are ALREADY_EXISTS; the ones that say the account is not in the
/// state the call needs are FAILED_PRECONDITION (a client must not read them as "done already").
fn code_of_error(err: &ApiError) -> Code {
    match err {
        ApiError::TotpNotPending | ApiError::TotpNotEnabled | ApiError::TotpUnavailable => {
            Code::FailedPrecondition
        }
        // A named thing that does not exist, unlike a route that does not (UNIMPLEMENTED).
        ApiError::UserNotFound | ApiError::SessionNotFound | ApiError::KeyNotFound => {
            Code::NotFound
        }
        _ => code_of(err.status()),
    }
}

/// A status code's name as gRPC spells it (`OK`, `UNAUTHENTICATED`, …), for metrics labels.
pub(super) const fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        if err.is_server_fault() {
            tracing::error!(error = %err, "gRPC request failed");
        }
        let mut metadata = HashMap::new();
        if let Some(reason) = err
            .weak_password_reason()
            .and_then(|r| serde_json::to_value(r).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            metadata.insert("reason".to_owned(), reason);
        }
        // The challenge of `mfa_required`, for CompleteMfaLogin, as HTTP's 401 body carries it.
        if let ApiError::MfaRequired { mfa_token } = &err {
            metadata.insert(
                "mfa_token".to_owned(),
                secrecy::ExposeSecret::expose_secret(mfa_token).to_owned(),
            );
        }
        let mut details = ErrorDetails::new();
        details.set_error_info(err.code(), ERROR_DOMAIN, metadata);
        if let Some(secs) = err.retry_after_secs() {
            details.set_retry_info(Some(Duration::from_secs(secs)));
        }
        Status::with_error_details(code_of_error(&err), err.client_message(), details)
    }
}

impl From<crate::service::Error> for Status {
    fn from(err: crate::service::Error) -> Self {
        ApiError::from(err).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WeakPasswordReason;

    #[test]
    fn every_error_carries_its_http_code_as_the_reason() {
        let status = Status::from(ApiError::InvalidCredentials);
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "invalid_credentials");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert!(status.get_details_retry_info().is_none());
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status = Status::from(ApiError::RateLimited {
            retry_after_secs: 42,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(42))
        );
    }

    #[test]
    fn a_weak_password_says_why() {
        let status = Status::from(ApiError::WeakPassword {
            reason: WeakPasswordReason::Length,
            message: "too short".to_owned(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "weak_password");
        assert_eq!(info.metadata["reason"], "length");
    }

    #[test]
    fn mfa_required_carries_its_challenge() {
        let status = Status::from(ApiError::MfaRequired {
            mfa_token: "the-challenge".to_owned().into(),
        });
        assert_eq!(status.code(), Code::Unauthenticated);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "mfa_required");
        assert_eq!(info.metadata["mfa_token"], "the-challenge");
        assert!(!status.message().contains("the-challenge"));
    }

    #[test]
    fn conflicts_of_state_are_failed_precondition() {
        for (err, code) in [
            (ApiError::EmailTaken, Code::AlreadyExists),
            (ApiError::TotpAlreadyEnabled, Code::AlreadyExists),
            (ApiError::TotpNotPending, Code::FailedPrecondition),
            (ApiError::TotpNotEnabled, Code::FailedPrecondition),
            (ApiError::TotpUnavailable, Code::FailedPrecondition),
        ] {
            let reason = err.code();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{reason}");
            assert_eq!(status.get_details_error_info().unwrap().reason, reason);
        }
    }

    #[test]
    fn a_server_fault_keeps_its_detail() {
        let status = Status::from(ApiError::Internal(anyhow::anyhow!("secret detail")));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
        let status = Status::from(ApiError::Unavailable(anyhow::anyhow!("secret detail")));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("secret"));
        assert!(status.get_details_retry_info().is_some());
    }
}
