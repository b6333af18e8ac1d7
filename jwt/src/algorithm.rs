//! The JWS algorithms this crate implements, by their RFC 7518 / RFC 8037 names. Which of them a
//! decoder accepts is [`Validation::algorithms`](crate::Validation::algorithms)' business, not
//! this one's.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};

/// A JWS signing algorithm (the header's `alg`). `none` is deliberately not one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4): 64-byte `r || s` signatures.
    ES256,
    /// Ed25519 signatures (RFC 8037 §3.1); other EdDSA curves are not supported.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), with moduli of 2048 to 4096 bits.
    RS256,
    /// HMAC with SHA-256 (RFC 7518 §3.2), with a secret of at least 32 bytes.
    HS256,
}

impl Algorithm {
    /// Every algorithm, public-key ones first.
    pub const ALL: [Algorithm; 4] = [Self::ES256, Self::EdDSA, Self::RS256, Self::HS256];

    /// The `alg` header value, e.g. `"ES256"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    /// Whether the key that verifies also signs (HMAC): such keys are secrets, never published.
    pub const fn is_symmetric(self) -> bool {
        matches!(self, Self::HS256)
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
        Self::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| ErrorKind::AlgorithmNotAllowed.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_round_trips_through_str() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.as_str().parse::<Algorithm>().unwrap(), alg);
            assert_eq!(alg.to_string(), alg.as_str());
        }
        assert_eq!(
            Algorithm::ALL.map(Algorithm::as_str),
            ["ES256", "EdDSA", "RS256", "HS256"]
        );
    }

    #[test]
    fn only_hs256_is_symmetric() {
        let symmetric: Vec<_> = Algorithm::ALL
            .into_iter()
            .filter(|alg| alg.is_symmetric())
            .collect();
        assert_eq!(symmetric, [Algorithm::HS256]);
    }

    #[test]
    fn unknown_names_are_not_allowed() {
        let cases = [
            ("none", "unsecured JWS (RFC 8725 §2.1)"),
            ("None", "case variant of none"),
            ("hs256", "alg is case-sensitive"),
            ("eddsa", "alg is case-sensitive"),
            ("Ed25519", "the curve is not the algorithm (RFC 8037 §3.1)"),
            ("HS512", "not implemented"),
            ("ES384", "another curve of the ES256 family"),
            ("PS256", "another RSA padding"),
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
