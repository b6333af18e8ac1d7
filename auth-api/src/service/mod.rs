//! The operations of auth-api, with no HTTP in them: sign up, log in, refresh, log out, change
//! a password, validate an access token.
//!
//! Each takes the shared [`AppState`](crate::AppState) and plain values (the strings a client
//! sent, parsed here into domain types), returns domain values, and fails with [`Error`]. A front
//! end is an adapter: the HTTP routes in [`crate::routes`] extract a request, call one operation
//! and map its result (an [`Error`] becomes an [`ApiError`](crate::ApiError)); another front end
//! calls the same functions. Outcome metrics and the audit log lines are written here, so that
//! every front end counts and logs alike.
//!
//! - [`accounts`]: sign up, log in (the per-account lock, bcrypt, a new session), change password.
//! - [`sessions`]: refresh (rotation and reuse detection), log out (each scope).
//! - [`access`]: access tokens: issuing a pair for a session, verifying, validating.
//! - [`email_verification`], [`recovery`]: the links mailed to prove an address and to reset a
//!   password.
//! - [`mfa`], [`totp`]: the TOTP second factor.
//! - [`sign_in`]: sign-in through external providers.
//! - [`admin`]: operator actions on users, sessions and keys (the CLI and the Admin API).

pub mod access;
pub mod accounts;
pub mod admin;
pub mod email_verification;
mod error;
mod links;
pub mod mfa;
pub mod recovery;
pub mod sessions;
pub mod sign_in;
pub mod totp;

pub use access::{TokenPair, VerifiedToken};
pub use error::{is_unavailable, Error, Result};
pub use links::MAX_MAILS_PER_RECIPIENT_HOUR;
pub use sessions::{LogoutCredential, LogoutScope};
