//! One signing and verification key, bound to exactly one algorithm (RFC 8725 §3.1), with its
//! keyed MAC state computed once. Where keys come from (a key ring, a JWKS) is the caller's job.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::algorithm::Algorithm;
use crate::error::{ErrorKind, Result};

/// Shortest HS256 secret accepted: the size of the SHA-256 output (RFC 7518 §3.2).
const HS256_MIN_SECRET_LEN: usize = 32;

/// A key identified by its `kid` and bound to one [`Algorithm`]. `Debug` never shows the secret.
#[derive(Clone)]
pub struct Key {
    kid: String,
    material: Material,
}

#[derive(Clone)]
enum Material {
    // The secret is kept for `Jwk::from_key`; the MAC state holds the key already hashed into
    // its inner and outer pads, so signing and verifying only clone it.
    Hs256 {
        secret: Box<[u8]>,
        mac: Hmac<Sha256>,
    },
}

impl Key {
    /// An HS256 key. `secret` must be at least 32 bytes (RFC 7518 §3.2) and `kid` non-empty,
    /// else [`ErrorKind::InvalidKey`].
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<Key> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(ErrorKind::InvalidKey("key id is empty".to_owned()).into());
        }
        if secret.len() < HS256_MIN_SECRET_LEN {
            let why = format!("hs256 secret must be at least {HS256_MIN_SECRET_LEN} bytes");
            return Err(ErrorKind::InvalidKey(why).into());
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret)
            .map_err(|_| ErrorKind::InvalidKey("hmac rejected the secret".to_owned()))?;
        let secret = secret.into();
        Ok(Key {
            kid,
            material: Material::Hs256 { secret, mac },
        })
    }

    /// The key id, matched against the token header's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key signs and verifies with.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Hs256 { .. } => Algorithm::HS256,
        }
    }

    /// The raw secret, for publishing the key as a JWK.
    pub(crate) fn secret(&self) -> &[u8] {
        match &self.material {
            Material::Hs256 { secret, .. } => secret,
        }
    }

    /// Signs the JWS signing input `header.payload`.
    pub(crate) fn sign(&self, signing_input: &[u8]) -> Vec<u8> {
        match &self.material {
            Material::Hs256 { mac, .. } => mac
                .clone()
                .chain_update(signing_input)
                .finalize()
                .into_bytes()
                .to_vec(),
        }
    }

    /// Checks `signature` over `signing_input` in constant time.
    pub(crate) fn verify(&self, signing_input: &[u8], signature: &[u8]) -> Result<()> {
        match &self.material {
            Material::Hs256 { mac, .. } => mac
                .clone()
                .chain_update(signing_input)
                .verify_slice(signature)
                .map_err(|_| ErrorKind::InvalidSignature.into()),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm())
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn secret_of_32_bytes_ok() {
        let key = Key::hs256("k1", SECRET).unwrap();
        assert_eq!(key.kid(), "k1");
        assert_eq!(key.algorithm(), Algorithm::HS256);
        assert_eq!(key.secret(), SECRET);
    }

    #[test]
    fn secret_shorter_than_32_bytes_fails() {
        let err = Key::hs256("k1", &SECRET[..31]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidKey(_)));
    }

    #[test]
    fn empty_kid_fails() {
        let err = Key::hs256("", SECRET).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidKey(_)));
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
        let signature = key.sign(b"a.b");
        assert_eq!(signature, expected.to_vec());
        assert!(key.verify(b"a.b", &signature).is_ok());
        let err = key.verify(b"a.c", &signature).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidSignature));
        let err = key.verify(b"a.b", &signature[..31]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::InvalidSignature));
    }
}
