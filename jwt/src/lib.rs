//! Compact JWS (RFC 7515) encoding and strict JWT (RFC 7519) validation with HS256, shared by
//! auth-api, which signs access tokens, and the Envoy filter, which verifies them.
//!
//! The crate owns the token format, the keys' JWK form and the validation rules. It does no I/O
//! and has no clock (callers pass `now`, in seconds since the Unix epoch), and it never panics
//! on any input, so it runs in a `wasm32-wasip1` proxy-wasm filter as well as natively.
//!
//! ```
//! use auth_jwt::{decode, encode, Header, Key, KeySet, Validation};
//! use serde_json::{json, Value};
//!
//! # fn main() -> auth_jwt::Result<()> {
//! let key = Key::hs256("2025-01", b"an example secret of at least 32 bytes")?;
//! let now = 1_700_000_000;
//! let claims = json!({ "sub": "user-1", "iat": now, "exp": now + 900 });
//! let token = encode(&Header::access_token(key.kid()), &claims, &key)?;
//!
//! let keys: KeySet = [key].into_iter().collect();
//! let data = decode::<Value>(&token, &keys, &Validation::default(), now)?;
//! assert_eq!(data.claims["sub"], "user-1");
//! # Ok(())
//! # }
//! ```
// Tests may unwrap and index; the library itself must not be able to panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod algorithm;
mod decode;
mod encode;
mod error;
mod header;
mod jwk;
mod key;
mod key_set;
mod strict_json;
#[cfg(test)]
mod test_util;
mod validation;

pub use algorithm::Algorithm;
pub use decode::{decode, TokenData};
pub use encode::encode;
pub use error::{Error, ErrorKind, Result};
pub use header::Header;
pub use jwk::{Jwk, JwkSet};
pub use key::Key;
pub use key_set::KeySet;
pub use validation::Validation;
