//! The discovery document (RFC 8414, OpenID Connect Discovery) and the issuer it names, and
//! the conditional GETs (`ETag`, `If-None-Match`) that the gateways' JWKS polls make.

use std::net::SocketAddr;

use auth_jwt::Algorithm;
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Request, StatusCode},
};
use serde_json::json;
use test_support::TestDb;

use crate::helpers::{claims_of, Backend, TestApp, TestResponse};

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

const JWKS: &str = "/.well-known/jwks.json";

/// A GET from the gateway's address, with `If-None-Match` lines if any.
async fn conditional_get(app: &TestApp, path: &str, if_none_match: &[&str]) -> TestResponse {
    let mut request = Request::get(path);
    for value in if_none_match {
        request = request.header(header::IF_NONE_MATCH, *value);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000))));
    app.request(request).await
}

/// RFC 9110 §13.1.2: the JWKS and both discovery documents carry a strong `ETag`, and a
/// matching `If-None-Match` (exact, weak, in a list, or `*`) gets 304 with no body but the same
/// `ETag` and `Cache-Control`; another tag gets the whole body again.
async fn a_matching_if_none_match_gets_304_without_a_body(app: TestApp) {
    for path in [JWKS, PATHS[0], PATHS[1]] {
        let first = conditional_get(&app, path, &[]).await;
        assert_eq!(first.status, StatusCode::OK, "{path}");
        let etag = first.header("etag").expect("an ETag").to_owned();
        assert!(
            etag.starts_with('"') && etag.ends_with('"'),
            "strong: {etag}"
        );
        assert!(first.body.is_object(), "{path}");

        let weak = format!("W/{etag}");
        let listed = format!("\"stale\", {etag}");
        for lines in [
            vec![etag.as_str()],
            vec![&weak],
            vec![&listed],
            vec!["\"a\"", &etag],
            vec!["*"],
        ] {
            let again = conditional_get(&app, path, &lines).await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path} {lines:?}");
            assert_eq!(
                again.body,
                serde_json::Value::Null,
                "no body: {path} {lines:?}"
            );
            assert_eq!(again.header("etag"), Some(etag.as_str()), "{path}");
            assert_eq!(
                again.header("cache-control"),
                Some("public, max-age=60"),
                "{path}"
            );
        }
        for lines in [vec!["\"stale\""], vec![etag.trim_matches('"')]] {
            let other = conditional_get(&app, path, &lines).await;
            assert_eq!(other.status, StatusCode::OK, "{path} {lines:?}");
            assert_eq!(other.body, first.body, "{path}");
            assert_eq!(other.header("etag"), Some(etag.as_str()), "{path}");
        }
    }
}

/// The tag follows the content: a rotation changes the JWKS, so the poller's old tag gets the
/// new set (with the new key) and a new tag. Every replica computes the same tag.
async fn the_jwks_etag_changes_when_the_set_does(app: TestApp) {
    let before = conditional_get(&app, JWKS, &[]).await;
    let old = before.header("etag").unwrap().to_owned();
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let replica = TestApp::on_database(placeholder, app.database_url.clone(), |_| {}).await;
    assert_eq!(
        conditional_get(&replica, JWKS, &[]).await.header("etag"),
        Some(old.as_str()),
        "replicas agree on the tag"
    );

    let (kid, _) = app
        .state
        .ring
        .rotate_to(app.clock.now(), Algorithm::EdDSA)
        .await
        .unwrap();
    let after = conditional_get(&app, JWKS, &[&old]).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_ne!(after.header("etag"), Some(old.as_str()));
    assert!(crate::helpers::kids(&after).contains(&kid));
}

/// The public key documents are polled by every gateway every few seconds: they are not under
/// the per-IP limit that guards the credential endpoints.
async fn the_key_documents_are_not_rate_limited(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.ip_limit_per_minute = 1).await;
    for round in 0..5 {
        for path in [JWKS, PATHS[0], PATHS[1]] {
            let response = conditional_get(&app, path, &[]).await;
            assert_eq!(response.status, StatusCode::OK, "{path}, round {round}");
        }
    }
}

crate::on_every_store!(
    a_matching_if_none_match_gets_304_without_a_body,
    the_jwks_etag_changes_when_the_set_does,
    both_discovery_paths_serve_the_same_truthful_document,
    the_issuer_is_what_tokens_carry_and_jwks_uri_is_our_route,
    the_algorithm_list_follows_the_public_keys,
);

mod own_config {
    use super::*;

    crate::on_every_backend!(
        an_issuer_with_a_path_is_the_base_of_every_url,
        an_hmac_ring_lists_no_algorithm,
        the_key_documents_are_not_rate_limited,
    );
}
