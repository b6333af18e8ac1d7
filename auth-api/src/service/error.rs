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
    /// Login: the password is right and the account has a second factor: complete the login
    /// at `/login/mfa` with this challenge and a code.
    #[error("a second factor is required")]
    MfaRequired {
        /// The single-use challenge (shown to the client once; only its hash is stored).
        mfa_token: secrecy::SecretString,
    },
    /// Second step of a login: the challenge is unknown, expired, used, or voided by a change
    /// of the user's credentials since it was issued.
    #[error("the mfa_token is invalid, expired or used; log in again")]
    InvalidMfaToken,
    /// A TOTP code or recovery code is wrong, malformed, or already used.
    #[error("the code is wrong or already used")]
    InvalidCode,
    /// TOTP enrolment: the user already has a confirmed second factor.
    #[error("a second factor is already enabled; disable it first")]
    TotpAlreadyEnabled,
    /// TOTP confirmation: no enrolment waits for a first code (none started, or started more
    /// than ten minutes ago).
    #[error("no TOTP enrolment waits for confirmation; start again")]
    TotpNotPending,
    /// TOTP disable: the user has no second factor.
    #[error("no second factor is enabled")]
    TotpNotEnabled,
    /// TOTP enrolment: the account has no password (an external sign-in made it), so a second
    /// factor here would never be asked: its user signs in through the provider.
    #[error("an account without a password cannot add a second factor here")]
    TotpUnavailable,
    /// Email verification or password reset: the link's token is unknown, used, replaced by a
    /// newer one, expired, or voided by a password change.
    #[error("this link is invalid, used or expired; ask for a new one")]
    InvalidEmailToken,
    /// Operator action: no user has this id (or email).
    #[error("no such user")]
    UnknownUser,
    /// Operator action: no session has this id.
    #[error("no such session")]
    UnknownSession,
    /// Operator action: no signing key has this kid.
    #[error("no such key")]
    UnknownKey,
    /// Operator action: a role name that is not 1-64 letters, digits, `_ - . :`.
    #[error("{0}")]
    InvalidRole(String),
    /// Operator action: a key algorithm other than ES256, EdDSA, RS256 or HS256.
    #[error("{0}")]
    UnsupportedAlgorithm(String),
    /// A malformed argument that is none of the above (a paging cursor that names no user).
    #[error("{0}")]
    InvalidRequest(String),
    /// Too many password hashes are already waiting.
    #[error("the service is busy, retry shortly")]
    Overloaded,
    /// The store or the key ring is not available.
    #[error("{0}")]
    NotReady(String),
    /// The store (or another service we depend on, such as Redis) cannot be reached right now:
    /// a pool timeout, a refused or broken connection, a server shutting down. Retrying later
    /// can succeed; see [`is_unavailable`].
    #[error("a backing service is unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// A database fault that retrying will not cure (a query or constraint error).
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Any other fault.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) {
            Self::Unavailable(err.into())
        } else {
            Self::Database(err)
        }
    }
}

impl From<anyhow::Error> for Error {
    /// [`Error::Unavailable`] when anything in the chain is an unavailability (the key ring,
    /// for one, wraps the store's errors in context), else [`Error::Internal`].
    fn from(err: anyhow::Error) -> Self {
        let unavailable = err.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_unavailable)
                || cause
                    .downcast_ref::<redis::RedisError>()
                    .is_some_and(redis_is_unavailable)
        });
        if unavailable {
            Self::Unavailable(err)
        } else {
            Self::Internal(err)
        }
    }
}

/// Whether `err` says the database cannot be reached now, rather than that a query is wrong:
/// the pool timed out or is closed, the connection failed (I/O, TLS), or the server refuses
/// work for a while (PostgreSQL: connection exceptions `08…`, insufficient resources `53…`,
/// shutdown `57P01`–`57P03`, deadlock `40P01`; SQLite: busy, locked, I/O error, full, cannot open; MySQL: too
/// many connections, shutting down, lock wait timeout, deadlock, connection killed, read-only).
/// A deadlock or a lock wait timeout is transient contention that a retry gets through, as the
/// 503's `Retry-After` asks; the transaction was rolled back, so nothing is half done.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                const TOO_MANY_CONNECTIONS: u16 = 1040;
                const SERVER_SHUTDOWN: u16 = 1053;
                const LOCK_WAIT_TIMEOUT: u16 = 1205;
                const DEADLOCK: u16 = 1213;
                const READ_ONLY: u16 = 1290;
                const QUERY_INTERRUPTED: u16 = 1317;
                const CONNECTION_KILLED: u16 = 1927;
                return matches!(
                    mysql.number(),
                    TOO_MANY_CONNECTIONS
                        | SERVER_SHUTDOWN
                        | LOCK_WAIT_TIMEOUT
                        | DEADLOCK
                        | READ_ONLY
                        | QUERY_INTERRUPTED
                        | CONNECTION_KILLED
                );
            }
            let Some(code) = db.code() else {
                return false;
            };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // Extended result codes keep the primary code in their low byte.
                const BUSY: i32 = 5;
                const LOCKED: i32 = 6;
                const IOERR: i32 = 10;
                const FULL: i32 = 13;
                const CANTOPEN: i32 = 14;
                code.parse::<i32>()
                    .is_ok_and(|c| matches!(c & 0xff, BUSY | LOCKED | IOERR | FULL | CANTOPEN))
            } else {
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(&*code, "57P01" | "57P02" | "57P03" | "40P01")
            }
        }
        _ => false,
    }
}

/// Whether a Redis error is the server being unreachable rather than a wrong command.
fn redis_is_unavailable(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_connection_dropped()
}

impl From<HashError> for Error {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Overloaded => Self::Overloaded,
            HashError::Failed(detail) => Self::Internal(anyhow::anyhow!(detail)),
        }
    }
}
