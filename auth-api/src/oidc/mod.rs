//! The OpenID Connect / OAuth 2.0 relying party behind social login (issue 14): the operator's
//! provider list ([`providers`]), discovery ([`discovery`]), the per-flow secrets and PKCE
//! ([`pkce`]), the authorization URL ([`authorize`]), the code exchange and userinfo
//! ([`exchange`]), ID-token verification against the provider's JWKS ([`id_token`]), and
//! [`registry::Registry`], which holds them per provider for the routes.
//!
//! Nothing here is reachable from a route yet. Every fetch goes through [`HttpClient`]: 5 s
//! timeouts, no redirects followed, a size cap per document, https unless the host is a
//! loopback address (dev and tests). Secrets (client secrets, codes, PKCE verifiers, tokens) are
//! `secrecy` types and never appear in `Debug` output or in an [`Error`]'s message.

pub mod authorize;
pub mod discovery;
mod error;
pub mod exchange;
mod http;
pub mod id_token;
pub mod pkce;
pub mod providers;
pub mod registry;
#[cfg(test)]
mod test_support;

pub use error::{Error, IdTokenError, Result};
pub use http::{
    HttpClient, DISCOVERY_MAX_BYTES, FETCH_TIMEOUT, JWKS_MAX_BYTES, TOKEN_RESPONSE_MAX_BYTES,
    USERINFO_MAX_BYTES,
};

/// Who the provider says signed in: what an identity row (`provider`, `subject`) and the
/// email-linking decision need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's stable id of the user: the ID token's `sub`, or GitHub's numeric user id.
    pub subject: String,
    /// The email the provider asserts, if any.
    pub email: Option<String>,
    /// Whether the provider asserts that it verified `email`: only a JSON `true` counts.
    pub email_verified: bool,
}
