//! What the request path keeps of a verified token: [`Identity`], built by `decide` from the
//! claims of a token that passed `auth_jwt::decode`, shared by the token cache, the rules
//! (roles, `acr`, `email_verified`) and the headers set upstream. It does not read claims or
//! verify anything itself.

use crate::revocations::{StringClaim, TokenIds};

/// What the request path needs from a verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// The token's `exp`, seconds since the Unix epoch.
    pub exp: u64,
    /// Headers to set upstream, from `claim_to_headers`.
    pub claim_headers: Vec<(String, String)>,
    /// The roles claim.
    pub roles: Vec<String>,
    /// The `acr` claim, when it is a string.
    pub acr: Option<String>,
    /// Whether the `email_verified` claim is JSON `true` (anything else, or none, is `false`).
    pub email_verified: bool,
    /// `sub`.
    pub sub: StringClaim,
    /// `sid`.
    pub sid: StringClaim,
    /// `iat` rounded down to whole seconds, if it is a number.
    pub iat: Option<i64>,
}

impl Identity {
    /// The claims the revocation feed is matched against.
    pub(crate) fn token_ids(&self) -> TokenIds<'_> {
        TokenIds {
            sub: self.sub.as_id(),
            sid: self.sid.as_id(),
            iat: self.iat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocations::IdClaim;

    #[test]
    fn token_ids_lend_sub_sid_and_iat_as_revocation_reads_them() {
        let identity = Identity {
            exp: 10,
            claim_headers: Vec::new(),
            roles: Vec::new(),
            acr: None,
            email_verified: false,
            sub: StringClaim::Text("u1".to_owned()),
            sid: StringClaim::NotText,
            iat: None,
        };
        assert_eq!(
            identity.token_ids(),
            TokenIds {
                sub: IdClaim::Text("u1"),
                sid: IdClaim::NotText,
                iat: None,
            }
        );
    }
}
