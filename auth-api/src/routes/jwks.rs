//! The public, unauthenticated key endpoints: `GET /.well-known/jwks.json` and the discovery
//! document (`/.well-known/openid-configuration`, `/.well-known/oauth-authorization-server`).
//!
//! Both are cached by verifiers for `AUTH_JWKS_MAX_AGE_SECS`, which the configuration keeps
//! below `AUTH_KEY_PUBLISH_DELAY_SECS`: a rotated-in key is in every fresh copy before it
//! signs. The gateway's own feed, with HMAC secrets, is `internal.rs`.

use auth_jwt::{Algorithm, Jwk, JwkSet};
use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{routes::openapi::JwksDoc, state::AppState};

/// The route of the public JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// `GET /.well-known/jwks.json`: the public key of every key that verifies now (pending, active
/// and retired), with `kid`, `kty`, `alg` and `use: "sig"`. HMAC keys are secrets and never
/// appear, nor does any private member.
#[utoipa::path(get, path = "/.well-known/jwks.json", responses(
    (status = 200, description = "the public keys of every key that verifies now; HMAC keys are never listed",
     body = JwksDoc, content_type = "application/json",
     headers(("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"))),
))]
pub(super) async fn public_jwks(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let snapshot = state.ring.snapshot();
    let keys = snapshot
        .published(now, state.ring.policy())
        .filter_map(|k| Jwk::public(&k.key))
        .collect();
    cacheable(&state, axum::Json(JwkSet { keys }).into_response())
}

/// The discovery document (RFC 8414 §2, also served where OpenID Connect Discovery looks for
/// it). Only what is true of this service: it issues access tokens and publishes their keys,
/// but has no OAuth authorization or token endpoint, so it lists no response or grant type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiscoveryDoc {
    /// `AUTH_JWT_ISSUER`, exactly the `iss` of our access tokens.
    pub issuer: String,
    /// The public JWKS: the issuer followed by `/.well-known/jwks.json`.
    pub jwks_uri: String,
    /// Required by RFC 8414 and OIDC Discovery; empty because there is no authorization
    /// endpoint, so no `response_type` is supported.
    pub response_types_supported: Vec<String>,
    /// Empty: no OAuth 2.0 grant is supported at an RFC 6749 token endpoint (`/login` and
    /// `/refresh` take JSON of their own). Listed because leaving it out would mean the
    /// default, `["authorization_code", "implicit"]`.
    pub grant_types_supported: Vec<String>,
    /// `["public"]`: `sub` is the same user id for every client (OIDC Discovery §3).
    pub subject_types_supported: Vec<String>,
    /// Not a registered name: the JWS algorithms of the public keys in the JWKS now, that is
    /// of the access tokens a verifier can check from it (HMAC-signed tokens of an
    /// installation migrating from HS256 are not).
    pub access_token_signing_alg_values_supported: Vec<String>,
}

/// `GET /.well-known/openid-configuration`: the discovery document.
#[utoipa::path(get, path = "/.well-known/openid-configuration", responses(
    (status = 200, description = "the discovery document: issuer, jwks_uri and what is supported",
     body = DiscoveryDoc, content_type = "application/json",
     headers(("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"))),
))]
pub(super) async fn openid_configuration(State(state): State<AppState>) -> Response {
    discovery(&state)
}

/// `GET /.well-known/oauth-authorization-server`: the same document (RFC 8414 §3).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", responses(
    (status = 200, description = "the discovery document, as at /.well-known/openid-configuration",
     body = DiscoveryDoc, content_type = "application/json",
     headers(("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"))),
))]
pub(super) async fn oauth_authorization_server(State(state): State<AppState>) -> Response {
    discovery(&state)
}

fn discovery(state: &AppState) -> Response {
    let now = state.clock.now();
    let snapshot = state.ring.snapshot();
    let published: Vec<Algorithm> = snapshot
        .published(now, state.ring.policy())
        .map(|k| k.key.algorithm())
        .collect();
    let algorithms = Algorithm::ALL
        .into_iter()
        .filter(|alg| !alg.is_symmetric() && published.contains(alg))
        .map(|alg| alg.as_str().to_owned())
        .collect();
    let issuer = state.config.issuer.clone();
    let doc = DiscoveryDoc {
        jwks_uri: public_url(&issuer, JWKS_PATH),
        issuer,
        response_types_supported: Vec::new(),
        grant_types_supported: Vec::new(),
        subject_types_supported: vec!["public".to_owned()],
        access_token_signing_alg_values_supported: algorithms,
    };
    cacheable(state, axum::Json(doc).into_response())
}

/// The public URL of one of our routes: the issuer (our public base URL) and the path, with no
/// doubled slash when the issuer ends in one.
pub fn public_url(issuer: &str, path: &str) -> String {
    format!("{}{path}", issuer.trim_end_matches('/'))
}

/// Marks a response as cacheable by anyone for `AUTH_JWKS_MAX_AGE_SECS`.
fn cacheable(state: &AppState, mut response: Response) -> Response {
    let max_age = state.config.jwks_max_age.as_secs();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_join_the_issuer_and_the_path() {
        let cases = [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/.well-known/jwks.json",
            ),
            (
                "http://127.0.0.1:10000/auth",
                "http://127.0.0.1:10000/auth/.well-known/jwks.json",
            ),
            (
                "https://auth.example.com/",
                "https://auth.example.com/.well-known/jwks.json",
            ),
        ];
        for (issuer, url) in cases {
            assert_eq!(public_url(issuer, JWKS_PATH), url);
        }
    }
}
