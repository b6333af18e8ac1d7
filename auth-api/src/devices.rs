//! Device tokens: OWASP's "device cookies" for an API. Every successful login returns one; a
//! later login that presents it for the same user is throttled by a counter of that token
//! instead of the email's, so a guesser who has locked an email does not lock its owner out of
//! the devices they used before (SECURITY.md E 48, E 50).
//!
//! A token is stateless and unforgeable: `base64url(version || issued_at || nonce || mac)`, the
//! MAC being HMAC-SHA256 under a subkey derived from the key-encryption keys for this purpose
//! alone ([`crate::kek::KeyEncryptionKeys::subkeys`]), over the user id, the issue time and
//! the nonce. It lives [`LIFETIME_SECS`]. Checking it reads no database and compares MACs in
//! constant time; a token that is malformed, expired, tampered with, made under no configured
//! KEK or for another user is simply not one, which the caller treats exactly like no token.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::kek::KeyEncryptionKeys;

/// How long a device token is honoured: 90 days.
pub const LIFETIME_SECS: i64 = 90 * 24 * 3600;
/// How long after its last failure a device token's counter is kept: by then the token has
/// expired (its failures all fall within its lifetime, give or take the allowed skew), so the
/// counter can never be used again, locked or not.
pub const FORGET_AFTER_SECS: i64 = LIFETIME_SECS + MAX_SKEW_SECS;
/// The purpose the subkey is derived for.
const PURPOSE: &str = "device-token v1";
/// The format's version byte.
const VERSION: u8 = 1;
/// Bytes of the random nonce.
const NONCE_BYTES: usize = 16;
/// Bytes of the MAC (HMAC-SHA256, untruncated).
const MAC_BYTES: usize = 32;
/// Bytes of a token: version, issue time (big-endian i64), nonce, MAC.
const TOKEN_BYTES: usize = 1 + 8 + NONCE_BYTES + MAC_BYTES;
/// Characters of a token: unpadded base64url of [`TOKEN_BYTES`].
const TOKEN_CHARS: usize = (TOKEN_BYTES * 4).div_ceil(3);
/// How far in the future an issue time may lie (clock differences between replicas).
const MAX_SKEW_SECS: i64 = 60;
/// Prefix of a device token's throttle key; no canonical email (it has an `@`) or `invalid:`
/// key of a malformed one can be mistaken for it.
pub const KEY_PREFIX: &str = "device:";

/// The device-token subkeys of an installation: the first issues, every one checks.
pub struct DeviceTokens {
    subkeys: Vec<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for DeviceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceTokens")
            .field("subkeys", &self.subkeys.len())
            .finish_non_exhaustive()
    }
}

/// A device token that checked out for its user: what its password attempts count against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecognisedDevice {
    throttle_key: String,
}

impl RecognisedDevice {
    /// The key of this token's failure counter in `login_attempts`: `device:` and the hex
    /// SHA-256 of the token, so that the table never holds a usable token.
    pub fn throttle_key(&self) -> &str {
        &self.throttle_key
    }
}

impl DeviceTokens {
    /// The subkeys derived from `keks` (the current KEK's first).
    pub fn new(keks: &KeyEncryptionKeys) -> Self {
        Self {
            subkeys: keks.subkeys(PURPOSE),
        }
    }

    /// A new token for `user_id`, issued at `now`.
    pub fn issue(&self, user_id: &str, now: i64) -> String {
        let mut bytes = [0_u8; TOKEN_BYTES];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&now.to_be_bytes());
        OsRng.fill_bytes(&mut bytes[9..9 + NONCE_BYTES]);
        // The installation always has a KEK, so there is always a subkey.
        if let Some(subkey) = self.subkeys.first() {
            let mac = mac_of(subkey, user_id, &bytes[..9 + NONCE_BYTES]).finalize();
            bytes[9 + NONCE_BYTES..].copy_from_slice(&mac.into_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `Some` when `token` is a device token this installation issued to `user_id` less than
    /// [`LIFETIME_SECS`] before `now`; `None` for anything else, without saying why.
    pub fn recognise(&self, token: &str, user_id: &str, now: i64) -> Option<RecognisedDevice> {
        if token.len() != TOKEN_CHARS {
            return None;
        }
        // Strict: non-zero trailing bits are refused, so one token has one spelling and one
        // counter.
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != TOKEN_BYTES || bytes[0] != VERSION {
            return None;
        }
        let issued_at = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
        let age = now.checked_sub(issued_at)?;
        if !(-MAX_SKEW_SECS..LIFETIME_SECS).contains(&age) {
            return None;
        }
        let (signed, tag) = bytes.split_at(9 + NONCE_BYTES);
        // Every subkey is tried, so the time taken does not tell which one matched.
        let mut valid = false;
        for subkey in &self.subkeys {
            valid |= mac_of(subkey, user_id, signed).verify_slice(tag).is_ok();
        }
        valid.then(|| RecognisedDevice {
            throttle_key: throttle_key(token),
        })
    }
}

/// The MAC of `signed` (version, issue time, nonce) for `user_id`, length-prefixed so that no
/// two inputs share it.
fn mac_of(subkey: &[u8; 32], user_id: &str, signed: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; a 32-byte one is never refused.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(subkey)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(
        &u32::try_from(user_id.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    mac.update(user_id.as_bytes());
    mac.update(signed);
    mac
}

fn throttle_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_PREFIX}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn keks(text: &str) -> KeyEncryptionKeys {
        text.parse().unwrap()
    }

    fn tokens() -> DeviceTokens {
        DeviceTokens::new(&keks("one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"))
    }

    #[test]
    fn a_token_is_recognised_for_its_user_only_and_within_its_lifetime() {
        let tokens = tokens();
        let token = tokens.issue("user-a", NOW);
        assert_eq!(token.len(), TOKEN_CHARS);
        let device = tokens.recognise(&token, "user-a", NOW).expect("its user");
        assert!(device.throttle_key().starts_with("device:"));
        assert_eq!(device.throttle_key().len(), KEY_PREFIX.len() + 64);
        assert!(
            !device.throttle_key().contains(&token),
            "never the token itself"
        );
        let cases = [
            ("user-b", NOW, "another user"),
            ("user-a", NOW + LIFETIME_SECS, "expired"),
            ("user-a", NOW - MAX_SKEW_SECS - 1, "issued in the future"),
        ];
        for (user, now, reason) in cases {
            assert_eq!(tokens.recognise(&token, user, now), None, "{reason}");
        }
        assert!(tokens
            .recognise(&token, "user-a", NOW + LIFETIME_SECS - 1)
            .is_some());
        assert_ne!(
            tokens.issue("user-a", NOW),
            token,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn forged_and_tampered_tokens_are_not_recognised() {
        let tokens = tokens();
        let token = tokens.issue("user-a", NOW);
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..TOKEN_BYTES {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(&flipped);
            assert_eq!(
                tokens.recognise(&forged, "user-a", NOW),
                None,
                "byte {i} flipped"
            );
        }
        let mut later = bytes.clone();
        later[1..9].copy_from_slice(&(NOW + 1000).to_be_bytes());
        let extended = URL_SAFE_NO_PAD.encode(&later);
        assert_eq!(
            tokens.recognise(&extended, "user-a", NOW),
            None,
            "new issue time"
        );
        let other_install =
            DeviceTokens::new(&keks("two:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4"));
        assert_eq!(
            other_install.recognise(&token, "user-a", NOW),
            None,
            "another KEK"
        );
        let last = token.chars().last().unwrap();
        let respelled = format!(
            "{}{}",
            &token[..token.len() - 1],
            if last == 'A' { 'B' } else { 'A' }
        );
        assert_eq!(tokens.recognise(&respelled, "user-a", NOW), None);
        for junk in [
            "",
            "x",
            &token[1..],
            &format!("{token}A"),
            &"A".repeat(TOKEN_CHARS),
            &"é".repeat(38),
        ] {
            assert_eq!(tokens.recognise(junk, "user-a", NOW), None, "{junk:?}");
        }
    }

    #[test]
    fn tokens_made_before_a_kek_rotation_still_count() {
        let old = "one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let token = DeviceTokens::new(&keks(old)).issue("user-a", NOW);
        let rotated = DeviceTokens::new(&keks(&format!(
            "two:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4,{old}"
        )));
        assert!(rotated.recognise(&token, "user-a", NOW).is_some());
        let fresh = rotated.issue("user-a", NOW);
        assert!(
            DeviceTokens::new(&keks(old))
                .recognise(&fresh, "user-a", NOW)
                .is_none(),
            "the new KEK issues"
        );
    }

    #[test]
    fn the_subkey_is_not_the_kek() {
        let keks = keks("one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        let subkeys = keks.subkeys(PURPOSE);
        assert_eq!(subkeys.len(), 1);
        let kek: Vec<u8> = (0..32).collect();
        assert_ne!(subkeys[0].as_slice(), kek.as_slice());
        assert_ne!(subkeys[0], keks.subkeys("another purpose")[0]);
    }
}
