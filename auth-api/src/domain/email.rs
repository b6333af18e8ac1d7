//! `Email`: an address that passed our checks, trimmed and lower-cased.
//!
//! Uniqueness ignores case because the stored form is lower-case: `A@x.com` and `a@x.com` are
//! one account, at signup and at login alike. We check shape only; proving the mailbox exists
//! is the job of an email verification flow, which we do not have yet.

use std::fmt;

/// Longest address accepted (RFC 5321 §4.5.3.1.3 path limit less the brackets).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_LEN: usize = 64;

/// A validated, normalised email address.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Trims, lower-cases and checks the shape `local@domain.tld`; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("the email is empty".to_owned());
        }
        if email.len() > MAX_EMAIL_LEN {
            return Err(format!(
                "the email is longer than {MAX_EMAIL_LEN} characters"
            ));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("the email has no @".to_owned());
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN || local.contains('@') {
            return Err("the part before @ is empty, too long or contains another @".to_owned());
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the email contains spaces or control characters".to_owned());
        }
        let labels_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
        if !domain.contains('.') || !labels_ok {
            return Err("the domain after @ is not a valid host name".to_owned());
        }
        Ok(Self(email))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }
}

impl fmt::Debug for Email {
    // Addresses are personal data: keep them out of debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(..)")
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(250));
        let cases = [
            ("", "empty"),
            ("alice", "no @"),
            ("@example.com", "empty local part"),
            ("alice@", "empty domain"),
            ("alice@localhost", "no dot in the domain"),
            ("al ice@example.com", "space inside"),
            ("alice@exa_mple.com", "underscore in the host"),
            ("alice@-example.com", "label starts with a hyphen"),
            ("alice@example..com", "empty label"),
            ("a\u{0}b@example.com", "NUL"),
            (long_local.as_str(), "local part over 64"),
            (long_total.as_str(), "over 254 in all"),
        ];
        for (raw, reason) in cases {
            assert!(Email::parse(raw).is_err(), "{reason}: {raw:?} was accepted");
        }
    }

    #[test]
    fn local_part_is_before_the_last_at() {
        assert_eq!(
            Email::parse("bob.smith@example.org").unwrap().local_part(),
            "bob.smith"
        );
    }
}
