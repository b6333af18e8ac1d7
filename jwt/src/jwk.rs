//! JSON Web Keys (RFC 7517, RFC 7518 §6, RFC 8037 §2): auth-api publishes its keys with them and
//! the filter reads them back into a [`KeySet`]. Every member of a supported key is validated
//! (sizes, points on the curve, minimal integers); keys of unsupported types are skipped so that
//! a set can hold them. Serving or fetching sets, and keeping secrets out of public ones, is the
//! callers' job: [`Jwk::public`] and [`JwkSet::public`] never carry a secret.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::error::{redacted, ErrorKind, Result};
use crate::key::Key;
use crate::key_set::KeySet;
use crate::strict_json;

/// One JWK. Members other than these are ignored on input, except private ones (`d`, `p`, `q`,
/// `dp`, `dq`, `qi`, `oth`), which make a public-key type's JWK invalid; empty strings are left
/// out on output. `Debug` never shows `k`.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `"EC"`, `"OKP"`, `"RSA"` or `"oct"` (RFC 7518 §6.1, RFC 8037 §2). Required.
    pub kty: String,
    /// Key id. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kid: String,
    /// The one algorithm the key is for, e.g. `"ES256"`. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub alg: String,
    /// Intended use, `"sig"` for signatures; the JSON name is `use`. None when absent.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// The curve of an `EC` or `OKP` key: `"P-256"` or `"Ed25519"`. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    /// The x coordinate of an `EC` key or the public key of an `OKP` key, base64url.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    /// The y coordinate of an `EC` key, base64url.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub y: String,
    /// The modulus of an `RSA` key, base64url of the big-endian unsigned integer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub n: String,
    /// The public exponent of an `RSA` key, base64url of the big-endian unsigned integer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub e: String,
    /// The secret of an `oct` key, base64url without padding. Empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub k: String,
    // Private members are only ever read, to refuse them: a set of public keys that carries one
    // has leaked a private key, and the gateway must never hold one.
    #[serde(default, skip_serializing)]
    d: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    p: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    q: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    dp: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    dq: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    qi: Option<IgnoredAny>,
    #[serde(default, skip_serializing)]
    oth: Option<IgnoredAny>,
}

/// A JWK Set, `{"keys": […]}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys, in publication order.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// The JWK of `key` with `kid`, `alg` and `use` `"sig"`: for HS256 `kty` `"oct"` **with the
    /// secret in `k`** (for auth-api's internal listener only), for the others the public
    /// members alone, as [`Jwk::public`].
    pub fn from_key(key: &Key) -> Jwk {
        match key.secret() {
            Some(secret) => Jwk {
                kty: "oct".to_owned(),
                k: URL_SAFE_NO_PAD.encode(secret),
                ..Self::described(key)
            },
            None => Self::public(key).unwrap_or_else(|| Self::described(key)),
        }
    }

    /// The public JWK of `key`: `EC` (`crv` `"P-256"`, `x`, `y`), `OKP` (`crv` `"Ed25519"`,
    /// `x`) or `RSA` (`n`, `e`), with `kid`, `alg` and `use` `"sig"`. `None` for HS256, whose
    /// key is a secret.
    pub fn public(key: &Key) -> Option<Jwk> {
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let jwk = match key.algorithm() {
            Algorithm::HS256 => return None,
            Algorithm::ES256 => {
                let (x, y) = key.ec_point()?;
                Jwk {
                    kty: "EC".to_owned(),
                    crv: "P-256".to_owned(),
                    x: b64(&x),
                    y: b64(&y),
                    ..Self::described(key)
                }
            }
            Algorithm::EdDSA => Jwk {
                kty: "OKP".to_owned(),
                crv: "Ed25519".to_owned(),
                x: b64(&key.okp_x()?),
                ..Self::described(key)
            },
            Algorithm::RS256 => {
                let (n, e) = key.rsa_n_e()?;
                Jwk {
                    kty: "RSA".to_owned(),
                    n: b64(&n),
                    e: b64(&e),
                    ..Self::described(key)
                }
            }
        };
        Some(jwk)
    }

    fn described(key: &Key) -> Jwk {
        Jwk {
            kid: key.kid().to_owned(),
            alg: key.algorithm().as_str().to_owned(),
            use_: Some("sig".to_owned()),
            ..Jwk::default()
        }
    }

    /// The key this JWK describes, or `None` if it is not a signing key of a supported type,
    /// curve and algorithm, which is skipped so that a set may hold other keys.
    fn to_key(&self) -> Result<Option<Key>> {
        let is_signing_key = self.use_.as_deref().is_none_or(|use_| use_ == "sig");
        if !is_signing_key {
            return Ok(None);
        }
        // The algorithm the key type and curve allow; a key of any other type or curve
        // (P-384, Ed448, X25519, …) is not ours to use.
        let implied = match (self.kty.as_str(), self.crv.as_str()) {
            ("oct", _) => Algorithm::HS256,
            ("EC", "P-256") => Algorithm::ES256,
            ("OKP", "Ed25519") => Algorithm::EdDSA,
            ("RSA", _) => Algorithm::RS256,
            _ => return Ok(None),
        };
        let alg = match self.alg.as_str() {
            // An oct key without alg would be usable with any HMAC: refuse rather than guess.
            // For the others the type and curve leave one algorithm we implement.
            "" if implied == Algorithm::HS256 => {
                return Err(invalid_key(format!("oct key `{}` has no alg", self.kid)))
            }
            "" => implied,
            alg => match alg.parse::<Algorithm>() {
                Ok(alg) if alg == implied => alg,
                Ok(alg) => {
                    let why = format!(
                        "key `{}`: alg {alg} does not fit kty {}",
                        self.kid, self.kty
                    );
                    return Err(invalid_key(why));
                }
                // Another algorithm of the family (HS512, PS256, ES384 on P-256, …).
                Err(_) => return Ok(None),
            },
        };
        if self.kid.is_empty() {
            return Err(invalid_key(format!("{} key has no kid", self.kty)));
        }
        if !alg.is_symmetric() && self.has_private_member() {
            let why = format!("key `{}` carries private key members", self.kid);
            return Err(invalid_key(why));
        }
        let kid = self.kid.clone();
        match alg {
            Algorithm::HS256 => Key::hs256(kid, &self.member("k", &self.k)?),
            Algorithm::ES256 => {
                let x = self.fixed::<32>("x", &self.x)?;
                let y = self.fixed::<32>("y", &self.y)?;
                let point =
                    p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                // Refuses points that are not on the curve, and the identity.
                let public = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| invalid_key(format!("key `{kid}`: not a point on P-256")))?;
                Key::es256_public(kid, public)
            }
            Algorithm::EdDSA => {
                let x = self.fixed::<32>("x", &self.x)?;
                let public = ed25519_dalek::VerifyingKey::from_bytes(&x)
                    .map_err(|_| invalid_key(format!("key `{kid}`: not an Ed25519 point")))?;
                if public.is_weak() {
                    return Err(invalid_key(format!("key `{kid}`: small-order Ed25519 key")));
                }
                Key::eddsa_public(kid, public)
            }
            Algorithm::RS256 => {
                let n = self.unsigned("n", &self.n)?;
                let e = self.unsigned("e", &self.e)?;
                // The crate checks the exponent (odd, at least 3, at most 33 bits) and caps the
                // modulus at 4096 bits; `Key` requires at least 2048.
                let public = rsa::RsaPublicKey::new(n, e)
                    .map_err(|_| invalid_key(format!("key `{kid}`: invalid rsa public key")))?;
                Key::rs256_public(kid, public)
            }
        }
        .map(Some)
    }

    fn has_private_member(&self) -> bool {
        [self.d, self.p, self.q, self.dp, self.dq, self.qi, self.oth]
            .iter()
            .any(Option::is_some)
    }

    /// A required base64url member, decoded.
    fn member(&self, name: &str, value: &str) -> Result<Vec<u8>> {
        if value.is_empty() {
            return Err(invalid_key(format!("key `{}` has no {name}", self.kid)));
        }
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| invalid_key(format!("key `{}`: {name} is not base64url", self.kid)))
    }

    /// A member of exactly `N` bytes (RFC 7518 §6.2.1.2: coordinates keep their leading zeros).
    fn fixed<const N: usize>(&self, name: &str, value: &str) -> Result<[u8; N]> {
        <[u8; N]>::try_from(self.member(name, value)?)
            .map_err(|_| invalid_key(format!("key `{}`: {name} must be {N} bytes", self.kid)))
    }

    /// A big-endian unsigned integer in its shortest form (RFC 7518 §6.3.1: no leading zeros).
    fn unsigned(&self, name: &str, value: &str) -> Result<rsa::BigUint> {
        let bytes = self.member(name, value)?;
        if bytes.first().is_none_or(|&first| first == 0) {
            let why = format!("key `{}`: {name} is empty or has a leading zero", self.kid);
            return Err(invalid_key(why));
        }
        Ok(rsa::BigUint::from_bytes_be(&bytes))
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwk")
            .field("kty", &self.kty)
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("use_", &self.use_)
            .field("crv", &self.crv)
            .field("k", &"[redacted]")
            .field("private_members", &self.has_private_member())
            .finish_non_exhaustive()
    }
}

impl From<&KeySet> for JwkSet {
    /// All keys of the set as [`Jwk::from_key`] gives them, **HS256 secrets included**, in
    /// `kid` order.
    fn from(keys: &KeySet) -> Self {
        JwkSet {
            keys: keys.iter().map(Jwk::from_key).collect(),
        }
    }
}

impl JwkSet {
    /// The public keys of `keys` as [`Jwk::public`] gives them, in `kid` order; HS256 keys are
    /// left out. What a public `/.well-known/jwks.json` serves.
    pub fn public(keys: &KeySet) -> JwkSet {
        JwkSet {
            keys: keys.iter().filter_map(Jwk::public).collect(),
        }
    }
}

impl KeySet {
    /// The supported keys of `set` (`use` absent or `"sig"`): `oct` with `alg` HS256, `EC` on
    /// P-256 (ES256), `OKP` on Ed25519 (EdDSA) and `RSA` of 2048 to 4096 bits (RS256); others
    /// are skipped. A supported key with a bad member, no `kid`, an `alg` its type does not
    /// allow or a private member, or two supported keys with the same `kid`, fail with
    /// [`ErrorKind::InvalidKey`].
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
        assert_eq!(parsed.get("b").unwrap().secret(), Some([3; 40].as_slice()));
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
            json!({ "kty": "RSA", "n": "0vx7", "e": "AQAB", "kid": "rsa", "alg": "PS256", "use": "sig" }),
            json!({ "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384", "alg": "ES384" }),
            json!({ "kty": "OKP", "crv": "Ed448", "x": "AA", "kid": "ed448", "alg": "EdDSA" }),
            json!({ "kty": "OKP", "crv": "X25519", "x": "AA", "kid": "x25519" }),
            json!({ "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "enc", "use": "enc" }),
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

    fn public_jwk(alg: Algorithm) -> Value {
        let key = crate::test_util::key_pair(alg, "p1");
        serde_json::to_value(Jwk::public(&key).unwrap()).unwrap()
    }

    fn with(mut jwk: Value, member: &str, value: Value) -> Value {
        jwk[member] = value;
        jwk
    }

    fn without(mut jwk: Value, member: &str) -> Value {
        jwk.as_object_mut().unwrap().remove(member);
        jwk
    }

    #[test]
    fn public_jwks_carry_exactly_the_public_members() {
        let expected = [
            (
                Algorithm::ES256,
                vec!["alg", "crv", "kid", "kty", "use", "x", "y"],
                "EC",
            ),
            (
                Algorithm::EdDSA,
                vec!["alg", "crv", "kid", "kty", "use", "x"],
                "OKP",
            ),
            (
                Algorithm::RS256,
                vec!["alg", "e", "kid", "kty", "n", "use"],
                "RSA",
            ),
        ];
        for (alg, members, kty) in expected {
            let jwk = public_jwk(alg);
            let names: Vec<&str> = jwk
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(names, members, "{alg}");
            assert_eq!(
                (jwk["kty"].as_str(), jwk["alg"].as_str()),
                (Some(kty), Some(alg.as_str()))
            );
            assert_eq!(jwk["use"], "sig");
        }
        assert_eq!(public_jwk(Algorithm::RS256)["e"], "AQAB");
        assert!(Jwk::public(&Key::hs256("h", SECRET).unwrap()).is_none());
    }

    #[test]
    fn from_key_of_a_key_pair_is_its_public_jwk() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let key = crate::test_util::key_pair(alg, "p1");
            let from_key = serde_json::to_value(Jwk::from_key(&key)).unwrap();
            assert_eq!(from_key, public_jwk(alg), "{alg}");
        }
    }

    #[test]
    fn public_set_leaves_secrets_out() {
        let keys: KeySet = [
            Key::hs256("h", SECRET).unwrap(),
            crate::test_util::key_pair(Algorithm::ES256, "e"),
            crate::test_util::key_pair(Algorithm::EdDSA, "o"),
        ]
        .into_iter()
        .collect();
        let json = serde_json::to_string(&JwkSet::public(&keys)).unwrap();
        let parsed = KeySet::from_jwks_json(json.as_bytes()).unwrap();
        assert_eq!(parsed.kids().collect::<Vec<_>>(), ["e", "o"]);
        assert!(parsed.iter().all(|key| !key.can_sign()));
        assert!(!json.contains(&URL_SAFE_NO_PAD.encode(SECRET)), "{json}");
        for member in ["\"k\"", "\"d\"", "oct"] {
            assert!(!json.contains(member), "{member} in {json}");
        }
    }

    #[test]
    fn public_keys_round_trip_and_verify_the_pairs_signatures() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let pair = crate::test_util::key_pair(alg, "p1");
            let set = parse(vec![public_jwk(alg)]).unwrap();
            let public = set.get("p1").unwrap();
            assert_eq!(public.algorithm(), alg);
            assert!(!public.can_sign());
            assert!(
                public.verify(b"m", &pair.sign(b"m").unwrap()).is_ok(),
                "{alg}"
            );
        }
    }

    #[test]
    fn alg_is_implied_by_an_asymmetric_key_type() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let set = parse(vec![without(public_jwk(alg), "alg")]).unwrap();
            assert_eq!(set.get("p1").unwrap().algorithm(), alg);
        }
    }

    #[test]
    fn rfc_8037_ed25519_example_verifies() {
        // RFC 8037 Appendix A.2 (public key) and A.4 (signature).
        let set = parse(vec![json!({
            "kty": "OKP", "crv": "Ed25519", "kid": "rfc",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        })])
        .unwrap();
        let signature = URL_SAFE_NO_PAD
            .decode("hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")
            .unwrap();
        let message = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let key = set.get("rfc").unwrap();
        assert!(key.verify(message, &signature).is_ok());
        assert!(key
            .verify(
                b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmd",
                &signature
            )
            .is_err());
    }

    #[test]
    fn rfc_7515_es256_example_verifies() {
        // RFC 7515 Appendix A.3.
        let set = parse(vec![json!({
            "kty": "EC", "crv": "P-256", "kid": "rfc",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
        })])
        .unwrap();
        let message = b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = URL_SAFE_NO_PAD
            .decode("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q")
            .unwrap();
        assert!(set.get("rfc").unwrap().verify(message, &signature).is_ok());
    }

    #[test]
    fn broken_public_keys_fail() {
        let ec = public_jwk(Algorithm::ES256);
        let okp = public_jwk(Algorithm::EdDSA);
        let rsa = public_jwk(Algorithm::RS256);
        let b64 = |bytes: &[u8]| json!(URL_SAFE_NO_PAD.encode(bytes));
        let x = URL_SAFE_NO_PAD.decode(ec["x"].as_str().unwrap()).unwrap();
        let mut y = URL_SAFE_NO_PAD.decode(ec["y"].as_str().unwrap()).unwrap();
        y[31] ^= 1;
        let n = URL_SAFE_NO_PAD.decode(rsa["n"].as_str().unwrap()).unwrap();
        let cases = [
            (with(ec.clone(), "y", b64(&y)), "EC point not on the curve"),
            (with(ec.clone(), "x", b64(&x[1..])), "EC x of 31 bytes"),
            (
                with(ec.clone(), "x", b64(&[&[0][..], &x].concat())),
                "EC x of 33 bytes",
            ),
            (
                with(with(ec.clone(), "x", b64(&[0; 32])), "y", b64(&[0; 32])),
                "EC identity",
            ),
            (without(ec.clone(), "y"), "EC without y"),
            (
                with(ec.clone(), "x", json!("not base64!")),
                "EC x not base64url",
            ),
            (
                with(ec.clone(), "alg", json!("RS256")),
                "EC key claiming RS256",
            ),
            (
                with(ec.clone(), "d", json!("AAAA")),
                "EC key with its private scalar",
            ),
            (without(ec.clone(), "kid"), "EC key without kid"),
            (with(okp.clone(), "x", b64(&[0; 31])), "OKP x of 31 bytes"),
            (
                with(okp.clone(), "x", b64(&[0; 32])),
                "OKP small-order point",
            ),
            (
                with(okp.clone(), "alg", json!("ES256")),
                "OKP key claiming ES256",
            ),
            (
                with(okp.clone(), "d", json!("AAAA")),
                "OKP key with its private key",
            ),
            (
                with(rsa.clone(), "n", b64(&[&[0][..], &n].concat())),
                "RSA n with a leading zero",
            ),
            (
                with(rsa.clone(), "n", b64(&n[..128])),
                "RSA 1024-bit modulus",
            ),
            (
                with(rsa.clone(), "e", json!("AAEAAQ")),
                "RSA e with a leading zero",
            ),
            (with(rsa.clone(), "e", json!("AQ")), "RSA e = 1"),
            (with(rsa.clone(), "e", json!("Ag")), "RSA even e"),
            (
                with(rsa.clone(), "n", b64(&[0xff; 520])),
                "RSA modulus over 4096 bits",
            ),
            (
                with(rsa.clone(), "p", json!("AAAA")),
                "RSA key with a prime",
            ),
            (
                with(rsa.clone(), "alg", json!("HS256")),
                "RSA key claiming HS256",
            ),
            (without(rsa, "e"), "RSA without e"),
        ];
        for (jwk, reason) in cases {
            assert!(
                matches!(kind(vec![jwk]), ErrorKind::InvalidKey(_)),
                "{reason}"
            );
        }
    }
}
