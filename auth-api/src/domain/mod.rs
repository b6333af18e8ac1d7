//! Domain types parsed from requests: once constructed, they are valid.

mod auth_method;
mod email;
mod password;
mod totp;

pub use auth_method::AuthMethod;
pub use email::{Email, MAX_EMAIL_LEN};
pub use password::{
    Password, PasswordRejected, WeakPasswordReason, DEFAULT_MIN_PASSWORD_CHARS,
    LOWEST_MIN_PASSWORD_CHARS, MAX_PASSWORD_BYTES,
};
pub use totp::{
    otpauth_qr_svg, totp_step, RecoveryCode, TotpCode, TotpInputError, TotpIssuer, TotpSecret,
    RECOVERY_CODE_COUNT, TOTP_DIGITS, TOTP_DRIFT_STEPS, TOTP_PERIOD_SECS, TOTP_SECRET_BYTES,
};
