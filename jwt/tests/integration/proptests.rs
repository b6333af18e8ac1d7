//! `decode` never panics, whatever it is given, and a token that verifies was not altered.

use auth_jwt::{decode, encode, Header, Validation};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use sha2::Sha256;

use crate::{key, keys, validation, SECRET};

const NOW: u64 = 1_700_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs raw segments with the test secret, so payloads need not be valid JSON.
fn sign(header: &[u8], payload: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

fn valid_token(sub: &str) -> String {
    let claims = json!({
        "iss": crate::ISSUER, "aud": crate::AUDIENCE, "sub": sub, "exp": NOW + 900, "iat": NOW, "jti": "j",
    });
    encode(&Header::access_token(&key()), &claims, &key()).unwrap()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z:/.+]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(claim_name(), inner, 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn claim_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["exp", "nbf", "iat", "iss", "aud", "sub", "jti"])
            .prop_map(str::to_owned),
        "[a-z]{1,4}",
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0x20u8..0x7f).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
        (any::<Index>(), 0x20u8..0x7f).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
}

fn apply(token: &str, mutations: &[Mutation]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for mutation in mutations {
        match *mutation {
            Mutation::Replace(at, byte) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            Mutation::Insert(at, byte) => bytes.insert(at.index(bytes.len() + 1), byte),
            Mutation::Delete(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            _ => {}
        }
    }
    // Mutations only write printable ASCII, so the token stays UTF-8.
    String::from_utf8(bytes).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics_on_arbitrary_strings(token in any::<String>()) {
        let _ = decode::<Value>(&token, &keys(), &validation(), NOW);
    }

    #[test]
    fn decode_never_panics_on_token_alphabet(token in "[A-Za-z0-9_=+/.-]{0,400}") {
        let result = decode::<Value>(&token, &keys(), &validation(), NOW);
        prop_assert!(result.is_err());
    }

    #[test]
    fn decode_never_panics_on_base64url_segments(
        segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..160), 0..6),
    ) {
        let token = segments.iter().map(|s| b64(s)).collect::<Vec<_>>().join(".");
        let result = decode::<Value>(&token, &keys(), &validation(), NOW);
        prop_assert!(result.is_err());
    }

    #[test]
    fn decode_never_panics_on_signed_arbitrary_payloads(
        header in json_value(),
        payload in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let header = serde_json::to_vec(&header).unwrap();
        let _ = decode::<Value>(&sign(&header, &payload), &keys(), &validation(), NOW);
        let access_header = br#"{"alg":"HS256","typ":"at+jwt","kid":"2025-01"}"#;
        let _ = decode::<Value>(&sign(access_header, &payload), &keys(), &validation(), NOW);
    }

    #[test]
    fn signed_arbitrary_claims_verify_only_when_valid(
        claims in prop::collection::btree_map(claim_name(), json_value(), 0..8),
        exp in prop::option::weighted(0.8, (NOW - 300)..(NOW + 300)),
        leeway_secs in 0u64..120,
    ) {
        let mut claims: Map<String, Value> = claims.into_iter().collect();
        let other_time_claims = claims.contains_key("nbf") || claims.contains_key("iat");
        if let Some(exp) = exp {
            claims.insert("exp".to_owned(), json!(exp));
        }
        let token = encode(&Header::access_token(&key()), &claims, &key()).unwrap();
        let validation = Validation { leeway_secs, ..Validation::default() };

        let result = decode::<Map<String, Value>>(&token, &keys(), &validation, NOW);

        if let (Some(exp), false) = (exp, other_time_claims) {
            prop_assert_eq!(result.is_ok(), exp + leeway_secs > NOW, "{:?}", result);
        }
        if let Ok(data) = result {
            let exp = data.claims.get("exp").and_then(Value::as_f64);
            prop_assert!(exp.is_some_and(|exp| exp + leeway_secs as f64 > NOW as f64), "{:?}", data.claims);
            // serde_json's own parse, since its float parsing need not round-trip exactly.
            let expected: Map<String, Value> =
                serde_json::from_slice(&serde_json::to_vec(&claims).unwrap()).unwrap();
            prop_assert_eq!(data.claims, expected);
        }
    }

    #[test]
    fn mutated_tokens_never_verify_unless_unchanged(
        sub in "[a-zA-Z0-9]{0,24}",
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let original = valid_token(&sub);
        prop_assert!(decode::<Value>(&original, &keys(), &validation(), NOW).is_ok());
        let mutated = apply(&original, &mutations);
        let result = decode::<Value>(&mutated, &keys(), &validation(), NOW);
        prop_assert_eq!(result.is_ok(), mutated == original, "{}", mutated);
    }
}
