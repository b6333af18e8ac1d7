//! `auth_jwt::decode` on any input: never a panic, and only the real token verifies.
#![no_main]

use auth_jwt::{decode, Key, KeySet, Validation};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys: KeySet = [Key::hs256("k1", b"fuzz-secret-fuzz-secret-fuzz-sec").unwrap()]
        .into_iter()
        .collect();
    let validation = Validation {
        issuer: Some("auth-service".to_owned()),
        audiences: Some(vec!["api".to_owned()]),
        required_claims: vec!["sub".to_owned(), "sid".to_owned()],
        ..Validation::default()
    };
    let _ = decode::<serde_json::Value>(token, &keys, &validation, NOW);
});
