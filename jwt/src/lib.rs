//! Compact JWS (RFC 7515) encoding and strict JWT (RFC 7519) validation with ES256, EdDSA
//! (Ed25519), RS256 and HS256, shared by auth-api, which signs access tokens, and the Envoy
//! filter, which verifies them.
//!
//! The crate owns the token format, the keys and their JWK form, and the validation rules. It
//! does no I/O and has no clock (callers pass `now`, in seconds since the Unix epoch), and it
//! never panics on any input, so it runs in a `wasm32-wasip1` proxy-wasm filter as well as
//! natively. Each [`Key`] is bound to one [`Algorithm`]; a verifier needs only the public half,
//! which [`Jwk::public`] publishes. The cryptography is RustCrypto's (`p256`, `ed25519-dalek`,
//! `rsa`, `hmac`), or a caller's own through [`Verifier`].
//!
//! ```
//! use auth_jwt::{decode, encode, Algorithm, Header, JwkSet, Key, KeySet, Validation};
//! use serde_json::{json, Value};
//!
//! # fn main() -> auth_jwt::Result<()> {
//! // The signer holds the key pair …
//! let key = Key::generate("2026-12", Algorithm::ES256, &mut rand_core::OsRng)?;
//! let now = 1_700_000_000;
//! let claims = json!({ "sub": "user-1", "iat": now, "exp": now + 900 });
//! let token = encode(&Header::access_token(&key), &claims, &key)?;
//!
//! // … and publishes only its public half, which is all a verifier gets.
//! let jwks = serde_json::to_vec(&JwkSet::public(&[key].into_iter().collect())).unwrap();
//! let keys = KeySet::from_jwks_json(&jwks)?;
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
mod bearer;
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
mod verifier;

pub use algorithm::Algorithm;
pub use bearer::is_token68;
pub use decode::{decode, decode_with_verifier, TokenData};
pub use encode::encode;
pub use error::{Error, ErrorKind, Result};
pub use header::Header;
pub use jwk::{Jwk, JwkSet};
pub use key::{es256_signature_to_der, Key};
pub use key_set::KeySet;
pub use validation::{Validation, ACCESS_TOKEN_REQUIRED_CLAIMS};
pub use verifier::{RustCrypto, Verifier};

/// The largest clock skew, in seconds, that any verifier of our tokens may tolerate on `exp`.
///
/// Shared by both sides of the revocation feed so that they agree by construction: auth-api
/// keeps (and serves) every revocation until `until + MAX_CLOCK_SKEW_SECS`, and the gateway
/// filter refuses a `clock_skew_seconds` above it. A gateway that accepts a token up to its skew
/// after `exp` therefore still holds every entry that refuses that token.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// Parses `bytes` as one JSON object with the strictness used for JOSE headers, claims and JWK
/// sets: no trailing input, and no member name repeated in any object at any depth
/// ([`ErrorKind::DuplicateMember`]; anything else that is not one JSON object is
/// [`ErrorKind::InvalidJson`]). For other documents that must mean one thing to every parser,
/// such as the gateway filter's configuration.
pub fn parse_json_object(bytes: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>> {
    strict_json::parse_object(bytes)
}
