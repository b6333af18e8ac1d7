//! Who checks access-token signatures in auth-api: [`NativeCrypto`] (ES256 by `ring`'s P-256,
//! about five times faster than the pure-Rust `p256` that `auth-jwt` carries for the wasm
//! filter; every other algorithm by `auth-jwt`'s own [`RustCrypto`]), behind a bounded memo of
//! the signatures already verified ([`SignatureCache`]).
//!
//! Both are an `auth_jwt::Verifier`, so `auth_jwt::decode_with_verifier` still does every
//! check of SECURITY.md B itself, on every request: size, segments, header, the alg allow-list,
//! `typ`, the key by `kid`, the key's algorithm, the signature's size, then (after the
//! signature) every claim against `now`. The memo replaces only the last step's cryptography, a
//! pure function of (key, signing input, signature): it remembers the inputs that verified, so
//! it can never accept a signature that did not, nor one under another key, and it knows
//! nothing of time, sessions or revocations, which are checked afresh each time (the claims by
//! `decode`, the session, the user and the key's revocation by
//! [`crate::service::access::check_session`]).

use std::{
    collections::HashSet,
    hash::{Hash, Hasher},
    sync::{LazyLock, Mutex, PoisonError},
};

use auth_jwt::{Algorithm, ErrorKind, Key, RustCrypto, Verifier};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The verifier of `/validate` (and of bearer tokens at `/logout` and `/password`): one per
/// process, shared by every `AppState` in it (the memo is keyed by the key material itself, so
/// sharing it between rings is safe).
pub static VERIFIER: LazyLock<SignatureCache<NativeCrypto>> =
    LazyLock::new(|| SignatureCache::new(NativeCrypto, DEFAULT_CAPACITY));

/// Signatures remembered at most: 64 Ki entries of 32 bytes (a few MB with the table), about
/// an hour of distinct tokens at 18 per second. Past it, the oldest half is forgotten.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// Independent locks, so that the server's threads seldom wait for each other.
const SHARDS: usize = 16;

/// `auth-jwt`'s [`RustCrypto`], except ES256, which `ring` verifies (P-256 in assembly where
/// `ring` has it). The same acceptance rules: `r` and `s` in `[1, n-1]`, either `s`
/// (`ring`, `p256` and BoringSSL at the gateway all accept high-`s`), the point on the curve.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeCrypto;

impl Verifier for NativeCrypto {
    fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> auth_jwt::Result<()> {
        match (key.algorithm(), key.public_key_der().and_then(p256_point)) {
            (Algorithm::ES256, Some(point)) => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(message, signature)
            .map_err(|_| ErrorKind::InvalidSignature.into()),
            _ => RustCrypto.verify(key, message, signature),
        }
    }
}

/// The DER prefix of a P-256 `SubjectPublicKeyInfo` (RFC 5480): `id-ecPublicKey`,
/// `secp256r1`, then a BIT STRING of 66 bytes (no unused bits, then the uncompressed point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The uncompressed point (`04 || x || y`, 65 bytes) of a P-256 public key in DER form; `None`
/// for anything else (then [`RustCrypto`] verifies).
fn p256_point(der: &[u8]) -> Option<&[u8]> {
    let point = der.strip_prefix(&P256_SPKI_PREFIX)?;
    (point.len() == 65 && point.first() == Some(&0x04)).then_some(point)
}

/// A bounded memo over another [`Verifier`]: the inputs it verified, remembered as
/// `HMAC-SHA-256(per-process random key, algorithm, public key, signing input, signature)`,
/// so that a token presented again is not verified again. Only successes are remembered (a
/// forgery costs a full verify each time, as without the memo), HS256 is never remembered (an
/// HMAC costs less than the memo's own), and entries are compared in constant time.
///
/// Bounded by two generations: new entries go to the current one; when it holds half the
/// capacity it becomes the previous one, whose entries move back to the current one when used,
/// and the old previous one is dropped. So at most `capacity` entries, and a token in use stays.
#[derive(Debug)]
pub struct SignatureCache<V> {
    inner: V,
    mac: Hmac<Sha256>,
    /// Entries per generation and shard.
    generation_len: usize,
    shards: Vec<Mutex<Generations>>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashSet<Entry>,
    previous: HashSet<Entry>,
}

/// A MAC over verified inputs. Compared in constant time; its hash is the first 8 bytes of
/// the MAC, already uniform.
#[derive(Clone, Copy, Debug)]
struct Entry([u8; 32]);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Entry {}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0[..8]);
    }
}

impl<V: Verifier> SignatureCache<V> {
    /// A memo of at most `capacity` verified signatures over `inner`, under a fresh random MAC
    /// key.
    pub fn new(inner: V, capacity: usize) -> Self {
        // One SHA-256 block of key: HMAC's own key size.
        let mut key = zeroize::Zeroizing::new([0_u8; 64]);
        OsRng.fill_bytes(key.as_mut());
        Self {
            inner,
            mac: <Hmac<Sha256> as Mac>::new(&(*key).into()),
            generation_len: (capacity / SHARDS / 2).max(1),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Generations::default()))
                .collect(),
        }
    }

    /// Entries held now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                shard.current.len() + shard.previous.len()
            })
            .sum()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry(&self, key: &Key, der: &[u8], message: &[u8], signature: &[u8]) -> Entry {
        let mut mac = self.mac.clone();
        // Lengths first: the encoding of the four fields is unambiguous.
        mac.update(key.algorithm().as_str().as_bytes());
        mac.update(&[0]);
        for part in [der, message, signature] {
            mac.update(&u64::try_from(part.len()).unwrap_or(u64::MAX).to_be_bytes());
            mac.update(part);
        }
        Entry(mac.finalize().into_bytes().into())
    }

    fn shard(&self, entry: &Entry) -> &Mutex<Generations> {
        let index = usize::from(entry.0[31]) % self.shards.len();
        &self.shards[index]
    }
}

impl<V: Verifier> Verifier for SignatureCache<V> {
    fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> auth_jwt::Result<()> {
        let Some(der) = key.public_key_der() else {
            return self.inner.verify(key, message, signature);
        };
        let entry = self.entry(key, der, message, signature);
        let shard = self.shard(&entry);
        {
            let mut held = shard.lock().unwrap_or_else(PoisonError::into_inner);
            if held.current.contains(&entry) {
                return Ok(());
            }
            if held.previous.remove(&entry) {
                held.insert(entry, self.generation_len);
                return Ok(());
            }
        }
        self.inner.verify(key, message, signature)?;
        shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry, self.generation_len);
        Ok(())
    }
}

impl Generations {
    fn insert(&mut self, entry: Entry, generation_len: usize) {
        if self.current.len() >= generation_len {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(entry);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use auth_jwt::{encode, Header};
    use serde_json::json;

    use super::*;

    /// Counts the verifications that reach the crypto.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Verifier for &Counting {
        fn verify(&self, key: &Key, message: &[u8], signature: &[u8]) -> auth_jwt::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            NativeCrypto.verify(key, message, signature)
        }
    }

    fn key(alg: Algorithm) -> Key {
        Key::generate("k1", alg, &mut OsRng).unwrap()
    }

    fn signed(key: &Key, n: u64) -> (String, String) {
        let token = encode(&Header::access_token(key), &json!({ "n": n }), key).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        (input.to_owned(), signature.to_owned())
    }

    fn raw(signature: &str) -> Vec<u8> {
        use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
        URL_SAFE_NO_PAD.decode(signature).unwrap()
    }

    #[test]
    fn native_es256_agrees_with_rustcrypto_on_valid_and_altered_signatures() {
        let key = key(Algorithm::ES256);
        for n in 0..64 {
            let (input, signature) = signed(&key, n);
            let signature = raw(&signature);
            assert!(NativeCrypto
                .verify(&key, input.as_bytes(), &signature)
                .is_ok());
            assert!(RustCrypto
                .verify(&key, input.as_bytes(), &signature)
                .is_ok());
            let bit = usize::try_from(n).unwrap() * 8 % (signature.len() * 8);
            let mut flipped = signature.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let mut message = input.clone().into_bytes();
            message[usize::try_from(n).unwrap() % input.len()] ^= 1;
            for (message, signature, what) in [
                (input.as_bytes(), flipped.as_slice(), "a signature bit"),
                (message.as_slice(), signature.as_slice(), "a message bit"),
            ] {
                assert!(
                    NativeCrypto.verify(&key, message, signature).is_err(),
                    "native, {what}"
                );
                assert!(
                    RustCrypto.verify(&key, message, signature).is_err(),
                    "pure Rust, {what}"
                );
            }
        }
    }

    #[test]
    fn native_es256_refuses_out_of_range_scalars() {
        let key = key(Algorithm::ES256);
        let (input, signature) = signed(&key, 1);
        let signature = raw(&signature);
        // The group order n.
        let order = [
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2,
            0xfc, 0x63, 0x25, 0x51,
        ];
        let cases = [
            ([&[0; 32][..], &signature[32..]].concat(), "r = 0"),
            ([&signature[..32], &[0; 32][..]].concat(), "s = 0"),
            ([&order[..], &signature[32..]].concat(), "r = n"),
            ([&signature[..32], &order[..]].concat(), "s = n"),
            ([&[0xff; 32][..], &signature[32..]].concat(), "r > n"),
            (signature[..63].to_vec(), "63 bytes"),
        ];
        for (bad, reason) in cases {
            assert!(
                NativeCrypto.verify(&key, input.as_bytes(), &bad).is_err(),
                "{reason}"
            );
        }
    }

    #[test]
    fn other_algorithms_fall_through_to_rustcrypto() {
        for alg in [Algorithm::EdDSA, Algorithm::HS256] {
            let key = key(alg);
            let (input, signature) = signed(&key, 7);
            let mut signature = raw(&signature);
            assert!(NativeCrypto
                .verify(&key, input.as_bytes(), &signature)
                .is_ok());
            signature[0] ^= 1;
            assert!(NativeCrypto
                .verify(&key, input.as_bytes(), &signature)
                .is_err());
        }
    }

    #[test]
    fn a_verified_signature_is_remembered_and_a_failed_one_is_not() {
        let counting = Counting::default();
        let cache = SignatureCache::new(&counting, 1024);
        let key = key(Algorithm::ES256);
        let (input, signature) = signed(&key, 1);
        let signature = raw(&signature);
        for _ in 0..3 {
            cache.verify(&key, input.as_bytes(), &signature).unwrap();
        }
        assert_eq!(counting.0.load(Ordering::SeqCst), 1);

        let mut flipped = signature.clone();
        flipped[10] ^= 0x40;
        for _ in 0..3 {
            assert!(matches!(
                cache
                    .verify(&key, input.as_bytes(), &flipped)
                    .unwrap_err()
                    .kind(),
                ErrorKind::InvalidSignature
            ));
        }
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            4,
            "each forgery verified"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_remembered_signature_does_not_verify_under_another_key_or_message() {
        let cache = SignatureCache::new(NativeCrypto, 1024);
        let (key, other) = (key(Algorithm::ES256), key(Algorithm::ES256));
        let (input, signature) = signed(&key, 1);
        let signature = raw(&signature);
        cache.verify(&key, input.as_bytes(), &signature).unwrap();
        assert!(cache.verify(&other, input.as_bytes(), &signature).is_err());
        let mut message = input.into_bytes();
        message[0] ^= 1;
        assert!(cache.verify(&key, &message, &signature).is_err());
    }

    #[test]
    fn hs256_is_never_remembered() {
        let cache = SignatureCache::new(NativeCrypto, 1024);
        let key = key(Algorithm::HS256);
        let (input, signature) = signed(&key, 1);
        cache
            .verify(&key, input.as_bytes(), &raw(&signature))
            .unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn the_memo_stays_within_its_capacity() {
        let capacity = SHARDS * 8;
        let cache = SignatureCache::new(NativeCrypto, capacity);
        let key = key(Algorithm::ES256);
        for n in 0..(capacity as u64 * 3) {
            let (input, signature) = signed(&key, n);
            cache
                .verify(&key, input.as_bytes(), &raw(&signature))
                .unwrap();
            assert!(cache.len() <= capacity, "{} entries", cache.len());
        }
        assert!(cache.len() >= capacity / 4);
    }
}
