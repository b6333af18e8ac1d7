//! `Password`: a candidate password, Unicode-normalised, held as a secret.
//!
//! The policy for a new password follows NIST SP 800-63B: a minimum length (15 characters by
//! default, as SP 800-63B-4 asks of a password that is the only factor; 8 at the least), no
//! composition rules, nothing truncated, no password from a list of common (breached) ones, and
//! none built from the account's own email.

use std::{collections::HashSet, sync::LazyLock};

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use super::Email;

/// The default fewest characters (Unicode scalar values) of a new password: NIST SP 800-63B-4
/// §3.1.1.2 for a password that is the only authentication factor, as it is here.
pub const DEFAULT_MIN_PASSWORD_CHARS: usize = 15;
/// The lowest minimum a deployment may configure (NIST's floor when a second factor is used).
pub const LOWEST_MIN_PASSWORD_CHARS: usize = 8;
/// Most bytes of UTF-8 accepted: long enough for any passphrase, short enough that nobody can
/// make us HMAC megabytes.
pub const MAX_PASSWORD_BYTES: usize = 4096;
/// Local parts shorter than this are too common inside words to be refused.
const MIN_LOCAL_PART_CHECKED: usize = 3;

/// 19,641 common passwords, lower-case, one a line: Django's list (BSD licence, see
/// `data/common-passwords.LICENSE`), built into the binary and read once.
static COMMON_PASSWORDS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect()
});

/// Why a password was refused at signup; the `reason` member of a `weak_password` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeakPasswordReason {
    /// Fewer characters than the minimum.
    Length,
    /// Contains the local part of the account's email.
    ContainsEmail,
    /// On the list of common (breached) passwords.
    Common,
}

/// Why a new password was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    /// It breaks a rule of the policy.
    #[error("{message}")]
    Weak {
        /// The rule that failed.
        reason: WeakPasswordReason,
        /// What to do about it.
        message: String,
    },
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is longer than {max_bytes} bytes")]
    TooLong {
        /// The limit, in bytes of UTF-8.
        max_bytes: usize,
    },
}

/// A password in NFC form, so that "é" typed as one code point or as "e" + U+0301 is the same
/// password (NIST SP 800-63B §5.1.1.2). `Debug` never shows it.
#[derive(Debug)]
pub struct Password(SecretString);

impl Password {
    /// A new password for the account `email`, checked against the policy, with at least
    /// `min_chars` characters.
    pub fn for_signup(
        raw: &str,
        email: &Email,
        min_chars: usize,
    ) -> Result<Self, PasswordRejected> {
        let password = Self::for_login(raw).ok_or(PasswordRejected::TooLong {
            max_bytes: MAX_PASSWORD_BYTES,
        })?;
        let text = password.expose();
        if text.chars().count() < min_chars {
            return Err(PasswordRejected::Weak {
                reason: WeakPasswordReason::Length,
                message: format!("the password needs at least {min_chars} characters"),
            });
        }
        if COMMON_PASSWORDS.contains(text.to_lowercase().as_str()) {
            return Err(PasswordRejected::Weak {
                reason: WeakPasswordReason::Common,
                message: "this password is too common: it appears in lists of breached passwords"
                    .to_owned(),
            });
        }
        let local = email.local_part();
        if local.chars().count() >= MIN_LOCAL_PART_CHECKED && text.to_lowercase().contains(local) {
            return Err(PasswordRejected::Weak {
                reason: WeakPasswordReason::ContainsEmail,
                message: "the password must not contain the email address".to_owned(),
            });
        }
        Ok(password)
    }

    /// A password presented at login; `None` when it is over [`MAX_PASSWORD_BYTES`] and so
    /// cannot be anybody's.
    pub fn for_login(raw: &str) -> Option<Self> {
        if raw.len() > MAX_PASSWORD_BYTES {
            return None;
        }
        Some(Self(SecretString::from(raw.nfc().collect::<String>())))
    }

    /// The normalised text, for hashing only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: usize = DEFAULT_MIN_PASSWORD_CHARS;

    fn email() -> Email {
        Email::parse("carol@example.com").unwrap()
    }

    #[test]
    fn passphrase_without_composition_is_accepted() {
        assert!(Password::for_signup("correct horse battery staple", &email(), MIN).is_ok());
    }

    #[test]
    fn fewer_characters_than_the_minimum_are_too_short() {
        assert!(Password::for_signup("fourteen chars", &email(), MIN).is_err());
        assert!(Password::for_signup("fifteen chars!!", &email(), MIN).is_ok());
        assert!(
            Password::for_signup("eight ch", &email(), LOWEST_MIN_PASSWORD_CHARS).is_ok(),
            "a deployment with a second factor may allow 8"
        );
        let err = Password::for_signup("abcdefg", &email(), LOWEST_MIN_PASSWORD_CHARS).unwrap_err();
        assert!(matches!(
            err,
            PasswordRejected::Weak {
                reason: WeakPasswordReason::Length,
                ..
            }
        ));
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // Fourteen emoji are 56 bytes but only 14 characters.
        let err = Password::for_signup(&"😀".repeat(14), &email(), MIN).unwrap_err();
        assert!(matches!(
            err,
            PasswordRejected::Weak {
                reason: WeakPasswordReason::Length,
                ..
            }
        ));
    }

    #[test]
    fn password_containing_the_local_part_is_refused() {
        let err = Password::for_signup("my-Carol-password", &email(), MIN).unwrap_err();
        assert!(matches!(
            err,
            PasswordRejected::Weak {
                reason: WeakPasswordReason::ContainsEmail,
                ..
            }
        ));
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in [
            "password123456",
            "Password123456",
            "qwertyuiop",
            "iloveyou1",
        ] {
            let err =
                Password::for_signup(common, &email(), LOWEST_MIN_PASSWORD_CHARS).unwrap_err();
            assert!(
                matches!(
                    err,
                    PasswordRejected::Weak {
                        reason: WeakPasswordReason::Common,
                        ..
                    }
                ),
                "{common}"
            );
        }
        assert!(COMMON_PASSWORDS.len() >= 10_000);
    }

    #[test]
    fn over_the_byte_limit_is_too_long() {
        let err =
            Password::for_signup(&"x".repeat(MAX_PASSWORD_BYTES + 1), &email(), MIN).unwrap_err();
        assert!(matches!(err, PasswordRejected::TooLong { .. }));
    }

    #[test]
    fn composed_and_decomposed_forms_are_one_password() {
        let composed = Password::for_login("caf\u{e9} au lait").unwrap();
        let decomposed = Password::for_login("cafe\u{301} au lait").unwrap();
        assert_eq!(composed.expose(), decomposed.expose());
    }

    #[test]
    fn debug_does_not_show_the_password() {
        let password = Password::for_login("hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
    }
}
