//! The TOTP second factor (RFC 6238) and its recovery codes (issue 15): secrets, codes, the
//! `otpauth://` enrolment URI and its QR code. Pure values: storing them (sealed, hashed) is
//! `store::totp`'s job, sealing `kek`'s, and refusing a replayed step the caller's, with the
//! step [`TotpSecret::verify`] returns.
//!
//! **Parameters**: HMAC-SHA-1, 6 digits, 30-second steps from the Unix epoch: what every
//! authenticator app supports (Google Authenticator ignores `algorithm`, `digits` and `period`).
//! SHA-1's collision weakness does not touch HMAC-SHA-1, whose security rests on the key.
//! A code is accepted in the current step and one step either side (clock drift between the
//! phone and us, and the time it takes to type), so a code lives 60 to 90 seconds.
//!
//! **Why no TOTP crate**: `totp-rs` 6 brings `hmac` 0.13, `sha1` 0.11 and `sha2` 0.11 (a second
//! generation of the RustCrypto digests beside the 0.10/0.12 ones we use) and `constant_time_eq`
//! beside our `subtle`, its `check` answers yes or no without the step that matched, which the
//! caller needs to refuse a replay (RFC 6238 §5.2), and its URI omits the parameters it takes for
//! defaults. HOTP itself (RFC 4226 §5.3) is a dozen lines over `hmac` and `sha1` (RustCrypto,
//! already in the tree), checked here against the RFCs' own vectors.
//!
//! **Recovery codes** are ten random 120-bit values written as 24 lower-case base32 characters
//! in groups of four (`abcd-efgh-ijkl-mnop-qrst-uvwx`), stored only as SHA-256. A plain hash, not
//! bcrypt, because no guess can find a 120-bit random value, offline or on-line: NIST SP 800-63B
//! (look-up secrets) asks for a salted password hash only below 112 bits, and a fast hash lets
//! the store find a code by its hash, one indexed lookup whose timing tells nothing about any
//! code. 60-bit codes (`xxxx-xxxx-xxxx`) would need bcrypt: a dump's unsalted SHA-256 of every
//! user's codes falls to one 2^60 search.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use qrcode::{render::svg, EcLevel, QrCode};
use rand::{rngs::OsRng, RngCore};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

use super::Email;

/// Digits of a code.
pub const TOTP_DIGITS: usize = 6;
/// Seconds of a time step.
pub const TOTP_PERIOD_SECS: i64 = 30;
/// Bytes of a secret: 160 bits, RFC 4226 §4's recommendation and HMAC-SHA-1's block of output.
pub const TOTP_SECRET_BYTES: usize = 20;
/// Steps accepted either side of the current one.
pub const TOTP_DRIFT_STEPS: i64 = 1;
/// Recovery codes made at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Random bytes of a recovery code: 120 bits, 24 base32 characters.
const RECOVERY_CODE_BYTES: usize = 15;
/// Characters of a recovery code, without its hyphens.
const RECOVERY_CODE_CHARS: usize = 24;
/// Characters between the hyphens of a recovery code as shown.
const RECOVERY_CODE_GROUP: usize = 4;
/// Longest input read at all as a code or a recovery code: anything longer is refused unread.
const MAX_CODE_INPUT: usize = 64;
/// Longest issuer name, in characters.
const MAX_ISSUER_CHARS: usize = 64;

/// Escaped in the URI's label: everything but RFC 3986's unreserved characters and `@`, which a
/// path may hold and every app shows as it is. `:` is escaped: it separates issuer and account.
const LABEL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'@');
/// Escaped in a query value: everything but RFC 3986's unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Input refused by this module. Messages never quote the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TotpInputError {
    /// Not six ASCII digits (spaces aside).
    #[error("a code is 6 digits")]
    Code,
    /// Not 24 characters of `a`-`z` and `2`-`7` (hyphens, spaces and case aside).
    #[error("a recovery code is 24 letters and digits from 2 to 7")]
    RecoveryCode,
    /// Empty, too long, or with a `:` or a control character.
    #[error("the issuer must be 1-64 characters without ':' or control characters")]
    Issuer,
    /// The URI does not fit a QR code (it cannot happen with an issuer and an email of the
    /// lengths allowed).
    #[error("the enrolment link is too long for a QR code")]
    QrCode,
}

/// A TOTP shared secret: 160 random bits. `Debug` redacts it; it is zeroed when dropped.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<[u8; TOTP_SECRET_BYTES]>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret([REDACTED])")
    }
}

impl TotpSecret {
    /// A new secret from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0_u8; TOTP_SECRET_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        Self(bytes)
    }

    /// The secret whose bytes are `bytes` (as opened from the store); `None` unless there are
    /// exactly [`TOTP_SECRET_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; TOTP_SECRET_BYTES] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(*bytes)))
    }

    /// The raw bytes, to seal.
    pub fn expose_bytes(&self) -> &[u8; TOTP_SECRET_BYTES] {
        &self.0
    }

    /// The secret in base32 (RFC 4648, upper case, no padding: 32 characters), as an
    /// authenticator app takes it typed in or in the URI.
    pub fn base32(&self) -> SecretString {
        let mut text = Zeroizing::new([0_u8; 32]);
        BASE32_NOPAD.encode_mut(self.0.as_ref(), text.as_mut());
        SecretString::from(String::from_utf8_lossy(text.as_ref()).into_owned())
    }

    /// The Key URI an authenticator app enrols from:
    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`,
    /// the issuer and account percent-encoded (RFC 3986). It holds the secret.
    pub fn otpauth_uri(&self, issuer: &TotpIssuer, account: &Email) -> SecretString {
        let issuer_label = utf8_percent_encode(issuer.as_str(), LABEL);
        let account_label = utf8_percent_encode(account.as_str(), LABEL);
        let issuer_query = utf8_percent_encode(issuer.as_str(), QUERY_VALUE);
        let secret = self.base32();
        // Sized once, so that no reallocation leaves a copy of the secret behind.
        let mut uri =
            String::with_capacity(128 + 3 * (issuer.as_str().len() * 2 + account.as_str().len()));
        uri.push_str("otpauth://totp/");
        uri.extend(issuer_label);
        uri.push(':');
        uri.extend(account_label);
        uri.push_str("?secret=");
        uri.push_str(secret.expose_secret());
        uri.push_str("&issuer=");
        uri.extend(issuer_query);
        uri.push_str(&format!(
            "&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD_SECS}"
        ));
        SecretString::from(uri)
    }

    /// The code an authenticator app shows at `unix_secs` (for tests and the enrolment page's
    /// self-check; logins go through [`TotpSecret::verify`]).
    pub fn code_at(&self, unix_secs: i64) -> TotpCode {
        self.code_at_step(totp_step(unix_secs))
    }

    /// Checks `code` at `now` (Unix seconds) against the steps from one before the current to
    /// one after, every one compared in constant time and none skipped: the answer takes the
    /// same time whichever matched. Returns the step that matched (the latest, should two
    /// match), which the caller must record and refuse from then on with every step up to it:
    /// a code is good once (RFC 6238 §5.2).
    pub fn verify(&self, code: &TotpCode, now: i64) -> Option<i64> {
        let current = totp_step(now);
        let mut matched = -1_i64;
        for step in current - TOTP_DRIFT_STEPS..=current + TOTP_DRIFT_STEPS {
            // Only within 30 s of the epoch: the clock, not the code, decides this branch.
            if step < 0 {
                continue;
            }
            let expected = self.code_at_step(step);
            let equal = expected.0[..].ct_eq(&code.0[..]);
            matched = i64::conditional_select(&matched, &step, equal);
        }
        (matched >= 0).then_some(matched)
    }

    /// The code of time step `step` (at least 0).
    fn code_at_step(&self, step: i64) -> TotpCode {
        let counter = u64::try_from(step).unwrap_or(0);
        let mut value = hotp(self.0.as_ref(), counter, TOTP_DIGITS as u32);
        let mut digits = [b'0'; TOTP_DIGITS];
        for digit in digits.iter_mut().rev() {
            // Always a digit: `value % 10` is below 10.
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
        TotpCode(digits)
    }
}

/// The time step of `unix_secs`: whole periods since the epoch (RFC 6238's T, with T0 = 0).
pub fn totp_step(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(TOTP_PERIOD_SECS)
}

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the big-endian counter, dynamically truncated to 31
/// bits, modulo 10^`digits`.
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes a key of any length; no key is ever refused.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&counter.to_be_bytes());
    let digest: [u8; 20] = mac.finalize().into_bytes().into();
    // The low nibble of the last byte: 0-15, so the four bytes read end at 18 at most.
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 10_u32.pow(digits)
}

/// Six ASCII digits, as typed. `Debug` redacts them: a code is a credential for a minute.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpCode([u8; TOTP_DIGITS]);

impl fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpCode([REDACTED])")
    }
}

impl TotpCode {
    /// The code in `input`: six ASCII digits, with surrounding whitespace and spaces inside
    /// ignored (apps show `123 456`). Other digits (fullwidth, Arabic-Indic…) are refused, not
    /// folded: no app shows them. Input longer than 64 bytes is refused unread.
    pub fn parse(input: &str) -> Result<Self, TotpInputError> {
        if input.len() > MAX_CODE_INPUT {
            return Err(TotpInputError::Code);
        }
        let mut digits = [0_u8; TOTP_DIGITS];
        let mut count = 0;
        for byte in input.trim().bytes().filter(|b| *b != b' ') {
            if !byte.is_ascii_digit() || count == TOTP_DIGITS {
                return Err(TotpInputError::Code);
            }
            digits[count] = byte;
            count += 1;
        }
        if count != TOTP_DIGITS {
            return Err(TotpInputError::Code);
        }
        Ok(Self(digits))
    }

    /// The six digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The issuer an authenticator app files the account under (the operator's name for the
/// service): 1-64 characters, no `:` (it separates issuer and account in the URI's label, and
/// apps split on the first one), no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpIssuer(String);

impl TotpIssuer {
    /// Trims `raw` and checks it.
    pub fn parse(raw: &str) -> Result<Self, TotpInputError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0
            || chars > MAX_ISSUER_CHARS
            || trimmed.chars().any(|c| c == ':' || c.is_control())
        {
            return Err(TotpInputError::Issuer);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The enrolment URI as a QR code: one inline `<svg>` element (no XML prolog, no external
/// reference, no script or style), error correction M, at least 240 px square with its quiet
/// zone. It encodes the secret, so it comes back as a secret too.
pub fn otpauth_qr_svg(uri: &SecretString) -> Result<SecretString, TotpInputError> {
    let code = QrCode::with_error_correction_level(uri.expose_secret().as_bytes(), EcLevel::M)
        .map_err(|_| TotpInputError::QrCode)?;
    let document = code
        .render::<svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    let element = match document.find("<svg") {
        Some(start) => document[start..].to_owned(),
        None => document,
    };
    Ok(SecretString::from(element))
}

/// A recovery code: 120 random bits, kept in canonical form (24 lower-case base32 characters,
/// no hyphens). `Debug` redacts it.
#[derive(Clone)]
pub struct RecoveryCode(SecretString);

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode([REDACTED])")
    }
}

impl RecoveryCode {
    /// A new code from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0_u8; RECOVERY_CODE_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        let mut text = Zeroizing::new([0_u8; RECOVERY_CODE_CHARS]);
        BASE32_NOPAD.encode_mut(bytes.as_ref(), text.as_mut());
        text.make_ascii_lowercase();
        Self(SecretString::from(
            String::from_utf8_lossy(text.as_ref()).into_owned(),
        ))
    }

    /// A new set of [`RECOVERY_CODE_COUNT`] codes.
    pub fn generate_set() -> Vec<Self> {
        (0..RECOVERY_CODE_COUNT).map(|_| Self::generate()).collect()
    }

    /// The code in `input` as a user types it: hyphens, spaces and case ignored, then exactly
    /// 24 characters of `a`-`z` and `2`-`7`. Input longer than 64 bytes is refused unread.
    pub fn parse(input: &str) -> Result<Self, TotpInputError> {
        if input.len() > MAX_CODE_INPUT {
            return Err(TotpInputError::RecoveryCode);
        }
        let mut canonical = Zeroizing::new(String::with_capacity(RECOVERY_CODE_CHARS));
        for byte in input.trim().bytes().filter(|b| !matches!(b, b'-' | b' ')) {
            let byte = byte.to_ascii_lowercase();
            let in_alphabet = byte.is_ascii_lowercase() || (b'2'..=b'7').contains(&byte);
            if !in_alphabet || canonical.len() == RECOVERY_CODE_CHARS {
                return Err(TotpInputError::RecoveryCode);
            }
            canonical.push(char::from(byte));
        }
        if canonical.len() != RECOVERY_CODE_CHARS {
            return Err(TotpInputError::RecoveryCode);
        }
        Ok(Self(SecretString::from(canonical.as_str().to_owned())))
    }

    /// The code as shown to the user, in groups of four: `abcd-efgh-ijkl-mnop-qrst-uvwx`.
    pub fn formatted(&self) -> SecretString {
        let canonical = self.0.expose_secret();
        let mut shown = String::with_capacity(RECOVERY_CODE_CHARS + RECOVERY_CODE_CHARS / 4);
        for (i, c) in canonical.chars().enumerate() {
            if i > 0 && i % RECOVERY_CODE_GROUP == 0 {
                shown.push('-');
            }
            shown.push(c);
        }
        SecretString::from(shown)
    }

    /// What the store keeps: SHA-256 of the canonical form.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.expose_secret().as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 seed (and RFC 4226 Appendix D's): 20 ASCII bytes.
    const RFC_SEED: &[u8] = b"12345678901234567890";

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(RFC_SEED).unwrap()
    }

    fn code(text: &str) -> TotpCode {
        TotpCode::parse(text).unwrap()
    }

    #[test]
    fn rfc_6238_sha1_vectors_hold_at_8_digits_and_truncate_to_6() {
        // (Unix time, TOTP at 8 digits): RFC 6238 Appendix B, the SHA1 rows.
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        let secret = rfc_secret();
        for (time, expected) in vectors {
            let counter = u64::try_from(totp_step(time)).unwrap();
            assert_eq!(
                format!("{:08}", hotp(RFC_SEED, counter, 8)),
                expected,
                "8 digits at {time}"
            );
            let six = &expected[2..];
            assert_eq!(secret.code_at(time).as_str(), six, "6 digits at {time}");
            assert_eq!(
                secret.verify(&code(six), time),
                Some(totp_step(time)),
                "{time}"
            );
        }
    }

    #[test]
    fn rfc_4226_hotp_vectors_hold() {
        // RFC 4226 Appendix D: counters 0 to 9, 6 digits.
        let expected = [
            755_224, 287_082, 359_152, 969_429, 338_314, 254_676, 287_922, 162_583, 399_871,
            520_489,
        ];
        for (counter, value) in expected.into_iter().enumerate() {
            assert_eq!(
                hotp(RFC_SEED, counter as u64, 6),
                value,
                "counter {counter}"
            );
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_no_further() {
        let secret = TotpSecret::generate();
        let now = 1_765_000_015; // inside a step, so both neighbours are whole steps away
        let step = totp_step(now);
        let at = |offset: i64| secret.code_at((step + offset) * TOTP_PERIOD_SECS);
        let cases = [
            (-2, None, "two steps early: beyond the drift"),
            (-1, Some(step - 1), "one step early"),
            (0, Some(step), "the current step"),
            (1, Some(step + 1), "one step late"),
            (2, None, "two steps late: beyond the drift"),
        ];
        for (offset, expected, reason) in cases {
            let candidate = at(offset);
            // A code of another step may equal one inside the window by chance (1 in 10^6).
            let coincidence = (-1..=1).any(|o| o != offset && at(o) == candidate);
            if !coincidence {
                assert_eq!(secret.verify(&candidate, now), expected, "{reason}");
            }
        }
        // The window follows the step, not the second: the last second of a step and the
        // first of the next accept different oldest steps.
        let last_second = (step + 1) * TOTP_PERIOD_SECS - 1;
        let oldest = at(-1);
        if ![at(0), at(1)].contains(&oldest) {
            assert_eq!(secret.verify(&oldest, last_second), Some(step - 1));
        }
        if ![at(0), at(1), at(2)].contains(&oldest) {
            assert_eq!(secret.verify(&oldest, last_second + 1), None);
        }
    }

    #[test]
    fn the_matched_step_lets_the_caller_refuse_a_replay() {
        let secret = TotpSecret::generate();
        let now = 1_765_000_015;
        let typed = secret.code_at(now);

        // The caller records the step of the first login and refuses every step up to it.
        let first = secret.verify(&typed, now).unwrap();
        let replay = secret.verify(&typed, now + 20).unwrap();
        let next = secret.verify(&secret.code_at(now + 30), now + 30).unwrap();

        assert_eq!(first, totp_step(now));
        assert!(replay <= first, "a replay within the window is not newer");
        assert!(next > first, "the next step's code is");
        assert_eq!(
            secret.verify(&typed, now + 3 * TOTP_PERIOD_SECS),
            None,
            "and the code is refused outright once outside the window"
        );
    }

    #[test]
    fn a_clock_at_or_before_the_epoch_never_matches_a_negative_step() {
        let secret = rfc_secret();
        let first = secret.code_at(0);
        assert_eq!(secret.verify(&first, 0), Some(0));
        assert_eq!(
            secret.verify(&first, -1),
            Some(0),
            "step 0 is one step late"
        );
        assert_eq!(
            secret.verify(&first, -31),
            None,
            "every step of the window is negative"
        );
        assert_eq!(secret.verify(&first, i64::MIN), None);
    }

    #[test]
    fn malformed_codes_are_refused_without_panic() {
        let cases = [
            ("", "empty"),
            ("12345", "five digits"),
            ("1234567", "seven digits"),
            ("12a456", "a letter"),
            ("+12345", "a sign"),
            ("-12345", "a minus"),
            ("12345\0", "a NUL"),
            ("12\t3456", "a tab inside"),
            ("１２３４５６", "fullwidth digits"),
            ("١٢٣٤٥٦", "Arabic-Indic digits"),
            ("१२३४५६", "Devanagari digits"),
            ("123456\u{200b}", "a zero-width space"),
            ("12345６", "one fullwidth digit"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                TotpCode::parse(input),
                Err(TotpInputError::Code),
                "{reason}"
            );
        }
        let long = "1".repeat(1 << 20);
        assert_eq!(TotpCode::parse(&long), Err(TotpInputError::Code));
        for (input, reason) in [
            ("123456", "plain"),
            ("123 456", "as apps show it"),
            (" 123456\n", "surrounding whitespace"),
        ] {
            assert_eq!(
                TotpCode::parse(input).unwrap().as_str(),
                "123456",
                "{reason}"
            );
        }
    }

    #[test]
    fn a_secret_is_160_random_bits_in_base32_and_never_shown_by_debug() {
        let (a, b) = (TotpSecret::generate(), TotpSecret::generate());
        assert_ne!(a.expose_bytes(), b.expose_bytes());
        let text = a.base32();
        let text = text.expose_secret();
        assert_eq!(text.len(), 32);
        assert_eq!(
            BASE32_NOPAD.decode(text.as_bytes()).unwrap(),
            a.expose_bytes().to_vec()
        );
        assert_eq!(
            rfc_secret().base32().expose_secret(),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        let debug = format!("{a:?} {:?}", a.code_at(0));
        assert!(!debug.contains(text), "{debug}");
        assert!(!debug.contains(a.code_at(0).as_str()), "{debug}");
        assert!(TotpSecret::from_bytes(&[0; 19]).is_none());
        assert!(TotpSecret::from_bytes(&[0; 21]).is_none());
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_every_parameter() {
        let issuer = TotpIssuer::parse("ACME Co").unwrap();
        let email = Email::parse("ada@example.com").unwrap();
        let uri = rfc_secret().otpauth_uri(&issuer, &email);
        assert_eq!(
            uri.expose_secret(),
            "otpauth://totp/ACME%20Co:ada@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=ACME%20Co&algorithm=SHA1&digits=6&period=30"
        );

        // Characters that would end the label or the query are escaped, and a URL parser
        // reads back what was meant.
        let issuer = TotpIssuer::parse("Ünïcode & Sons/#1?").unwrap();
        let email = Email::parse("a:b&c?d#e@example.com").unwrap();
        let uri = TotpSecret::generate().otpauth_uri(&issuer, &email);
        let parsed = url::Url::parse(uri.expose_secret()).unwrap();
        assert_eq!(parsed.scheme(), "otpauth");
        assert_eq!(parsed.host_str(), Some("totp"));
        let label = percent_encoding::percent_decode_str(&parsed.path()[1..])
            .decode_utf8()
            .unwrap();
        let (label_issuer, account) = label.split_once(':').unwrap();
        assert_eq!(label_issuer, issuer.as_str());
        assert_eq!(account, email.as_str());
        let query: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
        let names: Vec<&str> = query.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["secret", "issuer", "algorithm", "digits", "period"]);
        assert_eq!(query[1].1, issuer.as_str());
    }

    #[test]
    fn issuers_with_a_colon_or_control_characters_are_refused() {
        for (raw, reason) in [
            ("", "empty"),
            ("   ", "blank"),
            ("ACME:Co", "a colon splits the label"),
            ("ACME\nCo", "a newline"),
            ("ACME\u{7f}", "DEL"),
        ] {
            assert_eq!(
                TotpIssuer::parse(raw),
                Err(TotpInputError::Issuer),
                "{reason}"
            );
        }
        assert!(TotpIssuer::parse(&"é".repeat(64)).is_ok());
        assert!(TotpIssuer::parse(&"é".repeat(65)).is_err());
        assert_eq!(TotpIssuer::parse(" ACME ").unwrap().as_str(), "ACME");
    }

    #[test]
    fn recovery_codes_are_ten_distinct_120_bit_codes_in_groups_of_four() {
        let codes = RecoveryCode::generate_set();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        let mut hashes: Vec<[u8; 32]> = codes.iter().map(RecoveryCode::hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), RECOVERY_CODE_COUNT, "distinct");
        for code in &codes {
            let shown = code.formatted();
            let shown = shown.expose_secret();
            let groups: Vec<&str> = shown.split('-').collect();
            assert_eq!(groups.len(), 6, "{shown}");
            assert!(groups.iter().all(|g| g.len() == 4), "{shown}");
            let letters: String = groups.concat();
            assert_eq!(
                BASE32_NOPAD
                    .decode(letters.to_ascii_uppercase().as_bytes())
                    .unwrap()
                    .len(),
                RECOVERY_CODE_BYTES,
                "120 bits"
            );
            assert!(!format!("{code:?}").contains(&letters));
            assert_eq!(
                code.hash(),
                <[u8; 32]>::from(Sha256::digest(letters.as_bytes())),
                "SHA-256 of the canonical form"
            );
        }
    }

    #[test]
    fn a_recovery_code_is_read_as_people_type_it() {
        let code = RecoveryCode::generate();
        let shown = code.formatted();
        let shown = shown.expose_secret().to_owned();
        let spellings = [
            shown.clone(),
            shown.to_ascii_uppercase(),
            shown.replace('-', ""),
            shown.replace('-', " "),
            format!("  {shown}\n"),
        ];
        for typed in spellings {
            assert_eq!(
                RecoveryCode::parse(&typed).unwrap().hash(),
                code.hash(),
                "{typed:?}"
            );
        }
    }

    #[test]
    fn malformed_recovery_codes_are_refused_without_panic() {
        let good = "abcd-efgh-ijkl-mnop-qrst-uvwx";
        assert!(RecoveryCode::parse(good).is_ok());
        let cases = [
            ("", "empty"),
            ("abcd-efgh-ijkl-mnop-qrst-uvw", "23 characters"),
            ("abcd-efgh-ijkl-mnop-qrst-uvwxy", "25 characters"),
            ("abcd-efgh-ijkl-mnop-qrst-uvw0", "0 is not base32"),
            ("abcd-efgh-ijkl-mnop-qrst-uvw1", "1 is not base32"),
            ("abcd-efgh-ijkl-mnop-qrst-uvw8", "8 is not base32"),
            ("abcd_efgh_ijkl_mnop_qrst_uvwx", "underscores"),
            ("ａbcd-efgh-ijkl-mnop-qrst-uvwx", "a fullwidth letter"),
            ("abcd-efgh-ijkl-mnop-qrst-uvẃx", "an accented letter"),
            ("abcd-efgh-ijkl-mnop-qrst-uvwx\0", "a NUL"),
        ];
        for (input, reason) in cases {
            assert_eq!(
                RecoveryCode::parse(input).map(|c| c.hash()),
                Err(TotpInputError::RecoveryCode),
                "{reason}"
            );
        }
        let long = "a".repeat(1 << 20);
        assert!(RecoveryCode::parse(&long).is_err());
    }

    #[test]
    fn the_qr_code_is_an_inline_svg_that_reads_back_as_the_uri() {
        let issuer = TotpIssuer::parse("ACME Co").unwrap();
        let email = Email::parse("ada@example.com").unwrap();
        let uri = TotpSecret::generate().otpauth_uri(&issuer, &email);

        let svg = otpauth_qr_svg(&uri).unwrap();
        let svg = svg.expose_secret();

        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"));
        for forbidden in ["<?xml", "href", "<image", "<script", "style", "url("] {
            assert!(!svg.contains(forbidden), "{forbidden}");
        }
        assert_eq!(decode_svg_qr(svg), uri.expose_secret());
    }

    /// Rasterises the rectangles of `svg` (qrcode's `M{x} {y}h{w}v{h}H{x}V{y}` path) and reads
    /// the QR code in them with an independent decoder.
    fn decode_svg_qr(svg: &str) -> String {
        let number = |s: &str| s.parse::<usize>().unwrap();
        let attribute = |name: &str| {
            let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            number(&svg[start..start + svg[start..].find('"').unwrap()])
        };
        let (width, height) = (attribute("width"), attribute("height"));
        let mut dark = vec![false; width * height];
        let path_start = svg.find(" d=\"").unwrap() + 4;
        let path = &svg[path_start..path_start + svg[path_start..].find('"').unwrap()];
        for rect in path.split('M').filter(|r| !r.is_empty()) {
            let (x, rest) = rect.split_once(' ').unwrap();
            let (y, rest) = rest.split_once('h').unwrap();
            let (w, rest) = rest.split_once('v').unwrap();
            let (h, _) = rest.split_once('H').unwrap();
            let (x, y, w, h) = (number(x), number(y), number(w), number(h));
            for row in y..y + h {
                for col in x..x + w {
                    dark[row * width + col] = true;
                }
            }
        }
        let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
            if dark[y * width + x] {
                0
            } else {
                255
            }
        });
        let grids = image.detect_grids();
        assert_eq!(grids.len(), 1);
        let (_, content) = grids[0].decode().unwrap();
        content
    }
}
