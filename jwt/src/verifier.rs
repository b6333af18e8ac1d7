//! Who checks a signature once `decode` has picked the key. By default this crate's own crypto
//! ([`RustCrypto`]); a caller with faster crypto at hand (the Envoy filter asks the host's
//! BoringSSL for ES256 and RS256) supplies its own [`Verifier`]. Everything before the signature
//! (the alg allow-list, the key's algorithm, the signature's size) stays `decode`'s, so a
//! verifier only ever sees a well-formed signature of the right size for a key of the token's
//! algorithm.

use crate::error::Result;
use crate::key::Key;

/// Checks a JWS signature over the signing input `header.payload`.
pub trait Verifier {
    /// `Ok(())` if `signature` (in its JWS form, e.g. `r || s` for ES256) is `key`'s over
    /// `message`, else [`ErrorKind::InvalidSignature`](crate::ErrorKind::InvalidSignature).
    fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> Result<()>;
}

/// This crate's own crypto: [`Key::verify`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RustCrypto;

impl Verifier for RustCrypto {
    fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> Result<()> {
        key.verify(message, signature)
    }
}
