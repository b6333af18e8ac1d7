//! The discovery document (RFC 8414, OpenID Connect Discovery) and the issuer it names.

use auth_jwt::Algorithm;
use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{claims_of, Backend, TestApp};

const PATHS: [&str; 2] = [
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
];

async fn both_discovery_paths_serve_the_same_truthful_document(app: TestApp) {
    for path in PATHS {
        let response = app.get(path, None).await;
        assert_eq!(response.status, StatusCode::OK, "{path}");
        assert!(response
            .header("content-type")
            .unwrap()
            .starts_with("application/json"));
        assert_eq!(
            response.header("cache-control"),
            Some("public, max-age=60"),
            "{path}"
        );
        assert_eq!(
            response.body,
            json!({
                "issuer": "http://127.0.0.1:8080",
                "jwks_uri": "http://127.0.0.1:8080/.well-known/jwks.json",
                "response_types_supported": [],
                "grant_types_supported": [],
                "subject_types_supported": ["public"],
                "access_token_signing_alg_values_supported": ["ES256"],
            }),
            "{path}"
        );
    }
}

async fn the_issuer_is_what_tokens_carry_and_jwks_uri_is_our_route(app: TestApp) {
    let doc = app.get(PATHS[0], None).await.body;
    let (_, tokens) = app.logged_in_user().await;
    assert_eq!(claims_of(&tokens.access)["iss"], doc["issuer"]);
    let issuer = doc["issuer"].as_str().unwrap();
    let path = doc["jwks_uri"]
        .as_str()
        .unwrap()
        .strip_prefix(issuer)
        .expect("jwks_uri is under the issuer");
    let jwks = app.get(path, None).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.body["keys"][0]["kid"], app.signer_kid().as_str());
}

/// The algorithm list follows the public keys in the JWKS: a rotation to EdDSA adds EdDSA as
/// soon as the key is published; an HMAC key never adds HS256.
async fn the_algorithm_list_follows_the_public_keys(app: TestApp) {
    for alg in [Algorithm::EdDSA, Algorithm::HS256] {
        app.state
            .ring
            .rotate_to(app.clock.now(), alg)
            .await
            .unwrap();
    }
    let doc = app.get(PATHS[1], None).await.body;
    assert_eq!(
        doc["access_token_signing_alg_values_supported"],
        json!(["ES256", "EdDSA"])
    );
}

/// Behind the dev gateway the issuer has a path (`/auth`); discovery's URLs keep it, and a
/// trailing slash on the issuer does not double.
async fn an_issuer_with_a_path_is_the_base_of_every_url(backend: Backend) {
    for (issuer, jwks_uri) in [
        (
            "http://127.0.0.1:10000/auth",
            "http://127.0.0.1:10000/auth/.well-known/jwks.json",
        ),
        (
            "https://auth.example.com/",
            "https://auth.example.com/.well-known/jwks.json",
        ),
    ] {
        let app = TestApp::spawn_with(backend, |c| issuer.clone_into(&mut c.issuer)).await;
        let doc = app.get(PATHS[0], None).await.body;
        assert_eq!(doc["issuer"], issuer, "verbatim");
        assert_eq!(doc["jwks_uri"], jwks_uri);
        let (_, tokens) = app.logged_in_user().await;
        assert_eq!(claims_of(&tokens.access)["iss"], issuer);
        assert_eq!(app.validate(&tokens.access).await.status, StatusCode::OK);
    }
}

/// An HS256-only ring publishes no key, and says so: no algorithm is verifiable from the JWKS.
async fn an_hmac_ring_lists_no_algorithm(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.signing_alg = Algorithm::HS256).await;
    let doc = app.get(PATHS[0], None).await.body;
    assert_eq!(doc["access_token_signing_alg_values_supported"], json!([]));
}

crate::on_both_stores!(
    both_discovery_paths_serve_the_same_truthful_document,
    the_issuer_is_what_tokens_carry_and_jwks_uri_is_our_route,
    the_algorithm_list_follows_the_public_keys,
);

mod own_config {
    use super::*;

    crate::on_both_backends!(
        an_issuer_with_a_path_is_the_base_of_every_url,
        an_hmac_ring_lists_no_algorithm,
    );
}
