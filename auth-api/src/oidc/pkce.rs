//! The secrets of one sign-in flow: `state` (CSRF, RFC 6749 §10.12), `nonce` (ID-token replay,
//! OIDC Core §3.1.2.1) and the PKCE verifier with its S256 challenge (RFC 7636), plus the
//! checks of an app's own PKCE pair for our one-time code.
//!
//! Each random value is 32 bytes from the OS generator, base64url without padding: 43
//! characters of RFC 3986's unreserved set, the shortest verifier RFC 7636 §4.1 allows. The
//! store keeps hashes ([`sha256`]) of the values it looks up by (state, browser binding, code),
//! never the values.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// Shortest PKCE verifier (RFC 7636 §4.1).
pub const VERIFIER_MIN_LEN: usize = 43;
/// Longest PKCE verifier (RFC 7636 §4.1).
pub const VERIFIER_MAX_LEN: usize = 128;

/// 32 random bytes from the OS, base64url: 43 unreserved characters (256 bits).
pub fn random_secret() -> SecretString {
    let mut bytes = zeroize::Zeroizing::new([0_u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    SecretString::from(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

/// SHA-256 of `value`: how the store keys a state, a browser binding or a code, so that a
/// database read does not hand out live values.
pub fn sha256(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The fresh secrets of one flow. `Debug` shows none of them.
#[derive(Debug)]
pub struct FlowSecrets {
    /// Sent as `state`; its hash keys the flow's row.
    pub state: SecretString,
    /// Sent as `nonce` (OIDC providers); must come back in the ID token.
    pub nonce: SecretString,
    /// The PKCE `code_verifier`, sent only to the token endpoint.
    pub pkce_verifier: SecretString,
}

impl FlowSecrets {
    /// Three independent [`random_secret`]s.
    pub fn generate() -> Self {
        Self {
            state: random_secret(),
            nonce: random_secret(),
            pkce_verifier: random_secret(),
        }
    }

    /// The `code_challenge` for the verifier (S256).
    pub fn code_challenge(&self) -> String {
        s256_challenge(self.pkce_verifier.expose_secret())
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))`, RFC 7636 §4.2.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` is 43 to 128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
pub fn is_valid_verifier(verifier: &str) -> bool {
    (VERIFIER_MIN_LEN..=VERIFIER_MAX_LEN).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Whether `challenge` can be an S256 challenge: base64url (no padding) of 32 bytes.
pub fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|bytes| bytes.len() == 32)
}

/// Whether `verifier` is well formed and its S256 challenge is `challenge`, compared in
/// constant time.
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    if !is_valid_verifier(verifier) {
        return false;
    }
    let computed = s256_challenge(verifier);
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn rfc_7636_appendix_b_example_ok() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert_eq!(s256_challenge(verifier), challenge);
        assert!(verify_s256(verifier, challenge));
        assert!(is_valid_s256_challenge(challenge));
    }

    #[test]
    fn verify_s256_refuses_other_pairs() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let cases = [
            (
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
                challenge,
                "another verifier",
            ),
            (
                verifier,
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
                "another challenge",
            ),
            (verifier, "", "empty challenge"),
            (verifier, verifier, "plain method is not S256"),
            (
                "short",
                &s256_challenge("short"),
                "verifier too short, even if it matches",
            ),
        ];
        for (verifier, challenge, reason) in cases {
            assert!(!verify_s256(verifier, challenge), "{reason}");
        }
    }

    #[test]
    fn verifier_format_follows_rfc_7636() {
        let ok = [
            "a".repeat(43),
            "a".repeat(128),
            format!("{}-._~", "Z9".repeat(20)),
        ];
        for verifier in &ok {
            assert!(is_valid_verifier(verifier), "{verifier}");
        }
        let refused = [
            ("a".repeat(42), "too short"),
            ("a".repeat(129), "too long"),
            (format!("{}+", "a".repeat(43)), "+ is not unreserved"),
            (format!("{}=", "a".repeat(43)), "padding"),
            (format!("{} ", "a".repeat(43)), "space"),
            (format!("{}é", "a".repeat(43)), "non-ascii"),
        ];
        for (verifier, reason) in refused {
            assert!(!is_valid_verifier(&verifier), "{reason}");
            assert!(
                !verify_s256(&verifier, &s256_challenge(&verifier)),
                "{reason}"
            );
        }
    }

    #[test]
    fn s256_challenge_format_is_checked() {
        let refused = [
            (
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-c",
                "42 characters",
            ),
            ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM=", "padded"),
            (
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM",
                "standard alphabet",
            ),
            (
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN",
                "non-zero trailing bits",
            ),
        ];
        for (challenge, reason) in refused {
            assert!(!is_valid_s256_challenge(challenge), "{reason}");
        }
    }

    #[test]
    fn flow_secrets_are_fresh_valid_and_redacted() {
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let secrets = FlowSecrets::generate();
            for value in [&secrets.state, &secrets.nonce, &secrets.pkce_verifier] {
                let value = value.expose_secret();
                assert_eq!(value.len(), 43);
                assert!(is_valid_verifier(value));
                assert!(seen.insert(value.to_owned()), "repeated random value");
            }
            let challenge = secrets.code_challenge();
            assert!(is_valid_s256_challenge(&challenge));
            assert!(verify_s256(
                secrets.pkce_verifier.expose_secret(),
                &challenge
            ));
            let debug = format!("{secrets:?}");
            assert!(!debug.contains(secrets.state.expose_secret()), "{debug}");
            assert!(!debug.contains(secrets.nonce.expose_secret()), "{debug}");
            assert!(
                !debug.contains(secrets.pkce_verifier.expose_secret()),
                "{debug}"
            );
        }
    }

    #[test]
    fn sha256_is_the_plain_digest() {
        assert_eq!(
            URL_SAFE_NO_PAD.encode(sha256("abc")),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }
}
