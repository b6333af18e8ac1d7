//! The crate's one integration test binary: interoperability with `jsonwebtoken` (HS256 in
//! `interop`, the public-key algorithms and their JWKs in `public_keys`) and property
//! tests of `decode` on hostile input.

mod interop;
mod proptests;
mod public_keys;

use std::time::{SystemTime, UNIX_EPOCH};

use auth_jwt::{Key, KeySet, Validation};

const KID: &str = "2025-01";
const SECRET: &[u8] = b"interop-secret-interop-secret-32";
const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "api";

fn key() -> Key {
    Key::hs256(KID, SECRET).unwrap()
}

fn keys() -> KeySet {
    [key()].into_iter().collect()
}

fn validation() -> Validation {
    Validation {
        issuer: Some(ISSUER.to_owned()),
        audiences: Some(vec![AUDIENCE.to_owned()]),
        required_claims: vec!["sub".to_owned(), "iat".to_owned(), "jti".to_owned()],
        ..Validation::default()
    }
}

/// Wall-clock time: `jsonwebtoken` reads the clock itself, so the interop tests must agree.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
