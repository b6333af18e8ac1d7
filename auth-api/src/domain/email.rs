//! `Email`: an address in its one canonical form, the only form we store, compare and key by.
//!
//! Signup, login, the login throttle and every look-up go through [`Email::parse`], so two
//! spellings of one mailbox are one account (SECURITY.md D, issue 10). The canonical form:
//!
//! - **Trimmed; no control character anywhere** (NUL, C0, DEL, C1): one engine refusing a byte
//!   the other stores must never decide the answer.
//! - **NFKC** over the whole address, so fullwidth `ｂob＠example.com` is `bob@example.com`.
//! - **Domain**: UTS 46 ToASCII (non-transitional, STD3 rules, no hyphen first or last, DNS
//!   lengths), stored as A-labels: `bücher.example` and `xn--bcher-kva.example` are one domain,
//!   and an invalid IDNA label (bad Punycode, a disallowed or mixed-direction label) is refused.
//! - **Local part**: NFKC then lower-cased, as every ASCII address already was. Invisible
//!   characters (zero-width, bidi controls, variation selectors, tags…), private-use code points,
//!   non-characters and U+FFFD are refused: they would make look-alike accounts.
//! - At most 254 bytes in all and 64 before the `@`, counted on the canonical form.
//!
//! Why NFKC on the local part: RFC 6531 lets the local part be UTF-8 and leaves its comparison to
//! the receiving server, which in practice folds nothing. NFKC can therefore merge mailboxes a
//! server keeps apart (`ﬁle@` and `file@`, `x²@` and `x2@`). We accept that: a merge refuses the
//! second signup (`409`), it never lets anyone in without the password, and the first owner keeps
//! the account; without it a fullwidth or compatibility spelling would be a second account for
//! what every user reads as one address. Lower-casing the local part was already our rule.
//!
//! We check shape only; proving the mailbox exists is the job of an email verification flow,
//! which we do not have yet. Unassigned code points are not refused in the local part: NFKC is
//! stable for assigned characters only, so a later Unicode table could in principle change the
//! canonical form of such an address.

use std::fmt;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;

/// Longest canonical address accepted, in bytes (RFC 5321 §4.5.3.1.3 path limit less the
/// brackets; RFC 6531 counts octets too).
pub const MAX_EMAIL_LEN: usize = 254;
/// Longest canonical local part, in bytes (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_LEN: usize = 64;
/// Longest trimmed input normalised at all. NFKC shrinks a code point to no less than a quarter
/// of its UTF-8 bytes (`𝐀`, 4 bytes, to `a`), so nothing longer can fit [`MAX_EMAIL_LEN`].
const MAX_INPUT_LEN: usize = 4 * MAX_EMAIL_LEN;

/// A validated email address in canonical form.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Trims, normalises (NFKC; the domain to A-labels; the local part lower-cased) and checks
    /// the shape `local@domain.tld`; the error says what is wrong. Idempotent: a canonical
    /// address parses to itself.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("the email is empty".to_owned());
        }
        if trimmed.len() > MAX_INPUT_LEN {
            return Err(too_long());
        }
        if trimmed.chars().any(char::is_control) {
            return Err("the email contains control characters".to_owned());
        }
        // NFKC first, over the whole address, so that a fullwidth `＠` splits like `@`.
        let folded: String = trimmed.nfkc().collect();
        let Some((local, domain)) = folded.rsplit_once('@') else {
            return Err("the email has no @".to_owned());
        };
        // Lower-casing can leave a string NFKC would change again: normalise once more so that
        // the canonical form is a fixed point.
        let local: String = local.to_lowercase().nfkc().collect();
        if local.is_empty() || local.contains('@') {
            return Err("the part before @ is empty or contains another @".to_owned());
        }
        if local.len() > MAX_LOCAL_LEN {
            return Err(format!(
                "the part before @ is longer than {MAX_LOCAL_LEN} characters"
            ));
        }
        if local.chars().any(|c| c.is_whitespace() || is_hidden(c)) {
            return Err("the part before @ contains spaces or invisible characters".to_owned());
        }
        let domain = domain_to_ascii(domain)?;
        let email = format!("{local}@{domain}");
        if email.len() > MAX_EMAIL_LEN {
            return Err(too_long());
        }
        Ok(Self(email))
    }

    /// The key under which login failures for `raw` are counted: the canonical address when
    /// `raw` parses, otherwise `invalid:` and the SHA-256 (hex) of its trimmed, lower-cased
    /// text. Either way at most [`MAX_EMAIL_LEN`] bytes without a control character, so any
    /// database indexes it, and a malformed input never shares a key with an address (no `@`).
    pub fn throttle_key(raw: &str) -> String {
        match Self::parse(raw) {
            Ok(email) => email.0,
            Err(_) => {
                let digest = Sha256::digest(raw.trim().to_lowercase().as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("invalid:{hex}")
            }
        }
    }

    /// The canonical address.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }
}

fn too_long() -> String {
    format!("the email is longer than {MAX_EMAIL_LEN} characters")
}

/// The domain's A-label form by UTS 46, with the strict ASCII rules of host names (letters,
/// digits, hyphens) and DNS lengths (63 per label, 253 in all). It must have a dot: a bare
/// `localhost` is no address for us.
fn domain_to_ascii(domain: &str) -> Result<String, String> {
    let invalid = || "the domain after @ is not a valid host name".to_owned();
    let ascii = Uts46::new()
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .map_err(|_| invalid())?;
    if !ascii.contains('.') {
        return Err(invalid());
    }
    Ok(ascii.into_owned())
}

/// Code points that show nothing or nothing reliable: Unicode's Default_Ignorable_Code_Point
/// (zero-width spaces and joiners, bidi controls, soft hyphen, variation selectors, tags, fillers),
/// private use, non-characters and U+FFFD (what a lossy decoder leaves).
fn is_hidden(c: char) -> bool {
    let cp = u32::from(c);
    matches!(
        cp,
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0xFFFD
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
            | 0xE000..=0xF8FF
            | 0xF0000..=0x10FFFF
            | 0xFDD0..=0xFDEF
    ) || cp & 0xFFFE == 0xFFFE
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
    fn spellings_of_one_mailbox_have_one_canonical_form() {
        let cases = [
            (
                "a@bücher.example",
                "a@xn--bcher-kva.example",
                "IDNA domain to A-label",
            ),
            (
                "a@BÜCHER.example",
                "a@xn--bcher-kva.example",
                "upper-case U-label",
            ),
            (
                "a@XN--BCHER-KVA.example",
                "a@xn--bcher-kva.example",
                "upper-case A-label",
            ),
            (
                "a@bu\u{308}cher.example",
                "a@xn--bcher-kva.example",
                "decomposed ü (NFD)",
            ),
            (
                "a@bücher。example",
                "a@xn--bcher-kva.example",
                "ideographic full stop",
            ),
            (
                "ｂob@example.com",
                "bob@example.com",
                "fullwidth letter in the local part",
            ),
            (
                "ＢＯＢ＠ＥＸＡＭＰＬＥ．ＣＯＭ",
                "bob@example.com",
                "all fullwidth, @ and dot too",
            ),
            (
                "\u{3000}bob@example.com\u{3000}",
                "bob@example.com",
                "ideographic spaces trimmed",
            ),
            (
                "𝐛𝐨𝐛@example.com",
                "bob@example.com",
                "mathematical bold letters",
            ),
            (
                "Jose\u{301}@example.com",
                "jos\u{e9}@example.com",
                "local part composed and lower-cased",
            ),
            (
                "ÉLODIE@例え.テスト",
                "élodie@xn--r8jz45g.xn--zckzah",
                "Japanese IDN",
            ),
            (
                "user+tag@sub.example.co.uk",
                "user+tag@sub.example.co.uk",
                "ASCII unchanged",
            ),
        ];
        for (raw, canonical, reason) in cases {
            let email = Email::parse(raw).unwrap_or_else(|e| panic!("{reason}: {raw:?}: {e}"));
            assert_eq!(email.as_str(), canonical, "{reason}");
            let again = Email::parse(email.as_str()).expect("canonical parses");
            assert_eq!(
                again, email,
                "{reason}: the canonical form is a fixed point"
            );
        }
    }

    #[test]
    fn ascii_addresses_are_stored_as_before() {
        // The stored form used to be trimmed + lower-cased: ASCII users must find themselves.
        for raw in [
            "bob@example.com",
            "a.b-c_d+e@x-y.example.org",
            "o'neil@example.ie",
        ] {
            assert_eq!(Email::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b".repeat(250));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let expands = format!("{}@example.com", "\u{FDFA}".repeat(4));
        let fullwidth_total = format!("{}@{}.com", "ａ".repeat(60), "ｂ".repeat(60).repeat(3));
        let huge = format!("{}@example.com", "a".repeat(3000));
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
            ("alice@example.com.", "root dot"),
            ("a\u{0}b@example.com", "NUL in the local part"),
            ("alice@exa\u{0}mple.com", "NUL in the domain"),
            ("\u{0}alice@example.com", "leading NUL, not trimmed away"),
            ("a\u{7f}@example.com", "DEL"),
            ("a\u{85}b@example.com", "C1 control"),
            ("a\u{1b}[31m@example.com", "escape sequence"),
            ("b\u{200B}ob@example.com", "zero-width space"),
            ("bob\u{202E}@example.com", "right-to-left override"),
            ("b\u{AD}ob@example.com", "soft hyphen"),
            ("bob\u{FE0F}@example.com", "variation selector"),
            ("bob\u{E0041}@example.com", "tag character"),
            ("bob\u{E000}@example.com", "private use"),
            ("bob\u{FFFD}@example.com", "replacement character"),
            ("bob\u{2028}x@example.com", "line separator"),
            ("alice@xn--zz.example", "invalid Punycode"),
            ("alice@xn--a.example", "Punycode of a disallowed label"),
            (
                "alice@ex\u{FF0F}ample.com",
                "fullwidth solidus folds to /, not a host character",
            ),
            (
                "alice@ex\u{2FF0}ample.com",
                "ideographic description character: disallowed by UTS 46",
            ),
            ("alice@a\u{5d0}1.example", "bidi rule broken"),
            (
                "alice@\u{301}x.example",
                "label starting with a combining mark",
            ),
            (long_label.as_str(), "label over 63"),
            (long_local.as_str(), "local part over 64"),
            (long_total.as_str(), "over 254 in all"),
            (expands.as_str(), "NFKC expands the local part past 64"),
            (fullwidth_total.as_str(), "over 254 once folded"),
            (huge.as_str(), "3 KB"),
        ];
        for (raw, reason) in cases {
            assert!(Email::parse(raw).is_err(), "{reason}: {raw:?} was accepted");
        }
    }

    #[test]
    fn length_limits_apply_to_the_canonical_form() {
        // 64 fullwidth letters are 192 bytes typed but 64 once folded: accepted.
        let fullwidth = format!("{}@example.com", "ａ".repeat(64));
        assert_eq!(
            Email::parse(&fullwidth).unwrap().local_part(),
            "a".repeat(64)
        );
        // A 30-character Unicode label is longer as an A-label, and the A-label is what counts.
        let unicode_domain = format!("{}@{}.example", "a".repeat(180), "ü".repeat(30));
        assert!(unicode_domain.chars().count() <= MAX_EMAIL_LEN);
        assert!(
            Email::parse(&unicode_domain).is_err(),
            "the A-label is over 63"
        );
        let exact = format!(
            "abc@{}.{}.{}.{}.com",
            "b".repeat(61),
            "c".repeat(61),
            "d".repeat(61),
            "e".repeat(60)
        );
        assert_eq!(exact.len(), MAX_EMAIL_LEN);
        assert!(Email::parse(&exact).is_ok(), "254 bytes exactly");
    }

    #[test]
    fn throttle_key_is_bounded_and_printable_for_any_input() {
        let cases = [
            ("  Bob@Example.com", "a valid email"),
            ("ｂob@example.com", "fullwidth spelling"),
            ("a\u{0}b@example.com", "NUL"),
            ("not an email", "malformed"),
            ("", "empty"),
        ];
        let huge = "x".repeat(3000);
        for (raw, reason) in cases.into_iter().chain([(huge.as_str(), "3 KB")]) {
            let key = Email::throttle_key(raw);
            assert!(key.len() <= MAX_EMAIL_LEN, "{reason}: {} bytes", key.len());
            assert!(!key.chars().any(char::is_control), "{reason}");
        }
        assert_eq!(Email::throttle_key("ＢOB@example.com"), "bob@example.com");
        assert_eq!(
            Email::throttle_key(" Not An Email "),
            Email::throttle_key("not an email"),
            "malformed input is keyed like the old trimmed, lower-cased text"
        );
        assert!(!Email::throttle_key("a\u{0}@x.com").contains('@'));
    }

    #[test]
    fn canonical_form_is_a_fixed_point_for_every_code_point() {
        // Re-parsing a stored address must find the same row: check every scalar value of the
        // BMP and plane 1 once in the local part, in upper and lower case company (CJK
        // ideographs and Hangul syllables, which neither fold nor change case, are skipped).
        let skipped = |cp: &u32| (0x3400..0xA000).contains(cp) || (0xAC00..0xD7A4).contains(cp);
        for c in (0..0x2_0000u32)
            .filter(|cp| !skipped(cp))
            .filter_map(char::from_u32)
        {
            let raw = format!("A{c}z@Example.com");
            if let Ok(email) = Email::parse(&raw) {
                assert_eq!(
                    Email::parse(email.as_str()).as_ref(),
                    Ok(&email),
                    "U+{:04X}",
                    u32::from(c)
                );
            }
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
