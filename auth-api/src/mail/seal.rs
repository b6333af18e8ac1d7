//! Message bodies sealed at rest: they will carry links with single-use tokens (email
//! verification, password reset), and the outbox keeps them until they are sent, so a dump of
//! the database alone must not hand them out (SECURITY.md I 100).
//!
//! Each body is sealed with XChaCha20-Poly1305 under a subkey of the current key-encryption key
//! ([`KeyEncryptionKeys::subkeys`], purpose [`PURPOSE`]), the associated data binding it to its
//! message and part, so a body moved onto another row, or the HTML part read as the text one,
//! does not open. Stored as the nonce, then the ciphertext and tag, beside the KEK's id.

use chacha20poly1305::{
    aead::{AeadInPlace as _, KeyInit as _},
    XChaCha20Poly1305, XNonce,
};
use rand::{rngs::OsRng, RngCore as _};
use zeroize::Zeroizing;

use crate::kek::{KeyEncryptionKeys, NONCE_BYTES};

/// The purpose of the subkey (its own: no other sealed value opens with it).
const PURPOSE: &str = "email outbox body v1";

/// Which part of a message a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    /// `text/plain`.
    Text,
    /// `text/html`.
    Html,
}

impl Part {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Text => b"text",
            Self::Html => b"html",
        }
    }
}

/// Why a body did not open. Names the message and the KEK, never content.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The row names a KEK this replica does not hold (a newer key not yet rolled out to it, or
    /// one removed while the message waited).
    #[error(
        "the body is sealed under key-encryption key {0:?}, which AUTH_KEY_ENCRYPTION_KEYS does \
         not hold"
    )]
    UnknownKek(String),
    /// A different key under that id, or an altered or moved row.
    #[error(
        "the body does not open with key-encryption key {0:?} (another key or an altered row)"
    )]
    WrongKey(String),
}

fn aad(message_id: &str, part: Part) -> Vec<u8> {
    [part.label(), b"\0", message_id.as_bytes()].concat()
}

fn cipher(keks: &KeyEncryptionKeys, kek_id: &str) -> Option<XChaCha20Poly1305> {
    // `subkeys` follows the order of `ids`.
    let index = keks.ids().position(|id| id == kek_id)?;
    let subkeys = keks.subkeys(PURPOSE);
    let key = subkeys.get(index)?;
    Some(XChaCha20Poly1305::new(key.as_ref().into()))
}

/// `body` (part `part` of message `message_id`) sealed under the current KEK: the KEK's id and
/// nonce-then-ciphertext.
pub(super) fn seal(
    keks: &KeyEncryptionKeys,
    message_id: &str,
    part: Part,
    body: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    let kek_id = keks.current_id().to_owned();
    let cipher = cipher(keks, &kek_id).ok_or_else(|| anyhow::anyhow!("no key-encryption key"))?;
    let mut nonce = [0_u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let mut buffer = Zeroizing::new(body.as_bytes().to_vec());
    cipher
        .encrypt_in_place(
            XNonce::from_slice(&nonce),
            &aad(message_id, part),
            &mut *buffer,
        )
        .map_err(|_| anyhow::anyhow!("cannot encrypt an email body"))?;
    Ok((kek_id, [nonce.as_slice(), buffer.as_slice()].concat()))
}

/// Opens what [`seal`] sealed for the same message and part.
pub(super) fn open(
    keks: &KeyEncryptionKeys,
    kek_id: &str,
    message_id: &str,
    part: Part,
    stored: &[u8],
) -> Result<Zeroizing<String>, OpenError> {
    let cipher = cipher(keks, kek_id).ok_or_else(|| OpenError::UnknownKek(kek_id.to_owned()))?;
    let wrong = || OpenError::WrongKey(kek_id.to_owned());
    if stored.len() < NONCE_BYTES {
        return Err(wrong());
    }
    let (nonce, ciphertext) = stored.split_at(NONCE_BYTES);
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    cipher
        .decrypt_in_place(
            XNonce::from_slice(nonce),
            &aad(message_id, part),
            &mut *buffer,
        )
        .map_err(|_| wrong())?;
    let text = String::from_utf8(std::mem::take(&mut *buffer)).map_err(|_| wrong())?;
    Ok(Zeroizing::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "one:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const TWO: &str = "two:HxwdHh8AAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRo";

    #[test]
    fn a_body_opens_only_for_its_message_and_part() {
        let keks: KeyEncryptionKeys = ONE.parse().unwrap();
        let body = "reset: https://example.com/reset#token-secret";
        let (kek_id, sealed) = seal(&keks, "m1", Part::Text, body).unwrap();
        assert_eq!(kek_id, "one");
        assert!(!sealed
            .windows(b"token-secret".len())
            .any(|w| w == b"token-secret"));
        assert_eq!(
            open(&keks, &kek_id, "m1", Part::Text, &sealed)
                .unwrap()
                .as_str(),
            body
        );
        assert!(
            open(&keks, &kek_id, "m2", Part::Text, &sealed).is_err(),
            "another message"
        );
        assert!(
            open(&keks, &kek_id, "m1", Part::Html, &sealed).is_err(),
            "another part"
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(open(&keks, &kek_id, "m1", Part::Text, &altered).is_err());
        assert!(open(&keks, &kek_id, "m1", Part::Text, &sealed[..10]).is_err());
    }

    #[test]
    fn older_keks_open_and_an_unknown_one_is_named() {
        let old: KeyEncryptionKeys = ONE.parse().unwrap();
        let (kek_id, sealed) = seal(&old, "m1", Part::Html, "<p>hi</p>").unwrap();
        let rotated: KeyEncryptionKeys = format!("{TWO},{ONE}").parse().unwrap();
        assert_eq!(
            open(&rotated, &kek_id, "m1", Part::Html, &sealed)
                .unwrap()
                .as_str(),
            "<p>hi</p>"
        );
        assert_eq!(seal(&rotated, "m1", Part::Html, "x").unwrap().0, "two");
        let only_new: KeyEncryptionKeys = TWO.parse().unwrap();
        let err = open(&only_new, &kek_id, "m1", Part::Html, &sealed).unwrap_err();
        assert!(matches!(err, OpenError::UnknownKek(_)), "{err}");
        assert!(err.to_string().contains("\"one\""), "{err}");
    }
}
