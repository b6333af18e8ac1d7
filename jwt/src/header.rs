//! The JOSE header: the three members this crate writes (`alg`, `typ`, `kid`) and the checks on
//! a received header that come before any cryptography. Other members (`jku`, `x5u`, `x5c`,
//! `jwk`, …) are ignored: keys only ever come from the caller's [`KeySet`](crate::KeySet).

use serde::Serialize;
use serde_json::{Map, Value};

use crate::algorithm::Algorithm;
use crate::error::{Error, ErrorKind, Result};
use crate::key::Key;
use crate::validation::Validation;

/// The `typ` of access tokens, RFC 9068 §2.1.
const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// A JOSE header. Encoded as JSON with the members in the order `alg`, `typ`, `kid`; absent
/// optional members are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The signing algorithm; must match the key's.
    pub alg: Algorithm,
    /// The media type of the token, e.g. `"at+jwt"`. None by default.
    pub typ: Option<String>,
    /// The id of the signing key. None by default.
    pub kid: Option<String>,
}

impl Header {
    /// A header with `alg` only: no `typ`, no `kid`.
    pub fn new(alg: Algorithm) -> Self {
        Self {
            alg,
            typ: None,
            kid: None,
        }
    }

    /// The header of an access token (RFC 9068) signed by `key`: its `alg`, `typ`
    /// `"at+jwt"`, and its `kid`.
    pub fn access_token(key: &Key) -> Self {
        Self {
            alg: key.algorithm(),
            typ: Some(ACCESS_TOKEN_TYP.to_owned()),
            kid: Some(key.kid().to_owned()),
        }
    }

    /// The header as compact JSON, members in the order `alg`, `typ`, `kid`.
    pub(crate) fn to_json(&self) -> Result<Vec<u8>> {
        #[derive(Serialize)]
        struct Jose<'a> {
            alg: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            typ: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            kid: Option<&'a str>,
        }
        let jose = Jose {
            alg: self.alg.as_str(),
            typ: self.typ.as_deref(),
            kid: self.kid.as_deref(),
        };
        serde_json::to_vec(&jose).map_err(|e| ErrorKind::Encoding(e.to_string()).into())
    }

    /// Reads a received header and checks, in this order: `alg` is an allowed algorithm, `typ`
    /// is the required type, there is no `crit`, and `kid`, if present, is a string.
    pub(crate) fn from_json(members: &Map<String, Value>, validation: &Validation) -> Result<Self> {
        let alg = match members.get("alg") {
            Some(Value::String(alg)) => alg.parse::<Algorithm>()?,
            _ => return Err(ErrorKind::AlgorithmNotAllowed.into()),
        };
        if !validation.algorithms.contains(&alg) {
            return Err(ErrorKind::AlgorithmNotAllowed.into());
        }
        let typ = optional_string(members, "typ", ErrorKind::InvalidType)?;
        if let Some(required) = &validation.required_typ {
            if !typ.as_deref().is_some_and(|typ| typ_matches(typ, required)) {
                return Err(ErrorKind::InvalidType.into());
            }
        }
        if members.contains_key("crit") {
            return Err(ErrorKind::UnsupportedCritical.into());
        }
        let kid = optional_string(members, "kid", ErrorKind::UnknownKey)?;
        Ok(Self { alg, typ, kid })
    }
}

/// The string member `name`, or `wrong_type` if it is present but not a string (`null` included).
fn optional_string(
    members: &Map<String, Value>,
    name: &str,
    wrong_type: ErrorKind,
) -> Result<Option<String>> {
    match members.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(Error::from(wrong_type)),
    }
}

/// Compares two `typ` values as media types (RFC 7515 §4.1.9): case-insensitively, reading a
/// value without a `/` as if `application/` were prepended.
pub(crate) fn typ_matches(actual: &str, required: &str) -> bool {
    fn media_type(typ: &str) -> (&str, &str) {
        typ.split_once('/').unwrap_or(("application", typ))
    }
    let (actual_type, actual_subtype) = media_type(actual);
    let (required_type, required_subtype) = media_type(required);
    actual_type.eq_ignore_ascii_case(required_type)
        && actual_subtype.eq_ignore_ascii_case(required_subtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typ_comparison_follows_rfc_7515() {
        let cases = [
            ("at+jwt", true, "exact"),
            ("AT+JWT", true, "case-insensitive"),
            (
                "application/at+jwt",
                true,
                "application/ prefix is optional",
            ),
            ("Application/At+Jwt", true, "prefix is case-insensitive too"),
            ("JWT", false, "generic JWT type (RFC 8725 §3.11)"),
            ("rt+jwt", false, "refresh token type"),
            ("at+jwt ", false, "no trimming"),
            ("text/at+jwt", false, "another top-level type"),
            ("application/", false, "no subtype"),
            ("", false, "empty"),
        ];
        for (typ, expected, reason) in cases {
            assert_eq!(typ_matches(typ, "at+jwt"), expected, "{typ}: {reason}");
            assert_eq!(
                typ_matches(typ, "application/at+jwt"),
                expected,
                "{typ}: {reason}"
            );
        }
    }

    #[test]
    fn json_members_in_order_alg_typ_kid() {
        let json = Header::access_token(&crate::test_util::key())
            .to_json()
            .unwrap();
        assert_eq!(json, br#"{"alg":"HS256","typ":"at+jwt","kid":"k1"}"#);
        let json = Header::new(Algorithm::HS256).to_json().unwrap();
        assert_eq!(json, br#"{"alg":"HS256"}"#);
    }

    #[test]
    fn access_token_header_fields() {
        let header = Header::access_token(&crate::test_util::key());
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some("k1"));
    }
}
