//! The public, unauthenticated key endpoints: `GET /.well-known/jwks.json` and the discovery
//! document (`/.well-known/openid-configuration`, `/.well-known/oauth-authorization-server`).
//!
//! Both are cached by verifiers for `AUTH_JWKS_MAX_AGE_SECS`, which the configuration keeps
//! below `AUTH_KEY_PUBLISH_DELAY_SECS`: a rotated-in key is in every fresh copy before it
//! signs. Each answer carries a strong `ETag` (a hash of its exact body), and a poller that
//! sends it back in `If-None-Match` gets `304 Not Modified` with no body while nothing changed.
//! None of these routes is rate-limited per IP: every gateway polls them. The gateway's own
//! feed, with HMAC secrets, is `internal.rs`.

use auth_jwt::{Algorithm, Jwk, JwkSet};
use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::state::AppState;

/// The route of the public JWKS.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// `{"keys": [...]}`: a JWK Set (RFC 7517 §5) of public keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JwksDoc {
    /// Public JWKs; never an `oct` key or a private member.
    pub keys: Vec<PublicJwkDoc>,
}

/// One public JWK (RFC 7517, RFC 7518 §6, RFC 8037 §2).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublicJwkDoc {
    /// `EC` (ES256), `OKP` (EdDSA) or `RSA` (RS256).
    #[schema(pattern = "^(EC|OKP|RSA)$")]
    pub kty: String,
    /// The key id that tokens name in their header.
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    #[schema(pattern = "^(ES256|EdDSA|RS256)$")]
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    #[schema(pattern = "^sig$")]
    pub use_: String,
    /// `P-256` (EC) or `Ed25519` (OKP).
    pub crv: Option<String>,
    /// EC x coordinate, or the OKP public key; base64url.
    pub x: Option<String>,
    /// EC y coordinate; base64url.
    pub y: Option<String>,
    /// RSA modulus; base64url.
    pub n: Option<String>,
    /// RSA public exponent; base64url.
    pub e: Option<String>,
}

/// `GET /.well-known/jwks.json`: the public key of every key that verifies now (pending, active
/// and retired), with `kid`, `kty`, `alg` and `use: "sig"`. HMAC keys are secrets and never
/// appear, nor does any private member.
#[utoipa::path(get, path = "/.well-known/jwks.json", params(("if-none-match" = Option<String>, Header,
    description = "entity tags of an earlier answer's `ETag`, or `*`: 304 when one matches")), responses(
    (status = 200, description = "the public keys of every key that verifies now; HMAC keys are never listed",
     body = JwksDoc, content_type = "application/json",
     headers(
         ("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"),
         ("etag" = String, description = "strong entity tag of this exact body"),
     )),
    (status = 304, description = "`If-None-Match` matched the current `ETag`: the set has not changed; no body",
     headers(
         ("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"),
         ("etag" = String, description = "the current entity tag"),
     )),
))]
pub(super) async fn public_jwks(State(state): State<AppState>, request: HeaderMap) -> Response {
    let now = state.clock.now();
    let snapshot = state.ring.snapshot();
    let keys = snapshot
        .published(now, state.ring.policy())
        .filter_map(|k| Jwk::public(&k.key))
        .collect();
    cacheable(&state, &request, &JwkSet { keys })
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
#[utoipa::path(get, path = "/.well-known/openid-configuration", params(("if-none-match" = Option<String>, Header,
    description = "entity tags of an earlier answer's `ETag`, or `*`: 304 when one matches")), responses(
    (status = 200, description = "the discovery document: issuer, jwks_uri and what is supported",
     body = DiscoveryDoc, content_type = "application/json",
     headers(
         ("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"),
         ("etag" = String, description = "strong entity tag of this exact body"),
     )),
    (status = 304, description = "`If-None-Match` matched the current `ETag`: the document has not changed; no body",
     headers(
         ("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"),
         ("etag" = String, description = "the current entity tag"),
     )),
))]
pub(super) async fn openid_configuration(
    State(state): State<AppState>,
    request: HeaderMap,
) -> Response {
    discovery(&state, &request)
}

/// `GET /.well-known/oauth-authorization-server`: the same document (RFC 8414 §3).
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", params(("if-none-match" = Option<String>, Header,
    description = "entity tags of an earlier answer's `ETag`, or `*`: 304 when one matches")), responses(
    (status = 200, description = "the discovery document, as at /.well-known/openid-configuration",
     body = DiscoveryDoc, content_type = "application/json",
     headers(
         ("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"),
         ("etag" = String, description = "strong entity tag of this exact body"),
     )),
    (status = 304, description = "`If-None-Match` matched the current `ETag`: the document has not changed; no body",
     headers(
         ("cache-control" = String, description = "`public, max-age=<AUTH_JWKS_MAX_AGE_SECS>`"),
         ("etag" = String, description = "the current entity tag"),
     )),
))]
pub(super) async fn oauth_authorization_server(
    State(state): State<AppState>,
    request: HeaderMap,
) -> Response {
    discovery(&state, &request)
}

fn discovery(state: &AppState, request: &HeaderMap) -> Response {
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
    cacheable(state, request, &doc)
}

/// The public URL of one of our routes: the issuer (our public base URL) and the path, with no
/// doubled slash when the issuer ends in one.
pub fn public_url(issuer: &str, path: &str) -> String {
    format!("{}{path}", issuer.trim_end_matches('/'))
}

/// `body` as JSON, cacheable by anyone for `AUTH_JWKS_MAX_AGE_SECS`, with a strong `ETag`; or
/// `304 Not Modified` without a body when `If-None-Match` names that tag.
fn cacheable(state: &AppState, request: &HeaderMap, body: &impl Serialize) -> Response {
    let body = match serde_json::to_vec(body) {
        Ok(body) => body,
        Err(e) => return crate::error::ApiError::Internal(e.into()).into_response(),
    };
    let etag = entity_tag(&body);
    let mut response = if if_none_match(request, &etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    let max_age = state.config.jwks_max_age.as_secs();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    response
}

/// The strong entity tag of `body`: 128 bits of its SHA-256, base64url, quoted. Identical
/// bodies (on every replica) get identical tags.
fn entity_tag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..16]))
}

/// Whether `If-None-Match` in `request` matches `etag` (RFC 9110 §13.1.2): `*`, or a list of
/// entity tags compared weakly (a `W/` prefix is ignored), over every field line. A malformed
/// list matches nothing from the first malformed member on, so the client gets the body.
fn if_none_match(request: &HeaderMap, etag: &str) -> bool {
    let ours = etag.trim_matches('"');
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|list| {
            let mut rest = list;
            loop {
                rest = rest.trim_start_matches([' ', '\t', ',']);
                if rest.is_empty() {
                    return false;
                }
                if let Some(after) = rest.strip_prefix('*') {
                    // `*` stands alone: it is the whole field value.
                    return after.trim().is_empty() && list.trim() == "*";
                }
                let tag = rest.strip_prefix("W/").unwrap_or(rest);
                let Some(tag) = tag.strip_prefix('"') else {
                    return false;
                };
                let Some((opaque, after)) = tag.split_once('"') else {
                    return false;
                };
                if opaque == ours {
                    return true;
                }
                rest = after;
            }
        })
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

    #[test]
    fn if_none_match_follows_rfc_9110() {
        let etag = entity_tag(b"{}");
        let ours = etag.trim_matches('"');
        let cases = [
            (vec![etag.clone()], true, "the tag itself"),
            (
                vec![format!("W/{etag}")],
                true,
                "weak comparison ignores W/",
            ),
            (vec![format!("\"x\", {etag}")], true, "second in a list"),
            (
                vec![format!("\"x\",{etag} ,")],
                true,
                "no space, trailing comma",
            ),
            (
                vec!["\"x\"".to_owned(), etag.clone()],
                true,
                "second field line",
            ),
            (vec!["*".to_owned()], true, "any current representation"),
            (vec![" * ".to_owned()], true, "* with whitespace"),
            (vec!["\"x\"".to_owned()], false, "another tag"),
            (vec![ours.to_owned()], false, "unquoted"),
            (vec![format!("\"{ours}")], false, "unterminated"),
            (
                vec![format!("\"x\", *, {etag}")],
                false,
                "* inside a list is malformed",
            ),
            (vec![format!("w/{etag}")], false, "W/ is case-sensitive"),
            (vec![String::new()], false, "empty"),
            (vec![], false, "absent"),
        ];
        for (lines, matches, reason) in cases {
            let mut headers = HeaderMap::new();
            for line in &lines {
                headers.append(header::IF_NONE_MATCH, line.parse().unwrap());
            }
            assert_eq!(
                if_none_match(&headers, &etag),
                matches,
                "{reason}: {lines:?}"
            );
        }
    }

    #[test]
    fn entity_tags_are_strong_quoted_and_follow_the_body() {
        let tag = entity_tag(b"{\"keys\":[]}");
        assert!(tag.starts_with('"') && tag.ends_with('"') && !tag.starts_with("W/"));
        assert_eq!(tag.len(), 2 + 22, "128 bits in base64url");
        assert_eq!(tag, entity_tag(b"{\"keys\":[]}"));
        assert_ne!(tag, entity_tag(b"{\"keys\":[ ]}"));
    }
}
