//! JSON Web Keys (RFC 7517) for the symmetric keys this crate uses: auth-api publishes its key
//! ring with them and the filter reads them back into a [`KeySet`]. Serving or fetching JWK
//! sets, and keeping secrets out of public ones, is the callers' job.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::error::{redacted, ErrorKind, Result};
use crate::key::Key;
use crate::key_set::KeySet;
use crate::strict_json;

/// One JWK. Members other than these are ignored on input; empty strings are left out on
/// output. `Debug` never shows `k`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type, e.g. `"oct"` (RFC 7518 §6.4), `"OKP"`, `"EC"`. Required.
    pub kty: String,
    /// Key id. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kid: String,
    /// The one algorithm the key is for, e.g. `"HS256"`. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub alg: String,
    /// The secret of an `oct` key, base64url without padding. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub k: String,
    /// Intended use, `"sig"` for signatures; the JSON name is `use`. None when absent.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A JWK Set, `{"keys": […]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys, in publication order.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// The JWK of `key`, secret included: `kty` `"oct"`, its `kid`, `alg` `"HS256"`, `use` `"sig"`.
    pub fn from_key(key: &Key) -> Jwk {
        Jwk {
            kty: "oct".to_owned(),
            kid: key.kid().to_owned(),
            alg: key.algorithm().as_str().to_owned(),
            k: URL_SAFE_NO_PAD.encode(key.secret()),
            use_: Some("sig".to_owned()),
        }
    }

    /// The key this JWK describes, or `None` if it is not a signing key of a supported type
    /// and algorithm, which is skipped so that sets can gain asymmetric keys later.
    fn to_key(&self) -> Result<Option<Key>> {
        let is_signing_key = self.use_.as_deref().is_none_or(|use_| use_ == "sig");
        if self.kty != "oct" || !is_signing_key {
            return Ok(None);
        }
        // An oct key without alg would be usable with any HMAC: refuse rather than guess.
        if self.alg.is_empty() {
            return Err(invalid_key(format!("oct key `{}` has no alg", self.kid)));
        }
        let Ok(alg) = self.alg.parse::<Algorithm>() else {
            return Ok(None);
        };
        let secret = URL_SAFE_NO_PAD
            .decode(&self.k)
            .map_err(|_| invalid_key(format!("key `{}`: k is not base64url", self.kid)))?;
        match alg {
            Algorithm::HS256 => Key::hs256(self.kid.as_str(), &secret).map(Some),
        }
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kty", &self.kty)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("k", &"[redacted]")
            .field("use_", &self.use_)
            .finish()
    }
}

impl From<&KeySet> for JwkSet {
    /// All keys of the set as JWKs, secrets included, in `kid` order.
    fn from(keys: &KeySet) -> Self {
        JwkSet {
            keys: keys.iter().map(Jwk::from_key).collect(),
        }
    }
}

impl KeySet {
    /// The supported keys of `set` (`oct`/`HS256`, `use` absent or `"sig"`); others are skipped.
    /// An `oct` key without `alg` or `kid`, with a bad `k` or a secret under 32 bytes, or two
    /// supported keys with the same `kid`, fail with [`ErrorKind::InvalidKey`].
    pub fn from_jwk_set(set: &JwkSet) -> Result<KeySet> {
        let mut keys = KeySet::default();
        for jwk in &set.keys {
            let Some(key) = jwk.to_key()? else { continue };
            if keys.get(key.kid()).is_some() {
                return Err(invalid_key(format!("duplicate key id `{}`", key.kid())));
            }
            keys.insert(key);
        }
        Ok(keys)
    }

    /// Parses a JWK Set document and keeps its supported keys, as [`KeySet::from_jwk_set`].
    /// Malformed JSON is [`ErrorKind::InvalidJson`] or [`ErrorKind::DuplicateMember`]; a
    /// document of the wrong shape is [`ErrorKind::InvalidKey`].
    pub fn from_jwks_json(json: &[u8]) -> Result<KeySet> {
        let document = Value::Object(strict_json::parse_object(json)?);
        let set: JwkSet = serde_json::from_value(document)
            .map_err(|e| invalid_key(format!("jwk set: {}", redacted(&e))))?;
        Self::from_jwk_set(&set)
    }
}

fn invalid_key(why: String) -> crate::Error {
    ErrorKind::InvalidKey(why).into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn oct(kid: &str) -> Value {
        json!({ "kty": "oct", "kid": kid, "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET), "use": "sig" })
    }

    fn parse(keys: Vec<Value>) -> Result<KeySet> {
        KeySet::from_jwks_json(json!({ "keys": keys }).to_string().as_bytes())
    }

    fn kind(keys: Vec<Value>) -> ErrorKind {
        parse(keys).unwrap_err().into_kind()
    }

    #[test]
    fn from_key_publishes_oct_hs256_sig() {
        let jwk = Jwk::from_key(&Key::hs256("k1", SECRET).unwrap());
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json, oct("k1"));
        assert!(!jwk.k.contains('='), "k has no padding");
    }

    #[test]
    fn key_set_round_trips_through_json() {
        let keys: KeySet = [
            Key::hs256("a", SECRET).unwrap(),
            Key::hs256("b", &[3; 40]).unwrap(),
        ]
        .into_iter()
        .collect();
        let json = serde_json::to_vec(&JwkSet::from(&keys)).unwrap();
        let parsed = KeySet::from_jwks_json(&json).unwrap();
        assert_eq!(parsed.kids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(parsed.get("b").unwrap().secret(), &[3; 40]);
    }

    #[test]
    fn debug_redacts_k() {
        let jwk = Jwk::from_key(&Key::hs256("k1", SECRET).unwrap());
        let debug = format!(
            "{jwk:?} {:?}",
            JwkSet {
                keys: vec![jwk.clone()]
            }
        );
        assert!(!debug.contains(&jwk.k), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
    }

    #[test]
    fn unsupported_keys_are_skipped() {
        let keys = vec![
            oct("k1"),
            json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "ed", "alg": "EdDSA" }),
            json!({ "kty": "RSA", "n": "0vx7", "e": "AQAB", "kid": "rsa", "alg": "RS256", "use": "sig" }),
            json!({ "kty": "oct", "kid": "h512", "alg": "HS512", "k": URL_SAFE_NO_PAD.encode([1; 64]) }),
            json!({ "kty": "oct", "kid": "enc", "alg": "HS256", "use": "enc", "k": "AA" }),
        ];
        let set = parse(keys).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["k1"]);
    }

    #[test]
    fn oct_key_without_use_ok() {
        let mut jwk = oct("k1");
        jwk.as_object_mut().unwrap().remove("use");
        assert_eq!(parse(vec![jwk]).unwrap().len(), 1);
    }

    #[test]
    fn empty_set_ok() {
        assert!(parse(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn broken_oct_keys_fail() {
        let mut padded = oct("k1");
        padded["k"] = json!(URL_SAFE_NO_PAD.encode(SECRET) + "=");
        let cases = [
            (
                json!({ "kty": "oct", "kid": "k1", "alg": "HS256", "k": "not base64!" }),
                "bad k",
            ),
            (padded, "padded k"),
            (
                json!({ "kty": "oct", "kid": "k1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode([1; 31]) }),
                "31-byte secret",
            ),
            (json!({ "kty": "oct", "kid": "k1", "alg": "HS256" }), "no k"),
            (
                json!({ "kty": "oct", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET) }),
                "no kid",
            ),
            (
                json!({ "kty": "oct", "kid": "k1", "k": URL_SAFE_NO_PAD.encode(SECRET) }),
                "no alg",
            ),
        ];
        for (jwk, reason) in cases {
            assert!(
                matches!(kind(vec![jwk]), ErrorKind::InvalidKey(_)),
                "{reason}"
            );
        }
    }

    #[test]
    fn duplicate_kid_fails() {
        assert!(matches!(
            kind(vec![oct("k1"), oct("k1")]),
            ErrorKind::InvalidKey(_)
        ));
    }

    #[test]
    fn malformed_documents_fail() {
        let invalid_key = ErrorKind::InvalidKey(String::new());
        let cases: [(&[u8], ErrorKind, &str); 5] = [
            (b"not json", ErrorKind::InvalidJson, "not json"),
            (b"[]", ErrorKind::InvalidJson, "not an object"),
            (
                br#"{"keys":[],"keys":[]}"#,
                ErrorKind::DuplicateMember,
                "duplicate member",
            ),
            (br#"{"kids":[]}"#, invalid_key.clone(), "no keys member"),
            (
                br#"{"keys":[{"kty":"oct","k":12345678}]}"#,
                invalid_key,
                "k not a string",
            ),
        ];
        for (json, expected, reason) in cases {
            let err = KeySet::from_jwks_json(json).unwrap_err();
            let same_kind = std::mem::discriminant(err.kind()) == std::mem::discriminant(&expected);
            assert!(same_kind, "{reason}: {err}");
            assert!(!err.to_string().contains("12345678"), "{reason}: {err}");
        }
    }
}
