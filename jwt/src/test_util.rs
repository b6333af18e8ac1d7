//! Fixtures for the unit tests: one key, a valid access-token claim set, and raw signing so
//! tests can build tokens that `encode` would refuse to produce.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::{decode, Key, KeySet, Result, TokenData, Validation};

/// The fixed "current time" of the tests, in seconds since the Unix epoch.
pub(crate) const NOW: u64 = 1_700_000_000;
pub(crate) const KID: &str = "k1";
pub(crate) const SECRET: &[u8] = b"test-secret-test-secret-test-sec";
pub(crate) const ISSUER: &str = "https://auth.example.com";
pub(crate) const AUDIENCE: &str = "api";
pub(crate) const HEADER: &str = r#"{"alg":"HS256","typ":"at+jwt","kid":"k1"}"#;

pub(crate) fn key() -> Key {
    Key::hs256(KID, SECRET).unwrap()
}

pub(crate) fn keys() -> KeySet {
    [key()].into_iter().collect()
}

/// The default validation plus the issuer and audience that `claims()` carries.
pub(crate) fn validation() -> Validation {
    Validation {
        issuer: Some(ISSUER.to_owned()),
        audiences: Some(vec![AUDIENCE.to_owned()]),
        ..Validation::default()
    }
}

/// A claim set that `validation()` accepts at `NOW`.
pub(crate) fn claims() -> Value {
    json!({
        "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "exp": NOW + 900, "iat": NOW,
        "jti": "jti-1", "sid": "sid-1", "email": "a@example.com", "roles": ["user"],
    })
}

pub(crate) fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` over already-encoded segments, signed with `key`.
pub(crate) fn sign_segments(header_b64: &str, payload_b64: &str, key: &Key) -> String {
    let signing_input = format!("{header_b64}.{payload_b64}");
    let signature = b64(key.sign(signing_input.as_bytes()).unwrap());
    format!("{signing_input}.{signature}")
}

/// A token of raw JSON texts signed with `key()`; `None` uses the access-token `HEADER`.
pub(crate) fn token(header: Option<&str>, payload: &str) -> String {
    sign_segments(&b64(header.unwrap_or(HEADER)), &b64(payload), &key())
}

pub(crate) fn token_with_claims(claims: &Value) -> String {
    token(None, &claims.to_string())
}

/// Decodes with `keys()` and `validation()` adjusted by `configure`.
pub(crate) fn decode_with<C: DeserializeOwned>(
    token: &str,
    now: u64,
    configure: impl FnOnce(&mut Validation),
) -> Result<TokenData<C>> {
    let mut validation = validation();
    configure(&mut validation);
    decode(token, &keys(), &validation, now)
}

/// A key pair of `alg` with kid `kid`, made once per algorithm and test binary (an RSA key
/// takes a while to generate).
pub(crate) fn key_pair(alg: crate::Algorithm, kid: &str) -> Key {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static KEYS: Mutex<BTreeMap<crate::Algorithm, Key>> = Mutex::new(BTreeMap::new());
    let mut keys = KEYS.lock().unwrap();
    let key = keys
        .entry(alg)
        .or_insert_with(|| Key::generate("seed", alg, &mut rand_core::OsRng).unwrap());
    Key::from_private_bytes(kid, alg, &key.to_private_bytes().unwrap()).unwrap()
}
