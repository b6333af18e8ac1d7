//! Domain types parsed from requests: once constructed, they are valid.

mod auth_method;
mod email;
mod password;

pub use auth_method::AuthMethod;
pub use email::{Email, MAX_EMAIL_LEN};
pub use password::{
    Password, PasswordRejected, WeakPasswordReason, DEFAULT_MIN_PASSWORD_CHARS,
    LOWEST_MIN_PASSWORD_CHARS, MAX_PASSWORD_BYTES,
};
