//! The crate's one error type. Every failure of encoding, decoding or key parsing is an [`Error`]
//! whose [`ErrorKind`] names the step that refused; messages never quote token or key content.

use std::fmt;

/// Result of this crate's operations, with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from encoding, decoding or key parsing; [`Error::kind`] says which check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
}

/// What went wrong. Decoding checks run in the order of the variants up to `InvalidClaims`, so
/// the kind also tells how far a token got. New kinds may be added.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token is longer than [`Validation::max_token_len`](crate::Validation::max_token_len).
    TooLarge,
    /// The token is not exactly three `.`-separated segments (a 5-segment JWE is refused here).
    InvalidFormat,
    /// A segment or a JWK `k` is not strict base64url without padding.
    InvalidBase64,
    /// The header, the claims or a JWK set is not a JSON object, or not JSON at all.
    InvalidJson,
    /// A JSON object repeats a member name, at any depth (RFC 7515 §4, RFC 7519 §4).
    DuplicateMember,
    /// `alg` is missing, not a string, unknown (`none` included) or not in the allow-list.
    AlgorithmNotAllowed,
    /// `typ` is missing, not a string or not the required type.
    InvalidType,
    /// The header has no `kid` and the key set does not hold exactly one key.
    MissingKeyId,
    /// The header's `kid` is not a string or names no key in the key set.
    UnknownKey,
    /// The key for `kid` is bound to another algorithm than the header's `alg`.
    KeyAlgorithmMismatch,
    /// The header has a `crit` member: this crate understands no extensions.
    UnsupportedCritical,
    /// The signature does not verify with the selected key.
    InvalidSignature,
    /// A claim that the validation requires is missing or `null`; holds the claim name.
    MissingClaim(String),
    /// A registered claim has the wrong JSON type; holds the claim name.
    InvalidClaim(String),
    /// `exp` plus the leeway is not after `now`.
    Expired,
    /// `nbf` is after `now` plus the leeway.
    NotYetValid,
    /// `iat` is after `now` plus the leeway.
    IssuedInFuture,
    /// `iss` is not the configured issuer.
    InvalidIssuer,
    /// `aud` contains none of the configured audiences.
    InvalidAudience,
    /// The claims are valid JSON but do not deserialize into the caller's type; holds serde's
    /// message, cut before any quoted input.
    InvalidClaims(String),
    /// A key or JWK cannot be used (short secret, bad `k`, duplicate `kid`, …); holds why.
    InvalidKey(String),
    /// The header or the claims could not be serialized; holds why.
    Encoding(String),
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Consumes the error, returning its kind.
    pub fn into_kind(self) -> ErrorKind {
        self.kind
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self { kind }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.kind.fmt(f)
    }
}

impl std::error::Error for Error {}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("token is too large"),
            Self::InvalidFormat => f.write_str("token is not three dot-separated segments"),
            Self::InvalidBase64 => f.write_str("token segment is not base64url without padding"),
            Self::InvalidJson => f.write_str("not a json object"),
            Self::DuplicateMember => f.write_str("duplicate json member name"),
            Self::AlgorithmNotAllowed => f.write_str("algorithm not allowed"),
            Self::InvalidType => f.write_str("token type not accepted"),
            Self::MissingKeyId => f.write_str("token has no key id"),
            Self::UnknownKey => f.write_str("unknown key id"),
            Self::KeyAlgorithmMismatch => f.write_str("key is bound to another algorithm"),
            Self::UnsupportedCritical => f.write_str("unsupported critical header parameter"),
            Self::InvalidSignature => f.write_str("invalid signature"),
            Self::MissingClaim(name) => write!(f, "missing required claim `{name}`"),
            Self::InvalidClaim(name) => write!(f, "claim `{name}` has the wrong type"),
            Self::Expired => f.write_str("token has expired"),
            Self::NotYetValid => f.write_str("token is not valid yet"),
            Self::IssuedInFuture => f.write_str("token was issued in the future"),
            Self::InvalidIssuer => f.write_str("invalid issuer"),
            Self::InvalidAudience => f.write_str("invalid audience"),
            Self::InvalidClaims(why) => write!(f, "invalid claims: {why}"),
            Self::InvalidKey(why) => write!(f, "invalid key: {why}"),
            Self::Encoding(why) => write!(f, "encoding failed: {why}"),
        }
    }
}

/// serde's message for `err`, cut before the first quoted piece of input, so that token and key
/// content never reaches a log: `invalid type: string "alice", expected u64` becomes
/// `invalid type: string`.
pub(crate) fn redacted(err: &serde_json::Error) -> String {
    let message = err.to_string();
    // A missing field's name comes from the caller's type, not from the input.
    if message.starts_with("missing field") {
        return message;
    }
    let cut = message.split(['"', '`']).next().unwrap_or_default();
    cut.trim_end().trim_end_matches(':').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<ErrorKind> {
        use ErrorKind::*;
        vec![
            TooLarge,
            InvalidFormat,
            InvalidBase64,
            InvalidJson,
            DuplicateMember,
            AlgorithmNotAllowed,
            InvalidType,
            MissingKeyId,
            UnknownKey,
            KeyAlgorithmMismatch,
            UnsupportedCritical,
            InvalidSignature,
            MissingClaim("exp".to_owned()),
            InvalidClaim("aud".to_owned()),
            Expired,
            NotYetValid,
            IssuedInFuture,
            InvalidIssuer,
            InvalidAudience,
            InvalidClaims("missing field `sub`".to_owned()),
            InvalidKey("too short".to_owned()),
            Encoding("key must be a string".to_owned()),
        ]
    }

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        for kind in all_kinds() {
            let message = Error::from(kind).to_string();
            assert!(!message.is_empty());
            assert!(!message.ends_with('.'), "{message}");
            assert!(!message.chars().any(char::is_uppercase), "{message}");
        }
    }

    #[test]
    fn kind_round_trips_through_error() {
        let err = Error::from(ErrorKind::Expired);
        assert!(matches!(err.kind(), ErrorKind::Expired));
        assert_eq!(err.into_kind(), ErrorKind::Expired);
    }

    #[test]
    fn redacted_message_never_quotes_input() {
        #[derive(Debug, serde::Deserialize)]
        struct Claims {
            #[allow(dead_code, reason = "only deserialized")]
            n: u64,
        }
        let cases = [
            (
                r#"{"n":"alice"}"#,
                "invalid type: string",
                "a string value is token content",
            ),
            (
                r#"{"n":-5}"#,
                "invalid value: integer",
                "a number value is token content",
            ),
            (
                r#"{}"#,
                "missing field `n`",
                "a missing field's name comes from the type",
            ),
        ];
        for (json, expected, reason) in cases {
            let value = serde_json::from_str(json).unwrap();
            let err = serde_json::from_value::<Claims>(value).unwrap_err();
            assert_eq!(redacted(&err), expected, "{reason}");
        }
    }
}
