//! ES256, EdDSA and RS256 tokens and JWKs cross between this crate and `jsonwebtoken` 9 (ring)
//! in both directions: theirs verifies ours from our public JWK alone, ours verifies theirs
//! signed with our private key, and a foreign key that reuses our `kid` fails on both sides.

use auth_jwt::{decode, encode, Algorithm, ErrorKind, Header, Jwk, JwkSet, Key, KeySet};
use jsonwebtoken as jwt;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::DecodePrivateKey as _;

use crate::{now, validation, AUDIENCE, ISSUER};

const ALGS: [(Algorithm, jwt::Algorithm); 3] = [
    (Algorithm::ES256, jwt::Algorithm::ES256),
    (Algorithm::EdDSA, jwt::Algorithm::EdDSA),
    (Algorithm::RS256, jwt::Algorithm::RS256),
];

fn claims(now: u64) -> serde_json::Value {
    serde_json::json!({
        "iss": ISSUER, "sub": "user-1", "aud": AUDIENCE, "exp": now + 900, "iat": now,
        "jti": "jti-1", "roles": ["user"],
    })
}

fn their_validation(alg: jwt::Algorithm) -> jwt::Validation {
    let mut validation = jwt::Validation::new(alg);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Their decoding key, read from the JWK we publish (as a JSON document, the way any verifier
/// gets it).
fn their_decoding_key(key: &Key) -> jwt::DecodingKey {
    let json = serde_json::to_string(&Jwk::public(key).unwrap()).unwrap();
    let jwk: jwt::jwk::Jwk = serde_json::from_str(&json).unwrap();
    jwt::DecodingKey::from_jwk(&jwk).unwrap()
}

/// Their encoding key, from our private key: PKCS#8 for P-256 and Ed25519, PKCS#1 for RSA,
/// as ring wants them.
fn their_encoding_key(key: &Key) -> jwt::EncodingKey {
    let der = key.to_private_bytes().unwrap();
    match key.algorithm() {
        Algorithm::ES256 => jwt::EncodingKey::from_ec_der(&der),
        Algorithm::EdDSA => jwt::EncodingKey::from_ed_der(&der),
        Algorithm::RS256 => {
            let private = rsa::RsaPrivateKey::from_pkcs8_der(&der).unwrap();
            jwt::EncodingKey::from_rsa_der(private.to_pkcs1_der().unwrap().as_bytes())
        }
        other => panic!("no public key for {other}"),
    }
}

fn our_public_set(key: &Key) -> KeySet {
    let set: KeySet = [key.clone()].into_iter().collect();
    let json = serde_json::to_vec(&JwkSet::public(&set)).unwrap();
    KeySet::from_jwks_json(&json).unwrap()
}

fn new_key(alg: Algorithm, kid: &str) -> Key {
    Key::generate(kid, alg, &mut rand_core::OsRng).unwrap()
}

#[test]
fn our_tokens_verify_in_jsonwebtoken_from_the_public_jwk() {
    for (ours, theirs) in ALGS {
        let key = new_key(ours, "2026-12");
        let now = now();
        let token = encode(&Header::access_token(&key), &claims(now), &key).unwrap();

        let header = jwt::decode_header(&token).unwrap();
        let data = jwt::decode::<serde_json::Value>(
            &token,
            &their_decoding_key(&key),
            &their_validation(theirs),
        )
        .unwrap();

        assert_eq!(header.alg, theirs);
        assert_eq!(header.kid.as_deref(), Some("2026-12"));
        assert_eq!(data.claims, claims(now), "{ours}");
    }
}

#[test]
fn jsonwebtoken_tokens_verify_with_our_public_jwks() {
    for (ours, theirs) in ALGS {
        let key = new_key(ours, "2026-12");
        let now = now();
        let header = jwt::Header {
            typ: Some("at+jwt".to_owned()),
            kid: Some("2026-12".to_owned()),
            ..jwt::Header::new(theirs)
        };
        let token = jwt::encode(&header, &claims(now), &their_encoding_key(&key)).unwrap();

        let data =
            decode::<serde_json::Value>(&token, &our_public_set(&key), &validation(), now).unwrap();

        assert_eq!(data.header.alg, ours);
        assert_eq!(data.claims, claims(now), "{ours}");
    }
}

#[test]
fn a_foreign_key_reusing_our_kid_fails_on_both_sides() {
    for (ours, theirs) in ALGS {
        let published = new_key(ours, "2026-12");
        let foreign = new_key(ours, "2026-12");
        let now = now();

        let token = encode(&Header::access_token(&foreign), &claims(now), &foreign).unwrap();
        let err =
            decode::<serde_json::Value>(&token, &our_public_set(&published), &validation(), now)
                .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidSignature), "{ours}");

        let theirs_err = jwt::decode::<serde_json::Value>(
            &token,
            &their_decoding_key(&published),
            &their_validation(theirs),
        )
        .unwrap_err();
        assert!(
            matches!(theirs_err.kind(), jwt::errors::ErrorKind::InvalidSignature),
            "{ours}: {theirs_err:?}"
        );
    }
}

#[test]
fn tampered_tokens_fail_in_jsonwebtoken_too() {
    for (ours, theirs) in ALGS {
        let key = new_key(ours, "2026-12");
        let now = now();
        let token = encode(&Header::access_token(&key), &claims(now), &key).unwrap();
        let mut forged_claims = claims(now);
        forged_claims["roles"] = serde_json::json!(["admin"]);
        let forged_payload = {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&forged_claims).unwrap())
        };
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);

        let ours_err =
            decode::<serde_json::Value>(&tampered, &our_public_set(&key), &validation(), now)
                .unwrap_err();
        assert!(
            matches!(ours_err.kind(), ErrorKind::InvalidSignature),
            "{ours}"
        );
        assert!(jwt::decode::<serde_json::Value>(
            &tampered,
            &their_decoding_key(&key),
            &their_validation(theirs)
        )
        .is_err());
    }
}
