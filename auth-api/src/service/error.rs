//! [`Error`]: why an operation was refused, or failed, in the service's own terms.

use crate::{domain::PasswordRejected, passwords::HashError};

/// `Result` with the service's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an operation can fail with. Front ends map each variant to their own answer
/// (HTTP: `From<Error> for ApiError`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Signup: the email does not parse.
    #[error("{0}")]
    InvalidEmail(String),
    /// Signup or password change: the new password breaks the policy.
    #[error(transparent)]
    PasswordRejected(#[from] PasswordRejected),
    /// Signup: another account has this email.
    #[error("an account with this email already exists")]
    EmailTaken,
    /// Login: unknown email or wrong password, on purpose not told apart.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Login: the password is right but the account is disabled.
    #[error("this account is disabled")]
    AccountDisabled,
    /// Login or password change: the account is locked after consecutive password failures.
    #[error("too many attempts, retry later")]
    Locked {
        /// Seconds until the lock lifts.
        retry_after_secs: u64,
    },
    /// Refresh: the refresh token is unknown, expired, revoked or reused.
    #[error("the refresh token is invalid, expired or revoked")]
    InvalidGrant,
    /// The access token is not acceptable; why, for the client.
    #[error("{0}")]
    InvalidToken(String),
    /// Password change: the current password given is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// Too many password hashes are already waiting.
    #[error("the service is busy, retry shortly")]
    Overloaded,
    /// The store or the key ring is not available.
    #[error("{0}")]
    NotReady(String),
    /// A database fault.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Any other fault.
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<HashError> for Error {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Overloaded => Self::Overloaded,
            HashError::Failed(detail) => Self::Internal(anyhow::anyhow!(detail)),
        }
    }
}
