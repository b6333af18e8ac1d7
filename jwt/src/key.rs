//! One signing and verification key, bound to exactly one algorithm (RFC 8725 §3.1), with what
//! verifying needs computed once: the keyed MAC state, the parsed public key and its DER form.
//! Where keys come from (a key ring, a JWKS) is the caller's job; the JWK form is `jwk.rs`'s.

use std::fmt;

use hmac::{Hmac, Mac};
use p256::ecdsa::signature::{RandomizedSigner as _, Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rand_core::{CryptoRngCore, OsRng};
use rsa::signature::SignatureEncoding as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::algorithm::Algorithm;
use crate::error::{ErrorKind, Result};

/// Shortest HS256 secret accepted: the size of the SHA-256 output (RFC 7518 §3.2).
const HS256_MIN_SECRET_LEN: usize = 32;
/// Smallest RSA modulus accepted (RFC 7518 §3.3) and the size of the keys [`Key::generate`]
/// makes. The largest is the `rsa` crate's default, 4096 bits, which bounds the cost of one
/// verification.
pub(crate) const RSA_MIN_BITS: usize = 2048;
/// ES256 and Ed25519 signatures are 64 bytes (RFC 7518 §3.4, RFC 8032 §5.1.6).
const SIGNATURE_64: usize = 64;

/// A key identified by its `kid` and bound to one [`Algorithm`]. A public-key algorithm's key
/// may hold only the public half: it then verifies but cannot sign. `Debug` never shows a
/// secret.
#[derive(Clone)]
pub struct Key {
    kid: String,
    material: Material,
}

#[derive(Clone)]
enum Material {
    // The secret is kept for `to_private_bytes` and the internal JWK; the MAC state holds the key
    // already hashed into its inner and outer pads, so signing and verifying only clone it.
    // Private keys are boxed: they are large, rare (only auth-api holds them) and never copied.
    Hs256 {
        secret: Zeroizing<Vec<u8>>,
        mac: Hmac<Sha256>,
    },
    Es256 {
        public: p256::ecdsa::VerifyingKey,
        private: Option<Box<p256::ecdsa::SigningKey>>,
        der: Box<[u8]>,
    },
    EdDsa {
        public: ed25519_dalek::VerifyingKey,
        private: Option<Box<ed25519_dalek::SigningKey>>,
        der: Box<[u8]>,
    },
    Rs256 {
        public: Box<rsa::pkcs1v15::VerifyingKey<Sha256>>,
        private: Option<Box<rsa::pkcs1v15::SigningKey<Sha256>>>,
        der: Box<[u8]>,
    },
}

impl Key {
    /// An HS256 key. `secret` must be at least 32 bytes (RFC 7518 §3.2) and `kid` non-empty,
    /// else [`ErrorKind::InvalidKey`].
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Key> {
        let kid = checked_kid(kid.into())?;
        if secret.len() < HS256_MIN_SECRET_LEN {
            let why = format!("hs256 secret must be at least {HS256_MIN_SECRET_LEN} bytes");
            return Err(ErrorKind::InvalidKey(why).into());
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| invalid("hmac rejected the secret"))?;
        let secret = Zeroizing::new(secret.to_vec());
        Ok(Key {
            kid,
            material: Material::Hs256 { secret, mac },
        })
    }

    /// A new random key for `alg`: a 32-byte HS256 secret, a P-256 or Ed25519 key pair, or a
    /// 2048-bit RSA key pair.
    pub fn generate(
        kid: impl Into<String>,
        alg: Algorithm,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Key> {
        let kid = checked_kid(kid.into())?;
        let material = match alg {
            Algorithm::HS256 => {
                let mut secret = Zeroizing::new(vec![0; HS256_MIN_SECRET_LEN]);
                rng.fill_bytes(&mut secret);
                return Key::hs256(kid, &secret);
            }
            Algorithm::ES256 => es256(p256::ecdsa::SigningKey::random(rng))?,
            Algorithm::EdDSA => eddsa(ed25519_dalek::SigningKey::generate(rng))?,
            Algorithm::RS256 => rs256(
                RsaPrivateKey::new(rng, RSA_MIN_BITS).map_err(|_| invalid("rsa key generation"))?,
            )?,
        };
        Ok(Key { kid, material })
    }

    /// A key from its private material as [`Key::to_private_bytes`] gives it: the raw secret
    /// for HS256, a PKCS#8 DER private key for the others. Fails with
    /// [`ErrorKind::InvalidKey`] on material of the wrong type or size.
    pub fn from_private_bytes(kid: impl Into<String>, alg: Algorithm, bytes: &[u8]) -> Result<Key> {
        let kid = checked_kid(kid.into())?;
        let material = match alg {
            Algorithm::HS256 => return Key::hs256(kid, bytes),
            Algorithm::ES256 => es256(
                p256::ecdsa::SigningKey::from_pkcs8_der(bytes)
                    .map_err(|_| invalid("not a pkcs#8 p-256 private key"))?,
            )?,
            Algorithm::EdDSA => eddsa(
                ed25519_dalek::SigningKey::from_pkcs8_der(bytes)
                    .map_err(|_| invalid("not a pkcs#8 ed25519 private key"))?,
            )?,
            Algorithm::RS256 => rs256(
                RsaPrivateKey::from_pkcs8_der(bytes)
                    .map_err(|_| invalid("not a pkcs#8 rsa private key"))?,
            )?,
        };
        Ok(Key { kid, material })
    }

    /// A verify-only ES256 key from a validated public key.
    pub(crate) fn es256_public(kid: String, public: p256::ecdsa::VerifyingKey) -> Result<Key> {
        let der = public_der(public.to_public_key_der())?;
        let material = Material::Es256 {
            public,
            private: None,
            der,
        };
        Ok(Key { kid, material })
    }

    /// A verify-only EdDSA key from a validated public key.
    pub(crate) fn eddsa_public(kid: String, public: ed25519_dalek::VerifyingKey) -> Result<Key> {
        let der = public_der(public.to_public_key_der())?;
        let material = Material::EdDsa {
            public,
            private: None,
            der,
        };
        Ok(Key { kid, material })
    }

    /// A verify-only RS256 key; the modulus must have at least 2048 bits.
    pub(crate) fn rs256_public(kid: String, public: RsaPublicKey) -> Result<Key> {
        check_rsa_size(&public)?;
        let der = public_der(public.to_public_key_der())?;
        let material = Material::Rs256 {
            public: Box::new(rsa::pkcs1v15::VerifyingKey::new(public)),
            private: None,
            der,
        };
        Ok(Key { kid, material })
    }

    /// The key id, matched against the token header's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key signs and verifies with.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Hs256 { .. } => Algorithm::HS256,
            Material::Es256 { .. } => Algorithm::ES256,
            Material::EdDsa { .. } => Algorithm::EdDSA,
            Material::Rs256 { .. } => Algorithm::RS256,
        }
    }

    /// Whether the key can sign: HS256 keys and key pairs can, public keys alone cannot.
    pub fn can_sign(&self) -> bool {
        match &self.material {
            Material::Hs256 { .. } => true,
            Material::Es256 { private, .. } => private.is_some(),
            Material::EdDsa { private, .. } => private.is_some(),
            Material::Rs256 { private, .. } => private.is_some(),
        }
    }

    /// The private material to store: the HS256 secret, or a PKCS#8 DER private key. `None` for
    /// a public key alone.
    pub fn to_private_bytes(&self) -> Option<Zeroizing<Vec<u8>>> {
        let document = match &self.material {
            Material::Hs256 { secret, .. } => return Some(secret.clone()),
            Material::Es256 { private, .. } => private.as_ref()?.to_pkcs8_der(),
            // PKCS#8 v1 (RFC 8410 §7, what OpenSSL writes): the v2 form with the public key
            // that `ed25519-dalek` would write is refused by Python's `cryptography`.
            Material::EdDsa { private, .. } => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: private.as_ref()?.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der(),
            Material::Rs256 { private, .. } => {
                let private: &RsaPrivateKey = private.as_deref()?.as_ref();
                private.to_pkcs8_der()
            }
        };
        document.ok().map(|document| document.to_bytes())
    }

    /// The public half alone, which verifies but cannot sign; `None` for HS256, whose only key
    /// is the secret.
    pub fn to_public(&self) -> Option<Key> {
        let material = match &self.material {
            Material::Hs256 { .. } => return None,
            Material::Es256 { public, der, .. } => Material::Es256 {
                public: *public,
                private: None,
                der: der.clone(),
            },
            Material::EdDsa { public, der, .. } => Material::EdDsa {
                public: *public,
                private: None,
                der: der.clone(),
            },
            Material::Rs256 { public, der, .. } => Material::Rs256 {
                public: public.clone(),
                private: None,
                der: der.clone(),
            },
        };
        Some(Key {
            kid: self.kid.clone(),
            material,
        })
    }

    /// The public key as DER `SubjectPublicKeyInfo` (RFC 5280 §4.1), computed once, for
    /// verifiers outside this crate such as a host's crypto; `None` for HS256.
    pub fn public_key_der(&self) -> Option<&[u8]> {
        match &self.material {
            Material::Hs256 { .. } => None,
            Material::Es256 { der, .. }
            | Material::EdDsa { der, .. }
            | Material::Rs256 { der, .. } => Some(der),
        }
    }

    /// The size every valid signature of this key has, in bytes: 32 for HS256, 64 for ES256
    /// and EdDSA, the modulus size for RS256.
    pub fn signature_len(&self) -> usize {
        match &self.material {
            Material::Hs256 { .. } => 32,
            Material::Es256 { .. } | Material::EdDsa { .. } => SIGNATURE_64,
            Material::Rs256 { public, .. } => {
                let public: &RsaPublicKey = public.as_ref().as_ref();
                public.size()
            }
        }
    }

    /// The public members of an EC key: the uncompressed point's `x` and `y`, 32 bytes each.
    pub(crate) fn ec_point(&self) -> Option<([u8; 32], [u8; 32])> {
        let Material::Es256 { public, .. } = &self.material else {
            return None;
        };
        let point = public.to_encoded_point(false);
        Some(((*point.x()?).into(), (*point.y()?).into()))
    }

    /// The Ed25519 public key, 32 bytes.
    pub(crate) fn okp_x(&self) -> Option<[u8; 32]> {
        match &self.material {
            Material::EdDsa { public, .. } => Some(public.to_bytes()),
            _ => None,
        }
    }

    /// The RSA modulus and public exponent, big-endian without leading zeros.
    pub(crate) fn rsa_n_e(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let Material::Rs256 { public, .. } = &self.material else {
            return None;
        };
        let public: &RsaPublicKey = public.as_ref().as_ref();
        Some((public.n().to_bytes_be(), public.e().to_bytes_be()))
    }

    /// The HS256 secret.
    pub(crate) fn secret(&self) -> Option<&[u8]> {
        match &self.material {
            Material::Hs256 { secret, .. } => Some(secret),
            _ => None,
        }
    }

    /// Signs the JWS signing input `header.payload`, in the JWS form of the algorithm's
    /// signature (RFC 7518 §3). A public key alone is [`ErrorKind::InvalidKey`].
    pub(crate) fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>> {
        let no_private = || invalid("the key has no private half");
        Ok(match &self.material {
            Material::Hs256 { mac, .. } => mac
                .clone()
                .chain_update(signing_input)
                .finalize()
                .into_bytes()
                .to_vec(),
            Material::Es256 { private, .. } => {
                let signature: p256::ecdsa::Signature =
                    private.as_ref().ok_or_else(no_private)?.sign(signing_input);
                signature.to_bytes().to_vec()
            }
            Material::EdDsa { private, .. } => private
                .as_ref()
                .ok_or_else(no_private)?
                .sign(signing_input)
                .to_bytes()
                .to_vec(),
            // With the OS's randomness, RSA signing blinds the private operation, so its timing
            // says nothing about the key.
            Material::Rs256 { private, .. } => private
                .as_deref()
                .ok_or_else(no_private)?
                .sign_with_rng(&mut OsRng, signing_input)
                .to_vec(),
        })
    }

    /// Checks `signature` over `message` with this crate's own crypto: constant time for
    /// HS256, strict Ed25519 (RFC 8032 §5.1.7, no malleable or small-order inputs). Any
    /// failure, a signature of the wrong size included, is [`ErrorKind::InvalidSignature`].
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let verified = match &self.material {
            Material::Hs256 { mac, .. } => mac
                .clone()
                .chain_update(message)
                .verify_slice(signature)
                .is_ok(),
            Material::Es256 { public, .. } => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| public.verify(message, &signature).is_ok()),
            Material::EdDsa { public, .. } => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|signature| public.verify_strict(message, &signature).is_ok()),
            Material::Rs256 { public, .. } => {
                signature.len() == self.signature_len()
                    && rsa::pkcs1v15::Signature::try_from(signature)
                        .is_ok_and(|signature| public.verify(message, &signature).is_ok())
            }
        };
        if verified {
            Ok(())
        } else {
            Err(ErrorKind::InvalidSignature.into())
        }
    }
}

/// Converts an ES256 signature from its JWS form (`r || s`, 64 bytes, RFC 7518 §3.4) to the
/// DER `ECDSA-Sig-Value` (RFC 3279 §2.2.3) that OpenSSL and BoringSSL verify. A signature of
/// another size, or with `r` or `s` zero or not below the group order, is
/// [`ErrorKind::InvalidSignature`].
pub fn es256_signature_to_der(signature: &[u8]) -> Result<Vec<u8>> {
    let signature =
        p256::ecdsa::Signature::from_slice(signature).map_err(|_| ErrorKind::InvalidSignature)?;
    Ok(signature.to_der().as_bytes().to_vec())
}

fn es256(private: p256::ecdsa::SigningKey) -> Result<Material> {
    let public = *private.verifying_key();
    Ok(Material::Es256 {
        der: public_der(public.to_public_key_der())?,
        public,
        private: Some(Box::new(private)),
    })
}

fn eddsa(private: ed25519_dalek::SigningKey) -> Result<Material> {
    let public = private.verifying_key();
    Ok(Material::EdDsa {
        der: public_der(public.to_public_key_der())?,
        public,
        private: Some(Box::new(private)),
    })
}

fn rs256(private: RsaPrivateKey) -> Result<Material> {
    private
        .validate()
        .map_err(|_| invalid("inconsistent rsa private key"))?;
    let public = private.to_public_key();
    check_rsa_size(&public)?;
    Ok(Material::Rs256 {
        der: public_der(public.to_public_key_der())?,
        public: Box::new(rsa::pkcs1v15::VerifyingKey::new(public)),
        private: Some(Box::new(rsa::pkcs1v15::SigningKey::new(private))),
    })
}

fn check_rsa_size(public: &RsaPublicKey) -> Result<()> {
    if public.n().bits() < RSA_MIN_BITS {
        let why = format!("rsa modulus must have at least {RSA_MIN_BITS} bits");
        return Err(ErrorKind::InvalidKey(why).into());
    }
    Ok(())
}

fn public_der<E>(document: std::result::Result<p256::pkcs8::Document, E>) -> Result<Box<[u8]>> {
    document
        .map(|document| document.into_vec().into_boxed_slice())
        .map_err(|_| invalid("public key does not encode"))
}

fn checked_kid(kid: String) -> Result<String> {
    if kid.is_empty() {
        return Err(invalid("key id is empty"));
    }
    Ok(kid)
}

fn invalid(why: &str) -> crate::Error {
    ErrorKind::InvalidKey(why.to_owned()).into()
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm())
            .field("can_sign", &self.can_sign())
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::key_pair;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const PUBLIC_KEY_ALGS: [Algorithm; 3] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];

    fn kind(result: Result<impl Sized>) -> ErrorKind {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(err) => err.into_kind(),
        }
    }

    #[test]
    fn secret_of_32_bytes_ok() {
        let key = Key::hs256("k1", SECRET).unwrap();
        assert_eq!(key.kid(), "k1");
        assert_eq!(key.algorithm(), Algorithm::HS256);
        assert_eq!(key.secret(), Some(SECRET));
        assert!(key.can_sign());
        assert!(key.to_public().is_none() && key.public_key_der().is_none());
    }

    #[test]
    fn secret_shorter_than_32_bytes_fails() {
        let err = Key::hs256("k1", &SECRET[..31]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidKey(_)));
    }

    #[test]
    fn empty_kid_fails() {
        for alg in Algorithm::ALL {
            let bytes = key_pair(alg, "k").to_private_bytes().unwrap();
            let err = Key::from_private_bytes("", alg, &bytes).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidKey(_)), "{alg}");
        }
        assert!(matches!(
            kind(Key::generate("", Algorithm::ES256, &mut OsRng)),
            ErrorKind::InvalidKey(_)
        ));
    }

    #[test]
    fn debug_redacts_secret() {
        let key = Key::hs256("k1", b"super-secret-value-that-is-long-enough").unwrap();
        let debug = format!("{key:?}");
        assert!(
            debug.contains("k1") && debug.contains("[redacted]"),
            "{debug}"
        );
        assert!(!debug.contains("super-secret"), "{debug}");
    }

    #[test]
    fn signature_is_hmac_sha256_and_verifies() {
        let key = Key::hs256("k1", SECRET).unwrap();
        let expected = Hmac::<Sha256>::new_from_slice(SECRET)
            .unwrap()
            .chain_update(b"a.b")
            .finalize()
            .into_bytes();
        let signature = key.sign(b"a.b").unwrap();
        assert_eq!(signature, expected.to_vec());
        assert!(key.verify(b"a.b", &signature).is_ok());
        let err = key.verify(b"a.c", &signature).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidSignature));
        let err = key.verify(b"a.b", &signature[..31]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidSignature));
    }

    #[test]
    fn every_algorithm_signs_and_verifies_its_own_signatures_only() {
        for alg in Algorithm::ALL {
            let key = key_pair(alg, "k1");
            assert_eq!(key.algorithm(), alg);
            let signature = key.sign(b"header.payload").unwrap();
            assert_eq!(signature.len(), key.signature_len(), "{alg}");
            assert!(key.verify(b"header.payload", &signature).is_ok(), "{alg}");

            let mut flipped = signature.clone();
            flipped[10] ^= 1;
            let cases = [
                (
                    b"header.payloae".as_slice(),
                    signature.clone(),
                    "other message",
                ),
                (b"header.payload".as_slice(), flipped, "one bit flipped"),
                (b"header.payload", signature[1..].to_vec(), "one byte short"),
                (
                    b"header.payload",
                    [signature.as_slice(), &[0]].concat(),
                    "one byte long",
                ),
                (b"header.payload", Vec::new(), "empty"),
            ];
            for (message, signature, reason) in cases {
                assert!(
                    matches!(
                        kind(key.verify(message, &signature)),
                        ErrorKind::InvalidSignature
                    ),
                    "{alg}: {reason}"
                );
            }
        }
    }

    #[test]
    fn signature_sizes_are_fixed_by_the_algorithm() {
        let sizes = Algorithm::ALL.map(|alg| key_pair(alg, "k").signature_len());
        assert_eq!(sizes, [64, 64, 256, 32], "ES256, EdDSA, RS256-2048, HS256");
    }

    #[test]
    fn generated_keys_differ() {
        for alg in Algorithm::ALL {
            if alg == Algorithm::RS256 {
                continue; // Covered by key_pair; a second 2048-bit key costs seconds in debug.
            }
            let a = Key::generate("a", alg, &mut OsRng).unwrap();
            let b = Key::generate("b", alg, &mut OsRng).unwrap();
            assert_ne!(
                *a.to_private_bytes().unwrap(),
                *b.to_private_bytes().unwrap(),
                "{alg}"
            );
        }
    }

    #[test]
    fn private_bytes_round_trip() {
        for alg in Algorithm::ALL {
            let key = key_pair(alg, "k1");
            let bytes = key.to_private_bytes().unwrap();
            let again = Key::from_private_bytes("k1", alg, &bytes).unwrap();
            let signature = again.sign(b"m").unwrap();
            assert!(key.verify(b"m", &signature).is_ok(), "{alg}");
            assert_eq!(again.public_key_der(), key.public_key_der(), "{alg}");
        }
    }

    #[test]
    fn private_bytes_of_another_type_fail() {
        let es256 = key_pair(Algorithm::ES256, "k").to_private_bytes().unwrap();
        let eddsa = key_pair(Algorithm::EdDSA, "k").to_private_bytes().unwrap();
        let cases = [
            (
                Algorithm::EdDSA,
                es256.to_vec(),
                "p-256 key read as ed25519",
            ),
            (Algorithm::RS256, eddsa.to_vec(), "ed25519 key read as rsa"),
            (
                Algorithm::ES256,
                eddsa.to_vec(),
                "ed25519 key read as p-256",
            ),
            (Algorithm::ES256, vec![0; 40], "garbage"),
            (Algorithm::HS256, vec![0; 16], "short secret"),
        ];
        for (alg, bytes, reason) in cases {
            assert!(
                matches!(
                    kind(Key::from_private_bytes("k", alg, &bytes)),
                    ErrorKind::InvalidKey(_)
                ),
                "{reason}"
            );
        }
    }

    #[test]
    fn ed25519_private_bytes_are_pkcs8_v1_and_v2_is_read_too() {
        let key = key_pair(Algorithm::EdDSA, "k");
        let bytes = key.to_private_bytes().unwrap();
        let parsed = ed25519_dalek::pkcs8::KeypairBytes::from_pkcs8_der(&bytes).unwrap();
        assert!(parsed.public_key.is_none(), "v1 carries no public key");
        let Material::EdDsa { private, .. } = &key.material else {
            unreachable!()
        };
        let v2 = private.as_ref().unwrap().to_pkcs8_der().unwrap();
        let again = Key::from_private_bytes("k", Algorithm::EdDSA, v2.as_bytes()).unwrap();
        assert_eq!(again.public_key_der(), key.public_key_der());
    }

    #[test]
    fn rsa_keys_under_2048_bits_fail() {
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let der = small.to_pkcs8_der().unwrap();
        let err = Key::from_private_bytes("k", Algorithm::RS256, der.as_bytes()).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidKey(why) if why.contains("2048")));
        let err = Key::rs256_public("k".to_owned(), small.to_public_key()).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidKey(_)));
    }

    #[test]
    fn public_half_verifies_but_cannot_sign() {
        for alg in PUBLIC_KEY_ALGS {
            let pair = key_pair(alg, "k1");
            let public = pair.to_public().unwrap();
            assert!(pair.can_sign() && !public.can_sign(), "{alg}");
            assert_eq!(public.kid(), "k1");
            assert!(public.to_private_bytes().is_none(), "{alg}");
            assert!(
                matches!(kind(public.sign(b"m")), ErrorKind::InvalidKey(_)),
                "{alg}"
            );
            let signature = pair.sign(b"m").unwrap();
            assert!(public.verify(b"m", &signature).is_ok(), "{alg}");
        }
    }

    #[test]
    fn public_key_der_is_the_spki_of_the_key() {
        use p256::pkcs8::DecodePublicKey as _;
        let es256 = key_pair(Algorithm::ES256, "k");
        let der = es256.public_key_der().unwrap();
        let parsed = p256::ecdsa::VerifyingKey::from_public_key_der(der).unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&es256.sign(b"m").unwrap()).unwrap();
        assert!(parsed.verify(b"m", &signature).is_ok());

        let eddsa = key_pair(Algorithm::EdDSA, "k");
        let parsed =
            ed25519_dalek::VerifyingKey::from_public_key_der(eddsa.public_key_der().unwrap());
        assert_eq!(parsed.unwrap().to_bytes(), eddsa.okp_x().unwrap());

        let rs256 = key_pair(Algorithm::RS256, "k");
        let parsed = RsaPublicKey::from_public_key_der(rs256.public_key_der().unwrap()).unwrap();
        assert_eq!(parsed.n().to_bytes_be(), rs256.rsa_n_e().unwrap().0);
    }

    #[test]
    fn es256_signature_converts_to_der_that_verifies() {
        let key = key_pair(Algorithm::ES256, "k");
        let signature = key.sign(b"m").unwrap();
        let der = es256_signature_to_der(&signature).unwrap();
        assert_eq!(der[0], 0x30, "a DER SEQUENCE");
        let parsed = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert_eq!(parsed.to_bytes().as_slice(), signature.as_slice());

        let zero_r = [[0; 32], [1; 32]].concat();
        let cases = [
            (signature[..63].to_vec(), "63 bytes"),
            ([signature.as_slice(), &[0]].concat(), "65 bytes"),
            (zero_r, "r is zero"),
            (vec![0xff; 64], "r and s above the group order"),
        ];
        for (signature, reason) in cases {
            assert!(
                matches!(
                    kind(es256_signature_to_der(&signature)),
                    ErrorKind::InvalidSignature
                ),
                "{reason}"
            );
        }
    }

    #[test]
    fn debug_never_shows_private_material() {
        for alg in Algorithm::ALL {
            let key = key_pair(alg, "k1");
            let debug = format!("{key:?}");
            let private = key.to_private_bytes().unwrap();
            let hex: String = private.iter().take(8).map(|b| format!("{b:02x}")).collect();
            assert!(
                debug.contains("[redacted]") && !debug.contains(&hex),
                "{alg}: {debug}"
            );
        }
    }
}
