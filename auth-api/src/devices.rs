//! Device tokens: OWASP's "device cookies" for an API. Every successful login returns one; a
//! later login that presents it for the same user is throttled by a counter of that token
//! instead of the email's, so a guesser who has locked an email does not lock its owner out of
//! the devices they used before (SECURITY.md E 48, E 50).
//!
//! A token is stateless and unforgeable: `base64url(version || issued_at || nonce || mac)`, the
//! MAC being HMAC-SHA256 under a subkey derived from the key-encryption keys for this purpose
//! alone ([`crate::kek::KeyEncryptionKeys::subkeys`]), over the [`Holder`] (the user id and
//! the user's credential state: a digest of the stored password hash and `tokens_valid_after`),
//! the issue time and the nonce. It lives [`LIFETIME_SECS`]. Checking it reads no database
//! beyond the user's row the login reads anyway, and compares MACs in constant time; a token
//! that is malformed, expired, tampered with, made under no configured KEK, for another user or
//! for an earlier credential state is simply not one, which the caller treats exactly like no
//! token.
//!
//! The credential state in the MAC makes a password change (and a rehash at a raised cost,
//! once per account), a "logout everywhere" and a disable (both raise `tokens_valid_after`,
//! which never moves back) void every device token the user had: someone who once knew the
//! password and collected tokens then gets no lock of their own per token, only the email's
//! (SECURITY.md E 48).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use rand::{rngs::OsRng, RngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{kek::KeyEncryptionKeys, store::UserRow};

/// How long a device token is honoured: 90 days.
pub const LIFETIME_SECS: i64 = 90 * 24 * 3600;
/// How long after its last failure a device token's counter is kept: by then the token has
/// expired (its failures all fall within its lifetime, give or take the allowed skew), so the
/// counter can never be used again, locked or not.
pub const FORGET_AFTER_SECS: i64 = LIFETIME_SECS + MAX_SKEW_SECS;
/// The purpose the subkey is derived for.
const PURPOSE: &str = "device-token v1";
/// The format's version byte (2: the MAC covers the credential state).
const VERSION: u8 = 2;
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
/// The user id a token is checked against when the email is unknown: the nil UUID, as long as
/// every real id (UUID text), so the MAC's input is as long as for an account.
const NOBODY_ID: &str = "00000000-0000-0000-0000-000000000000";
/// The password hash digested in its place: as long as a bcrypt string, so the digest costs
/// the same.
const NOBODY_HASH: &str = "$2b$12$00000000000000000000000000000000000000000000000000000";
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

/// Whom a token is issued to or checked for: the user id and the user's credential state as
/// stored, which the MAC covers.
#[derive(Clone)]
pub struct Holder<'a> {
    user_id: &'a str,
    password_digest: [u8; 32],
    tokens_valid_after: i64,
}

impl std::fmt::Debug for Holder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl<'a> Holder<'a> {
    /// `user_id` whose stored password hash is `password_hash` and whose `tokens_valid_after`
    /// is `tokens_valid_after`.
    pub fn new(user_id: &'a str, password_hash: &str, tokens_valid_after: i64) -> Self {
        Self {
            user_id,
            password_digest: Sha256::digest(password_hash.as_bytes()).into(),
            tokens_valid_after,
        }
    }

    /// The user of `row`, in its stored state.
    pub fn of(row: &'a UserRow) -> Self {
        Self::new(&row.id, &row.password_hash, row.tokens_valid_after)
    }

    /// Nobody, for an unknown email: no token is issued for it, and checking one against it
    /// costs what it costs against an account.
    pub fn nobody() -> Holder<'static> {
        Holder::new(NOBODY_ID, NOBODY_HASH, 0)
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

    /// A new token for `holder` in its current credential state, issued at `now`.
    pub fn issue(&self, holder: &Holder<'_>, now: i64) -> String {
        let mut bytes = [0_u8; TOKEN_BYTES];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&now.to_be_bytes());
        OsRng.fill_bytes(&mut bytes[9..9 + NONCE_BYTES]);
        // The installation always has a KEK, so there is always a subkey.
        if let Some(subkey) = self.subkeys.first() {
            let mac = mac_of(subkey, holder, &bytes[..9 + NONCE_BYTES]).finalize();
            bytes[9 + NONCE_BYTES..].copy_from_slice(&mac.into_bytes());
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// `Some` when `token` is a device token this installation issued to `holder`, in the
    /// credential state it is in now, less than [`LIFETIME_SECS`] before `now`; `None` for
    /// anything else, without saying why.
    pub fn recognise(
        &self,
        token: &str,
        holder: &Holder<'_>,
        now: i64,
    ) -> Option<RecognisedDevice> {
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
            valid |= mac_of(subkey, holder, signed).verify_slice(tag).is_ok();
        }
        valid.then(|| RecognisedDevice {
            throttle_key: throttle_key(token),
        })
    }
}

/// The MAC of `signed` (version, issue time, nonce) for `holder`.
fn mac_of(subkey: &[u8; 32], holder: &Holder<'_>, signed: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; a 32-byte one is never refused.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(subkey)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&mac_input(holder, signed));
    mac
}

/// What the MAC covers: the user id, length-prefixed so that no two inputs share it, the
/// password hash's digest and `tokens_valid_after` (fixed lengths), then `signed`.
fn mac_input(holder: &Holder<'_>, signed: &[u8]) -> Vec<u8> {
    let id = holder.user_id.as_bytes();
    let mut input = Vec::with_capacity(4 + id.len() + 32 + 8 + signed.len());
    input.extend_from_slice(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    input.extend_from_slice(id);
    input.extend_from_slice(&holder.password_digest);
    input.extend_from_slice(&holder.tokens_valid_after.to_be_bytes());
    input.extend_from_slice(signed);
    input
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
    /// A bcrypt string as stored.
    const HASH: &str = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";

    fn holder(id: &str) -> Holder<'_> {
        Holder::new(id, HASH, 0)
    }

    fn keks(text: &str) -> KeyEncryptionKeys {
        text.parse().unwrap()
    }

    fn tokens() -> DeviceTokens {
        DeviceTokens::new(&keks("one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"))
    }

    #[test]
    fn a_token_is_recognised_for_its_user_only_and_within_its_lifetime() {
        let tokens = tokens();
        let token = tokens.issue(&holder("user-a"), NOW);
        assert_eq!(token.len(), TOKEN_CHARS);
        let device = tokens
            .recognise(&token, &holder("user-a"), NOW)
            .expect("its user");
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
            assert_eq!(
                tokens.recognise(&token, &holder(user), now),
                None,
                "{reason}"
            );
        }
        assert!(tokens
            .recognise(&token, &holder("user-a"), NOW + LIFETIME_SECS - 1)
            .is_some());
        assert_ne!(
            tokens.issue(&holder("user-a"), NOW),
            token,
            "a fresh nonce each time"
        );
    }

    #[test]
    fn forged_and_tampered_tokens_are_not_recognised() {
        let tokens = tokens();
        let token = tokens.issue(&holder("user-a"), NOW);
        let bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..TOKEN_BYTES {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            let forged = URL_SAFE_NO_PAD.encode(&flipped);
            assert_eq!(
                tokens.recognise(&forged, &holder("user-a"), NOW),
                None,
                "byte {i} flipped"
            );
        }
        let mut later = bytes.clone();
        later[1..9].copy_from_slice(&(NOW + 1000).to_be_bytes());
        let extended = URL_SAFE_NO_PAD.encode(&later);
        assert_eq!(
            tokens.recognise(&extended, &holder("user-a"), NOW),
            None,
            "new issue time"
        );
        let other_install =
            DeviceTokens::new(&keks("two:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4"));
        assert_eq!(
            other_install.recognise(&token, &holder("user-a"), NOW),
            None,
            "another KEK"
        );
        let last = token.chars().last().unwrap();
        let respelled = format!(
            "{}{}",
            &token[..token.len() - 1],
            if last == 'A' { 'B' } else { 'A' }
        );
        assert_eq!(tokens.recognise(&respelled, &holder("user-a"), NOW), None);
        for junk in [
            "",
            "x",
            &token[1..],
            &format!("{token}A"),
            &"A".repeat(TOKEN_CHARS),
            &"é".repeat(38),
        ] {
            assert_eq!(
                tokens.recognise(junk, &holder("user-a"), NOW),
                None,
                "{junk:?}"
            );
        }
    }

    /// SECURITY.md E 48: a token is bound to the credential state it was issued in; another
    /// password hash (a change, or a rehash) or a raised `tokens_valid_after` (logout
    /// everywhere, a disable) voids it.
    #[test]
    fn a_token_is_void_once_the_password_hash_or_tokens_valid_after_changes() {
        let tokens = tokens();
        let token = tokens.issue(&Holder::new("user-a", HASH, 7), NOW);
        assert!(tokens
            .recognise(&token, &Holder::new("user-a", HASH, 7), NOW)
            .is_some());
        let other_hash = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUX";
        let rehashed = "$2b$13$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let cases = [
            (Holder::new("user-a", other_hash, 7), "another password"),
            (
                Holder::new("user-a", rehashed, 7),
                "rehashed at another cost",
            ),
            (Holder::new("user-a", HASH, 8), "tokens_valid_after raised"),
            (Holder::new("user-a", HASH, 6), "tokens_valid_after lowered"),
        ];
        for (holder, reason) in cases {
            assert_eq!(tokens.recognise(&token, &holder, NOW), None, "{reason}");
        }
    }

    /// The unknown-email check hashes and MACs inputs as long as an account's: a real user id
    /// (UUID text) and a bcrypt string, against the nil UUID and the dummy hash; and nobody
    /// holds a token of anybody.
    #[test]
    fn nobody_costs_what_an_account_costs() {
        let id = "3f1c9a52-0b7e-4d3a-9c51-7e2f8a6b1d40";
        assert_eq!(NOBODY_ID.len(), id.len());
        assert_eq!(NOBODY_HASH.len(), HASH.len());
        let signed = [0_u8; 9 + NONCE_BYTES];
        assert_eq!(
            mac_input(&Holder::nobody(), &signed).len(),
            mac_input(&Holder::new(id, HASH, 1_800_000_000), &signed).len()
        );
        let tokens = tokens();
        let token = tokens.issue(&Holder::new(id, HASH, 0), NOW);
        assert_eq!(tokens.recognise(&token, &Holder::nobody(), NOW), None);
    }

    #[test]
    fn tokens_made_before_a_kek_rotation_still_count() {
        let old = "one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
        let token = DeviceTokens::new(&keks(old)).issue(&holder("user-a"), NOW);
        let rotated = DeviceTokens::new(&keks(&format!(
            "two:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh4,{old}"
        )));
        assert!(rotated.recognise(&token, &holder("user-a"), NOW).is_some());
        let fresh = rotated.issue(&holder("user-a"), NOW);
        assert!(
            DeviceTokens::new(&keks(old))
                .recognise(&fresh, &holder("user-a"), NOW)
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
