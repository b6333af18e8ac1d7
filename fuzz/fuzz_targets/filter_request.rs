//! The filter's whole per-request decision on any method, path and header values (the parts a
//! client controls), with real keys of every algorithm (`k1` HS256, `k-es256`, `k-eddsa`,
//! `k-rs256` public keys) and a warm cache: never a panic.
#![no_main]

use std::sync::OnceLock;

use auth_filter::{decide, FilterConfig, RequestView, RevocationCheck, TokenCache, Verification};
use auth_jwt::{Algorithm, Key, KeySet, RustCrypto};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_700_000_000;

fn config() -> &'static FilterConfig {
    static CONFIG: OnceLock<FilterConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let jwk = auth_jwt::Jwk::from_key(&Key::hs256("k1", b"fuzz-secret-fuzz-secret-fuzz-sec").unwrap());
        let config = serde_json::json!({
            "issuer": "auth-service",
            "audiences": ["api"],
            "from_cookies": ["access_token"],
            "claim_to_headers": [
                {"claim_name": "sub", "header_name": "x-user-id"},
                {"claim_name": "roles", "header_name": "x-user-roles"}
            ],
            "local_jwks": {"keys": [jwk]},
            "rules": [
                {"match": {"prefix": "/public/"}, "require": "public"},
                {"match": {"prefix": "/api/admin/"}, "require": {"roles": ["admin"]}},
                {"match": {"prefix": "/api/"}, "methods": ["GET", "POST"], "require": "authenticated"}
            ]
        });
        FilterConfig::parse(config.to_string().as_bytes()).unwrap()
    })
}

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = vec![Key::hs256("k1", b"fuzz-secret-fuzz-secret-fuzz-sec").unwrap()];
        for (kid, alg) in [
            ("k-es256", Algorithm::ES256),
            ("k-eddsa", Algorithm::EdDSA),
            ("k-rs256", Algorithm::RS256),
        ] {
            let key = Key::generate(kid, alg, &mut rand_core::OsRng).unwrap();
            keys.push(key.to_public().unwrap());
        }
        keys.into_iter().collect()
    })
}

fuzz_target!(|data: &[u8]| {
    // Fields separated by newlines: method, path, then header name/value pairs.
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let method = fields.next().unwrap_or_default();
    let path = fields.next().unwrap_or_default();
    let mut headers = Vec::new();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        headers.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    let config = config();
    let keys = keys();
    let mut cache = TokenCache::new(16);
    let view = RequestView {
        method,
        path,
        headers: &headers,
    };
    let validation = config.validation();
    for _ in 0..2 {
        // Twice: the second time through the cache.
        let _ = decide(
            &view,
            config,
            Verification::new(&validation, &RustCrypto),
            Some(keys),
            RevocationCheck::Off,
            Some(&mut cache),
            NOW,
        );
    }
});
