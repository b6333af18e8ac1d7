//! Verifying and reading compact JWS tokens. The order of the checks is the security design:
//! everything an attacker controls before the signature (size, shape, header) is refused as
//! early and as cheaply as possible, the alg allow-list comes before any cryptography, and the
//! payload is parsed only once its signature has verified.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{redacted, ErrorKind, Result};
use crate::header::Header;
use crate::key_set::KeySet;
use crate::strict_json;
use crate::validation::Validation;
use crate::verifier::{RustCrypto, Verifier};

/// A verified token: its header and its claims deserialized into `C`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenData<C> {
    /// The verified header.
    pub header: Header,
    /// The verified and validated claims.
    pub claims: C,
}

/// Verifies `token` with a key from `keys` and validates it against `validation` at `now`
/// (seconds since the Unix epoch).
///
/// Checks run in this order, each failing with its own [`ErrorKind`]: length; three segments;
/// header base64url and JSON (no duplicate members); `alg` allowed; `typ`; no `crit`; key by
/// `kid`; key algorithm; signature (constant time); payload base64url and JSON; `exp`, `nbf`,
/// `iat`, `iss`, `aud`, required claims; deserialization into `C`. Header members that point at
/// keys (`jku`, `x5u`, `x5c`, `jwk`) are ignored. Never panics, whatever the input.
pub fn decode<C: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    validation: &Validation,
    now: u64,
) -> Result<TokenData<C>> {
    decode_with_verifier(token, keys, validation, now, &RustCrypto)
}

/// [`decode`], with signatures checked by `verifier` instead of this crate's own crypto. The
/// signature's size is checked against the key before `verifier` is asked.
pub fn decode_with_verifier<C: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    validation: &Validation,
    now: u64,
    verifier: &dyn Verifier,
) -> Result<TokenData<C>> {
    if token.len() > validation.max_token_len {
        return Err(ErrorKind::TooLarge.into());
    }
    let (signing_input, signature) = token.rsplit_once('.').ok_or(ErrorKind::InvalidFormat)?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(ErrorKind::InvalidFormat)?;
    if payload.contains('.') {
        return Err(ErrorKind::InvalidFormat.into());
    }

    let header = strict_json::parse_object(&base64url(header)?)?;
    let header = Header::from_json(&header, validation)?;
    let key = keys.select(header.kid.as_deref())?;
    if key.algorithm() != header.alg {
        return Err(ErrorKind::KeyAlgorithmMismatch.into());
    }
    let signature = base64url(signature)?;
    if signature.len() != key.signature_len() {
        return Err(ErrorKind::InvalidSignature.into());
    }
    verifier.verify(key, signing_input.as_bytes(), &signature)?;

    let claims = strict_json::parse_object(&base64url(payload)?)?;
    validation.check_claims(&claims, now)?;
    let claims = serde_json::from_value(Value::Object(claims))
        .map_err(|e| ErrorKind::InvalidClaims(redacted(&e)))?;
    Ok(TokenData { header, claims })
}

/// Strict base64url: the URL-safe alphabet, no padding, no whitespace, zero trailing bits.
fn base64url(segment: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| ErrorKind::InvalidBase64.into())
}

#[cfg(test)]
mod tests {
    //! Format, header, key and signature grid, through `decode`.

    use serde::Deserialize;
    use serde_json::{json, Value};

    use super::*;
    use crate::test_util::{
        b64, claims, decode_with, key, keys, sign_segments, token, token_with_claims, validation,
        HEADER, NOW,
    };
    use crate::{encode, Algorithm, Key};

    fn decode_kind(token: &str) -> ErrorKind {
        decode_with::<Value>(token, NOW, |_| {})
            .unwrap_err()
            .into_kind()
    }

    fn valid() -> String {
        token_with_claims(&claims())
    }

    fn with_header(header: Value) -> String {
        token(Some(&header.to_string()), &claims().to_string())
    }

    fn segments(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn valid_token_ok() {
        let data = decode_with::<Value>(&valid(), NOW, |_| {}).unwrap();
        assert_eq!(data.header.alg, Algorithm::HS256);
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.header.kid.as_deref(), Some("k1"));
        assert_eq!(data.claims, claims());
    }

    #[test]
    fn typed_claims_ok() {
        #[derive(Deserialize)]
        struct Claims {
            sub: String,
            roles: Vec<String>,
            exp: u64,
        }
        let data = decode_with::<Claims>(&valid(), NOW, |_| {}).unwrap();
        assert_eq!(
            (data.claims.sub.as_str(), data.claims.exp),
            ("user-1", NOW + 900)
        );
        assert_eq!(data.claims.roles, ["user"]);
    }

    #[test]
    fn claims_wrong_shape_fails_without_quoting_token() {
        #[derive(Debug, Deserialize)]
        struct Claims {
            #[allow(dead_code, reason = "only deserialized")]
            email: u64,
        }
        let err = decode_with::<Claims>(&valid(), NOW, |_| {}).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidClaims(_)));
        assert!(!err.to_string().contains("a@example.com"), "{err}");
    }

    #[test]
    fn rfc_7515_appendix_a1_example_ok() {
        // The example's header has typ "JWT" and no kid, and its payload contains CRLFs.
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let secret = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let keys = [Key::hs256("rfc", &secret).unwrap()].into_iter().collect();
        let validation = Validation {
            required_typ: Some("JWT".to_owned()),
            ..Validation::default()
        };
        let data = decode::<Value>(token, &keys, &validation, 1_300_819_300).unwrap();
        assert_eq!(data.claims["iss"], "joe");
        assert_eq!(data.claims["http://example.com/is_root"], true);
    }

    #[test]
    fn token_over_size_limit_fails() {
        let token = valid();
        let result = decode_with::<Value>(&token, NOW, |v| v.max_token_len = token.len() - 1);
        assert!(matches!(result.unwrap_err().kind(), ErrorKind::TooLarge));
        assert!(decode_with::<Value>(&token, NOW, |v| v.max_token_len = token.len()).is_ok());
    }

    #[test]
    fn huge_garbage_fails_before_parsing() {
        assert!(matches!(
            decode_kind(&"a".repeat(1 << 20)),
            ErrorKind::TooLarge
        ));
    }

    #[test]
    fn wrong_segment_count_fails() {
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let cases = [
            (String::new(), "empty token"),
            (h.clone(), "one segment"),
            (format!("{h}.{p}"), "two segments"),
            (format!("{h}.{p}.{s}."), "four segments, trailing dot"),
            (format!("{h}.{p}.{s}.{s}"), "four segments"),
            (format!("{h}..{p}.{s}"), "empty middle segment"),
        ];
        for (token, reason) in cases {
            assert!(
                matches!(decode_kind(&token), ErrorKind::InvalidFormat),
                "{reason}"
            );
        }
    }

    #[test]
    fn five_segments_fails() {
        // A JWE compact serialization: header.key.iv.ciphertext.tag.
        let jwe = format!("{}.a.b.c.d", b64(r#"{"alg":"dir","enc":"A256GCM"}"#));
        assert!(matches!(decode_kind(&jwe), ErrorKind::InvalidFormat));
    }

    #[test]
    fn padded_base64_fails() {
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        assert_ne!(h.len() % 4, 0, "the header needs padding for this test");
        let padding = "=".repeat(4 - h.len() % 4);
        let cases = [
            (format!("{h}{padding}.{p}.{s}"), "padded header"),
            (format!("{h}.{p}.{s}="), "padded signature"),
        ];
        for (token, reason) in cases {
            assert!(
                matches!(decode_kind(&token), ErrorKind::InvalidBase64),
                "{reason}"
            );
        }
    }

    #[test]
    fn non_base64url_characters_fail() {
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let cases = [
            (
                format!("{}+{}.{p}.{s}", &h[..4], &h[5..]),
                "standard alphabet +",
            ),
            (
                format!("{}/{}.{p}.{s}", &h[..4], &h[5..]),
                "standard alphabet /",
            ),
            (format!(" {h}.{p}.{s}"), "leading space"),
            (format!("{h}.{p}.{s}\n"), "trailing newline"),
            (format!("{}é{}.{p}.{s}", &h[..4], &h[6..]), "non-ascii"),
            (format!("{h}.{p}.{s}\0"), "nul byte"),
        ];
        for (token, reason) in cases {
            assert!(
                matches!(decode_kind(&token), ErrorKind::InvalidBase64),
                "{reason}"
            );
        }
    }

    #[test]
    fn non_canonical_trailing_bits_fail() {
        // The last character of a segment whose length is not a multiple of 4 carries unused
        // low bits that must be zero; setting one gives a second spelling of the same bytes.
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let last = ALPHABET.find(s.chars().last().unwrap()).unwrap();
        assert_eq!(last & 1, 0, "a canonical encoding has zero trailing bits");
        let altered = ALPHABET.as_bytes()[last | 1] as char;
        let token = format!("{h}.{p}.{}{altered}", &s[..s.len() - 1]);
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidBase64));
    }

    #[test]
    fn header_not_a_json_object_fails() {
        let cases = [
            (b64("not json"), "not json"),
            (b64("[]"), "array"),
            (b64(""), "empty"),
            (b64(r#"{"alg":"HS256"} "#.repeat(2)), "two objects"),
            (
                b64(format!(r#"{{"a":{}}}"#, "[".repeat(500))),
                "nested too deep",
            ),
        ];
        for (header, reason) in cases {
            let token = sign_segments(&header, &b64(claims().to_string()), &key());
            assert!(
                matches!(decode_kind(&token), ErrorKind::InvalidJson),
                "{reason}"
            );
        }
    }

    #[test]
    fn duplicate_header_member_fails() {
        let header = r#"{"alg":"HS256","typ":"at+jwt","kid":"k1","kid":"k2"}"#;
        let token = token(Some(header), &claims().to_string());
        assert!(matches!(decode_kind(&token), ErrorKind::DuplicateMember));
    }

    #[test]
    fn duplicate_alg_header_member_fails() {
        let header = r#"{"alg":"none","typ":"at+jwt","alg":"HS256"}"#;
        let token = token(Some(header), &claims().to_string());
        assert!(matches!(decode_kind(&token), ErrorKind::DuplicateMember));
    }

    #[test]
    fn alg_none_fails() {
        let header = b64(r#"{"alg":"none","typ":"at+jwt","kid":"k1"}"#);
        let token = format!("{header}.{}.", b64(claims().to_string()));
        assert!(matches!(
            decode_kind(&token),
            ErrorKind::AlgorithmNotAllowed
        ));
    }

    #[test]
    fn alg_of_another_key_type_fails_before_crypto() {
        // SECURITY.md B 7: the HS256 key k1 never verifies a token that claims RS256, ES256 or
        // EdDSA, whatever its signature.
        for alg in ["RS256", "ES256", "EdDSA"] {
            let token = with_header(json!({ "alg": alg, "typ": "at+jwt", "kid": "k1" }));
            assert!(
                matches!(decode_kind(&token), ErrorKind::KeyAlgorithmMismatch),
                "{alg}"
            );
        }
    }

    #[test]
    fn alg_outside_allow_list_fails() {
        let token = with_header(json!({ "alg": "HS256", "typ": "at+jwt", "kid": "k1" }));
        let err = decode_with::<Value>(&token, NOW, |v| v.algorithms = vec![Algorithm::ES256])
            .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::AlgorithmNotAllowed));
    }

    #[test]
    fn alg_not_allowed_fails() {
        let cases = [
            (json!({ "typ": "at+jwt", "kid": "k1" }), "missing"),
            (json!({ "alg": null, "typ": "at+jwt", "kid": "k1" }), "null"),
            (
                json!({ "alg": 256, "typ": "at+jwt", "kid": "k1" }),
                "not a string",
            ),
            (
                json!({ "alg": ["HS256"], "typ": "at+jwt", "kid": "k1" }),
                "array",
            ),
            (
                json!({ "alg": "hs256", "typ": "at+jwt", "kid": "k1" }),
                "lowercase",
            ),
            (
                json!({ "alg": "HS512", "typ": "at+jwt", "kid": "k1" }),
                "unsupported",
            ),
            (
                json!({ "alg": "None", "typ": "at+jwt", "kid": "k1" }),
                "none, capitalised",
            ),
        ];
        for (header, reason) in cases {
            assert!(
                matches!(
                    decode_kind(&with_header(header)),
                    ErrorKind::AlgorithmNotAllowed
                ),
                "{reason}"
            );
        }
    }

    #[test]
    fn alg_outside_allow_list_fails_before_signature() {
        let mut token = valid();
        token.push_str("garbage");
        let result = decode_with::<Value>(&token, NOW, |v| v.algorithms.clear());
        assert!(matches!(
            result.unwrap_err().kind(),
            ErrorKind::AlgorithmNotAllowed
        ));
    }

    #[test]
    fn typ_at_jwt_ok() {
        assert!(decode_with::<Value>(&valid(), NOW, |_| {}).is_ok());
    }

    #[test]
    fn typ_uppercase_application_prefix_ok() {
        let token =
            with_header(json!({ "alg": "HS256", "typ": "APPLICATION/AT+JWT", "kid": "k1" }));
        let data = decode_with::<Value>(&token, NOW, |_| {}).unwrap();
        assert_eq!(data.header.typ.as_deref(), Some("APPLICATION/AT+JWT"));
    }

    #[test]
    fn typ_jwt_fails() {
        let token = with_header(json!({ "alg": "HS256", "typ": "JWT", "kid": "k1" }));
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidType));
    }

    #[test]
    fn typ_other_fails() {
        let cases = [
            (json!("rt+jwt"), "a refresh token"),
            (json!("id_token+jwt"), "an id token"),
            (json!("text/at+jwt"), "another media type"),
            (json!(1), "not a string"),
            (Value::Null, "null"),
        ];
        for (typ, reason) in cases {
            let token = with_header(json!({ "alg": "HS256", "typ": typ, "kid": "k1" }));
            assert!(
                matches!(decode_kind(&token), ErrorKind::InvalidType),
                "{reason}"
            );
        }
    }

    #[test]
    fn typ_missing_fails() {
        let token = with_header(json!({ "alg": "HS256", "kid": "k1" }));
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidType));
    }

    #[test]
    fn typ_missing_when_not_required_ok() {
        let token = with_header(json!({ "alg": "HS256", "kid": "k1" }));
        assert!(decode_with::<Value>(&token, NOW, |v| v.required_typ = None).is_ok());
    }

    #[test]
    fn crit_header_fails() {
        let cases = [
            (json!(["exp"]), "an extension we do not understand"),
            (json!([]), "empty, which RFC 7515 forbids anyway"),
            (Value::Null, "null"),
        ];
        for (crit, reason) in cases {
            let token =
                with_header(json!({ "alg": "HS256", "typ": "at+jwt", "kid": "k1", "crit": crit }));
            assert!(
                matches!(decode_kind(&token), ErrorKind::UnsupportedCritical),
                "{reason}"
            );
        }
    }

    #[test]
    fn kid_unknown_fails() {
        let cases = [
            ("k2", "another key"),
            ("K1", "case differs"),
            ("k1 ", "trailing space"),
            ("", "empty"),
        ];
        for (kid, reason) in cases {
            let token = with_header(json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }));
            assert!(
                matches!(decode_kind(&token), ErrorKind::UnknownKey),
                "{reason}"
            );
        }
    }

    #[test]
    fn kid_with_path_traversal_fails() {
        let token =
            with_header(json!({ "alg": "HS256", "typ": "at+jwt", "kid": "../../dev/null" }));
        assert!(matches!(decode_kind(&token), ErrorKind::UnknownKey));
    }

    #[test]
    fn kid_hostile_values_fail() {
        let long = "k".repeat(10 * 1024);
        let cases = [
            ("' OR 1=1 --", "sql injection"),
            ("k1\0", "nul byte"),
            ("k1\u{202e}", "bidi override"),
            (long.as_str(), "10 KiB"),
        ];
        for (kid, reason) in cases {
            let token = with_header(json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }));
            let result = decode_with::<Value>(&token, NOW, |v| v.max_token_len = usize::MAX);
            assert!(
                matches!(result.unwrap_err().kind(), ErrorKind::UnknownKey),
                "{reason}"
            );
        }
    }

    #[test]
    fn kid_not_a_string_fails() {
        for kid in [json!(1), json!(["k1"]), Value::Null] {
            let token = with_header(json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }));
            assert!(
                matches!(decode_kind(&token), ErrorKind::UnknownKey),
                "{kid}"
            );
        }
    }

    #[test]
    fn kid_missing_with_single_key_ok() {
        let token = with_header(json!({ "alg": "HS256", "typ": "at+jwt" }));
        let data = decode_with::<Value>(&token, NOW, |_| {}).unwrap();
        assert_eq!(data.header.kid, None);
    }

    #[test]
    fn kid_missing_with_several_keys_fails() {
        let token = with_header(json!({ "alg": "HS256", "typ": "at+jwt" }));
        let mut keys = keys();
        keys.insert(Key::hs256("k2", &[7; 32]).unwrap());
        let result = decode::<Value>(&token, &keys, &validation(), NOW);
        assert!(matches!(
            result.unwrap_err().kind(),
            ErrorKind::MissingKeyId
        ));
    }

    #[test]
    fn kid_selects_among_several_keys_ok() {
        let other = Key::hs256("k2", &[7; 32]).unwrap();
        let token = encode(&crate::Header::access_token(&other), &claims(), &other).unwrap();
        let keys: KeySet = [key(), other].into_iter().collect();
        assert!(decode::<Value>(&token, &keys, &validation(), NOW).is_ok());
    }

    #[test]
    fn empty_key_set_fails() {
        let result = decode::<Value>(&valid(), &KeySet::default(), &validation(), NOW);
        assert!(matches!(result.unwrap_err().kind(), ErrorKind::UnknownKey));
    }

    #[test]
    fn jku_header_ignored_signature_still_checked() {
        // The attacker points every key-bearing header at their own key and signs with it.
        let attacker = Key::hs256("k1", b"attacker-secret-attacker-secret!").unwrap();
        let header = json!({
            "alg": "HS256", "typ": "at+jwt", "kid": "k1",
            "jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert.pem",
            "x5c": ["MIIB"], "jwk": { "kty": "oct", "k": b64(b"attacker-secret-attacker-secret!") },
        });
        let token = sign_segments(
            &b64(header.to_string()),
            &b64(claims().to_string()),
            &attacker,
        );
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidSignature));
    }

    #[test]
    fn jku_x5u_x5c_jwk_headers_with_our_signature_ok() {
        let header = json!({
            "alg": "HS256", "typ": "at+jwt", "kid": "k1", "jku": "https://evil.example/jwks.json",
            "x5u": "https://evil.example/cert.pem", "x5c": ["MIIB"], "jwk": { "kty": "oct" },
        });
        assert!(decode_with::<Value>(&with_header(header), NOW, |_| {}).is_ok());
    }

    #[test]
    fn flipped_payload_bit_fails() {
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let mut payload = URL_SAFE_NO_PAD.decode(&p).unwrap();
        payload[10] ^= 0x01;
        let token = format!("{h}.{}.{s}", b64(payload));
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidSignature));
    }

    #[test]
    fn replaced_claims_with_original_signature_fails() {
        let [h, _, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let mut claims = claims();
        claims["roles"] = json!(["admin"]);
        let token = format!("{h}.{}.{s}", b64(claims.to_string()));
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidSignature));
    }

    #[test]
    fn truncated_signature_fails() {
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let signature = URL_SAFE_NO_PAD.decode(&s).unwrap();
        let cases = [
            (b64(&signature[..31]), "one byte short"),
            (b64(&signature[..16]), "half"),
            (String::new(), "empty"),
        ];
        for (signature, reason) in cases {
            let token = format!("{h}.{p}.{signature}");
            assert!(
                matches!(decode_kind(&token), ErrorKind::InvalidSignature),
                "{reason}"
            );
        }
    }

    #[test]
    fn signature_with_extra_bytes_fails() {
        let [h, p, s] = <[String; 3]>::try_from(segments(&valid())).unwrap();
        let mut signature = URL_SAFE_NO_PAD.decode(&s).unwrap();
        signature.push(0);
        let token = format!("{h}.{p}.{}", b64(signature));
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidSignature));
    }

    #[test]
    fn signature_by_other_key_with_same_kid_fails() {
        let other = Key::hs256("k1", &[9; 32]).unwrap();
        let token = encode(&crate::Header::access_token(&other), &claims(), &other).unwrap();
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidSignature));
    }

    #[test]
    fn signature_checked_before_claims() {
        let mut claims = claims();
        claims["exp"] = json!(1);
        let other = Key::hs256("k1", &[9; 32]).unwrap();
        let token = encode(&crate::Header::access_token(&other), &claims, &other).unwrap();
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidSignature));
    }

    #[test]
    fn payload_bad_base64_with_valid_signature_fails() {
        let token = sign_segments(&b64(HEADER), "not*base64", &key());
        assert!(matches!(decode_kind(&token), ErrorKind::InvalidBase64));
    }

    #[test]
    fn payload_not_a_json_object_with_valid_signature_fails() {
        let cases = [
            ("[]", "array"),
            ("\"exp\"", "string"),
            ("{", "truncated"),
            ("", "empty"),
        ];
        for (payload, reason) in cases {
            assert!(
                matches!(decode_kind(&token(None, payload)), ErrorKind::InvalidJson),
                "{reason}"
            );
        }
    }

    fn public_set(alg: Algorithm) -> (Key, KeySet) {
        let pair = crate::test_util::key_pair(alg, "p1");
        let public = [pair.to_public().unwrap()].into_iter().collect();
        (pair, public)
    }

    #[test]
    fn every_algorithm_round_trips_through_its_public_key_ok() {
        for alg in Algorithm::ALL {
            let (pair, public) = if alg == Algorithm::HS256 {
                let key = Key::hs256("p1", &[5; 32]).unwrap();
                (key.clone(), [key].into_iter().collect())
            } else {
                public_set(alg)
            };
            let token = encode(&crate::Header::access_token(&pair), &claims(), &pair).unwrap();
            let data = decode::<Value>(&token, &public, &validation(), NOW).unwrap();
            assert_eq!((data.header.alg, data.claims), (alg, claims()), "{alg}");
        }
    }

    #[test]
    fn hs256_keyed_with_a_public_key_fails() {
        // SECURITY.md B 7: the classic confusion, an HMAC over the token keyed with the bytes
        // of the published public key, in every form a verifier might hold them.
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let (pair, public) = public_set(alg);
            let jwk = serde_json::to_string(&crate::Jwk::public(&pair).unwrap()).unwrap();
            let forms = [pair.public_key_der().unwrap().to_vec(), jwk.into_bytes()];
            for bytes in forms {
                let forged = Key::hs256("p1", &bytes).unwrap();
                let token =
                    encode(&crate::Header::access_token(&forged), &claims(), &forged).unwrap();
                let err = decode::<Value>(&token, &public, &validation(), NOW).unwrap_err();
                assert!(
                    matches!(err.kind(), ErrorKind::KeyAlgorithmMismatch),
                    "{alg}"
                );
            }
        }
    }

    #[test]
    fn valid_signature_under_another_alg_name_fails() {
        // SECURITY.md B 8: the ES256 key's genuine signature, with the header claiming EdDSA or
        // RS256, is refused before any crypto.
        let (pair, public) = public_set(Algorithm::ES256);
        for alg in ["EdDSA", "RS256", "HS256"] {
            let header = json!({ "alg": alg, "typ": "at+jwt", "kid": "p1" }).to_string();
            let token = sign_segments(&b64(header), &b64(claims().to_string()), &pair);
            let err = decode::<Value>(&token, &public, &validation(), NOW).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::KeyAlgorithmMismatch),
                "{alg}"
            );
        }
    }

    #[test]
    fn foreign_key_reusing_a_kid_fails() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let (_, public) = public_set(alg);
            let foreign = Key::generate("p1", alg, &mut rand_core::OsRng).unwrap();
            let token =
                encode(&crate::Header::access_token(&foreign), &claims(), &foreign).unwrap();
            let err = decode::<Value>(&token, &public, &validation(), NOW).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidSignature), "{alg}");
        }
    }

    /// A verifier that records what it was asked and answers as told.
    struct Recording {
        seen: std::cell::RefCell<Vec<(String, usize)>>,
        answer: bool,
    }

    impl crate::Verifier for Recording {
        fn verify(&self, key: &Key, _message: &[u8], signature: &[u8]) -> Result<()> {
            self.seen
                .borrow_mut()
                .push((key.kid().to_owned(), signature.len()));
            if self.answer {
                Ok(())
            } else {
                Err(ErrorKind::InvalidSignature.into())
            }
        }
    }

    #[test]
    fn verifier_decides_and_sees_only_signatures_of_the_right_size() {
        let (pair, public) = public_set(Algorithm::ES256);
        let token = encode(&crate::Header::access_token(&pair), &claims(), &pair).unwrap();
        let (signing_input, _) = token.rsplit_once('.').unwrap();
        let verify = |token: &str, answer: bool| {
            let verifier = Recording {
                seen: Default::default(),
                answer,
            };
            let result =
                decode_with_verifier::<Value>(token, &public, &validation(), NOW, &verifier);
            (result.map(|data| data.claims), verifier.seen.into_inner())
        };

        let (result, seen) = verify(&token, true);
        assert_eq!(
            (result.unwrap(), seen),
            (claims(), vec![("p1".to_owned(), 64)])
        );
        let (result, _) = verify(&token, false);
        assert!(matches!(
            result.unwrap_err().kind(),
            ErrorKind::InvalidSignature
        ));

        for size in [0, 63, 65, 256] {
            let token = format!("{signing_input}.{}", b64(vec![1; size]));
            let (result, seen) = verify(&token, true);
            assert!(
                matches!(result.unwrap_err().kind(), ErrorKind::InvalidSignature),
                "{size}"
            );
            assert!(
                seen.is_empty(),
                "a {size}-byte signature reached the verifier"
            );
        }
    }
}
