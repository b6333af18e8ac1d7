//! Producing compact JWS tokens (RFC 7515 §7.1). Choosing claims, lifetimes and keys is the
//! caller's job; this module only guarantees that what it signs, `decode` can read.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use crate::error::{ErrorKind, Result};
use crate::header::Header;
use crate::key::Key;
use crate::strict_json;

/// Signs `claims` with `key` under `header`, returning `header.payload.signature`.
///
/// Fails with [`ErrorKind::KeyAlgorithmMismatch`] if `header.alg` is not the key's algorithm,
/// with [`ErrorKind::InvalidKey`] if the key is a public key alone, and with [`ErrorKind::Encoding`] if `claims` does not serialize to a JSON object without
/// duplicate member names (which `decode` would refuse).
pub fn encode<C: Serialize>(header: &Header, claims: &C, key: &Key) -> Result<String> {
    if header.alg != key.algorithm() {
        return Err(ErrorKind::KeyAlgorithmMismatch.into());
    }
    let header_json = header.to_json()?;
    let claims_json = serde_json::to_vec(claims).map_err(|e| ErrorKind::Encoding(e.to_string()))?;
    strict_json::parse_object(&claims_json).map_err(|_| {
        ErrorKind::Encoding("claims must be a json object without duplicate members".to_owned())
    })?;

    let mut token = String::new();
    URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut token);
    Ok(token)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::*;
    use crate::test_util::{b64, claims, decode_with, key, NOW};
    use crate::Algorithm;

    #[test]
    fn access_token_round_trips_ok() {
        let token = encode(&Header::access_token(&key()), &claims(), &key()).unwrap();
        let data = decode_with::<Value>(&token, NOW, |_| {}).unwrap();
        assert_eq!(data.header, Header::access_token(&key()));
        assert_eq!(data.claims, claims());
    }

    #[test]
    fn header_segment_is_alg_typ_kid_in_order() {
        let token = encode(&Header::access_token(&key()), &claims(), &key()).unwrap();
        let header = token.split('.').next().unwrap();
        assert_eq!(header, b64(r#"{"alg":"HS256","typ":"at+jwt","kid":"k1"}"#));
    }

    #[test]
    fn segments_are_unpadded_base64url() {
        let token = encode(&Header::new(Algorithm::HS256), &claims(), &key()).unwrap();
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains(['=', '+', '/']), "{token}");
    }

    #[test]
    fn claims_not_an_object_fails() {
        let cases = [
            (json!("sub"), "string"),
            (json!([1, 2]), "array"),
            (Value::Null, "null"),
        ];
        for (claims, reason) in cases {
            let err = encode(&Header::access_token(&key()), &claims, &key()).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Encoding(_)), "{reason}");
        }
    }

    #[test]
    fn claims_with_duplicate_names_fail() {
        // `flatten` can emit a name twice; decode would refuse such a token, so encode does too.
        #[derive(Serialize)]
        struct Claims {
            sub: &'static str,
            #[serde(flatten)]
            extra: BTreeMap<&'static str, &'static str>,
        }
        let claims = Claims {
            sub: "alice",
            extra: BTreeMap::from([("sub", "admin")]),
        };
        let err = encode(&Header::access_token(&key()), &claims, &key()).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Encoding(_)));
    }

    #[test]
    fn claims_that_fail_to_serialize_fail() {
        let claims = BTreeMap::from([((1, 2), "tuple keys are not json")]);
        let err = encode(&Header::access_token(&key()), &claims, &key()).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Encoding(_)));
    }
}
