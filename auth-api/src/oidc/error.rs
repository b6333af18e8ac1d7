//! [`Error`]: the OIDC module's one error type. Messages never quote a secret, a code or a
//! token; what a provider sent is described, not echoed (except the RFC 6749 `error` code).

use crate::oidc::providers::PROVIDERS_FILE_VAR;

/// `Result` with the module's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an OIDC step failed. The routes will map `Unavailable` to 503, `InvalidResponse` and
/// `TokenRefused` to 502, `InvalidIdToken` to a refused sign-in, `Config` stops the start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The providers file is unusable; the message starts with the field's path
    /// (`providers[1].issuer: …`).
    #[error("{PROVIDERS_FILE_VAR}: {0}")]
    Config(String),
    /// The provider could not be reached, did not answer within the timeout, or answered
    /// 429 or 5xx: retrying later may work.
    #[error("{what}: provider unavailable: {why}")]
    Unavailable {
        /// Which document or endpoint: `discovery document`, `JWKS`, `token response`, ….
        what: &'static str,
        /// Why, for the log.
        why: String,
    },
    /// The provider answered something we refuse: a redirect, another status, a body over the
    /// cap, invalid JSON, a missing or insecure member, another issuer.
    #[error("{what}: invalid answer from the provider: {why}")]
    InvalidResponse {
        /// Which document or endpoint.
        what: &'static str,
        /// Why, for the log.
        why: String,
    },
    /// The token endpoint refused the code with an RFC 6749 §5.2 error (`invalid_grant`: the
    /// code is expired or was already used; `invalid_client`: wrong client credentials).
    #[error("the token endpoint refused the code: {error}")]
    TokenRefused {
        /// The `error` code the provider sent (only RFC 6749 `error` characters are kept).
        error: String,
    },
    /// The callback's RFC 9207 `iss` is not the provider's issuer, or is missing although the
    /// provider promises it: the code may come from another provider (mix-up attack).
    #[error("the authorization response's issuer is not the provider's")]
    ResponseIssuer,
    /// The ID token does not verify.
    #[error("invalid id token: {0}")]
    InvalidIdToken(#[from] IdTokenError),
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdTokenError {
    /// The JOSE checks: format, `alg` (only RS256, ES256, EdDSA), `kid` (also unknown after one
    /// refetch of the JWKS), signature, `exp`, `iat`, `iss`, `aud`, `sub`.
    #[error(transparent)]
    Jwt(#[from] auth_jwt::Error),
    /// The header's `typ` is present and not `JWT` (e.g. an access token, `at+jwt`).
    #[error("token type is not an id token")]
    Type,
    /// `sub` is empty, longer than 255 bytes or not a string.
    #[error("invalid subject")]
    Subject,
    /// `nonce` is missing or not a string.
    #[error("nonce missing")]
    MissingNonce,
    /// `nonce` is not the one this flow sent.
    #[error("nonce mismatch")]
    NonceMismatch,
    /// `azp` is present and not our client id, or missing while `aud` has several values.
    #[error("authorized party (azp) is not this client")]
    AuthorizedParty,
    /// The provider is restricted to a Google Workspace domain and the token's `hd` is not it.
    #[error("the account is not of the required hosted domain")]
    HostedDomain,
    /// A claim that we read (`aud`, `azp`, `email`) has the wrong JSON type.
    #[error("claim `{0}` has the wrong type")]
    Claim(&'static str),
}

impl Error {
    pub(crate) fn unavailable(what: &'static str, why: impl Into<String>) -> Self {
        Self::Unavailable {
            what,
            why: why.into(),
        }
    }

    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Self::InvalidResponse {
            what,
            why: why.into(),
        }
    }
}
