//! The JWS algorithms this crate implements, by their RFC 7518 names. Which of them a decoder
//! accepts is [`Validation::algorithms`](crate::Validation::algorithms)' business, not this one's.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

/// A JWS signing algorithm (the header's `alg`). `none` is deliberately not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// HMAC with SHA-256 (RFC 7518 §3.2), with a secret of at least 32 bytes.
    HS256,
}

impl Algorithm {
    /// The `alg` header value, e.g. `"HS256"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HS256 => "HS256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = Error;

    /// Parses an `alg` value, case-sensitively as RFC 7515 §4.1.1 says; anything unknown
    /// (`"none"` included) is [`ErrorKind::AlgorithmNotAllowed`].
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "HS256" => Ok(Self::HS256),
            _ => Err(ErrorKind::AlgorithmNotAllowed.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hs256_round_trips_through_str() {
        assert_eq!(Algorithm::HS256.as_str(), "HS256");
        assert_eq!("HS256".parse::<Algorithm>().unwrap(), Algorithm::HS256);
        assert_eq!(Algorithm::HS256.to_string(), "HS256");
    }

    #[test]
    fn unknown_names_are_not_allowed() {
        let cases = [
            ("none", "unsecured JWS (RFC 8725 §2.1)"),
            ("None", "case variant of none"),
            ("hs256", "alg is case-sensitive"),
            ("HS512", "not implemented"),
            ("RS256", "asymmetric algorithms are not implemented yet"),
            ("", "empty"),
        ];
        for (name, reason) in cases {
            let err = name.parse::<Algorithm>().unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::AlgorithmNotAllowed),
                "{reason}"
            );
        }
    }
}
