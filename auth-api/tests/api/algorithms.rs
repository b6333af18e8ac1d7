//! Signing algorithms (issue 8): ES256 by default, every algorithm signs and verifies, the
//! public JWKS, and a ring that moves from HS256 to ES256 by rotation without logging anybody
//! out.

use std::time::Duration;

use auth_jwt::{Algorithm, KeySet, Validation};
use axum::http::StatusCode;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::Value;

use crate::helpers::{claims_of, header_of, kids, Backend, TestApp, Tokens};

/// Members a public JWK of each type may have, sorted.
fn public_members(kty: &str) -> &'static [&'static str] {
    match kty {
        "EC" => &["alg", "crv", "kid", "kty", "use", "x", "y"],
        "OKP" => &["alg", "crv", "kid", "kty", "use", "x"],
        "RSA" => &["alg", "e", "kid", "kty", "n", "use"],
        other => panic!("a {other} key in the public JWKS"),
    }
}

/// Asserts that every key of a JWK Set is public (SECURITY.md C 27: no `oct`, no private
/// member) and returns the set's kids.
fn assert_public_only(jwks: &Value) -> Vec<String> {
    let keys = jwks["keys"].as_array().expect("a JWK Set");
    for key in keys {
        let kty = key["kty"].as_str().unwrap();
        let mut members: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        members.sort_unstable();
        assert_eq!(members, public_members(kty), "{key}");
        assert_eq!(key["use"], "sig");
    }
    keys.iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Verifies `token` with nothing but the public JWKS, as a third-party verifier would.
async fn verifies_from_the_public_jwks(app: &TestApp, token: &str) -> bool {
    let jwks = app.get("/.well-known/jwks.json", None).await;
    let keys = KeySet::from_jwks_json(jwks.body.to_string().as_bytes()).expect("a valid JWKS");
    let validation = Validation {
        issuer: Some(app.state.config.issuer.clone()),
        audiences: Some(app.state.config.audiences.clone()),
        ..Validation::default()
    };
    let now = u64::try_from(app.clock.now()).unwrap();
    auth_jwt::decode::<Value>(token, &keys, &validation, now).is_ok()
}

async fn a_new_ring_signs_es256_tokens_that_validate(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let header = header_of(&tokens.access);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], app.signer_kid().as_str());
    let signature = URL_SAFE_NO_PAD
        .decode(tokens.access.rsplit('.').next().unwrap())
        .unwrap();
    assert_eq!(signature.len(), 64, "JOSE r||s, not DER");
    let response = app.validate(&tokens.access).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert!(verifies_from_the_public_jwks(&app, &tokens.access).await);
}

/// Each algorithm in turn becomes the signer; its tokens validate, verify from the public JWKS
/// (all but HS256), match an independent signer's, and its forgeries are refused.
async fn every_algorithm_signs_tokens_that_validate(app: TestApp) {
    let (user, mut previous) = app.logged_in_user().await;
    for alg in [
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::HS256,
        Algorithm::ES256,
    ] {
        let (kid, _) = app
            .state
            .ring
            .rotate_to(app.clock.now(), alg)
            .await
            .unwrap();
        app.advance(Duration::from_secs(300));
        let tokens = user.login(&app).await;
        let header = header_of(&tokens.access);
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["kid"], kid.as_str());
        let response = app.validate(&tokens.access).await;
        assert_eq!(response.status, StatusCode::OK, "{alg}: {}", response.body);
        assert_eq!(
            verifies_from_the_public_jwks(&app, &tokens.access).await,
            !alg.is_symmetric(),
            "{alg}: only public keys are in the JWKS"
        );
        // The control for the forgeries: test-support's own signer produces tokens we accept.
        let header_json = serde_json::to_string(&header).unwrap();
        let resigned = app.sign_raw(&header_json, &claims_of(&tokens.access).to_string());
        assert_eq!(
            app.validate(&resigned).await.status,
            StatusCode::OK,
            "{alg}"
        );
        for (reason, token) in
            test_support::forged_tokens_with(&tokens.access, &app.signer().key, &tokens.refresh)
        {
            let response = app.validate(&token).await;
            assert_eq!(
                response.status,
                StatusCode::UNAUTHORIZED,
                "{alg}: {reason}: {}",
                response.body
            );
        }
        assert_eq!(
            app.validate(&previous.access).await.status,
            StatusCode::OK,
            "{alg}: the token of the key it replaced still validates"
        );
        previous = tokens;
    }
}

/// SECURITY.md C 27 and H 75: the public JWKS has every key that verifies now (pending, active,
/// retired) except HMAC keys, with public members only; the internal feed has all of them.
async fn public_jwks_has_pending_active_and_retired_keys_and_no_secret(app: TestApp) {
    let first = app.signer_kid();
    let (pending, _) = app
        .state
        .ring
        .rotate_to(app.clock.now(), Algorithm::RS256)
        .await
        .unwrap();
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        assert_public_only(&jwks.body),
        [first.clone(), pending.clone()]
    );

    app.advance(Duration::from_secs(300));
    let (secret_kid, _) = app
        .state
        .ring
        .rotate_to(app.clock.now(), Algorithm::HS256)
        .await
        .unwrap();
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        assert_public_only(&jwks.body),
        [first.clone(), pending.clone()],
        "retired and active, and not the pending HMAC key"
    );
    let internal = app.internal_keys().await;
    assert_eq!(kids(&internal), [first, pending, secret_kid]);
    let oct = &internal.body["keys"][2];
    assert_eq!(oct["kty"], "oct");
    assert_eq!(oct["k"].as_str().unwrap().len(), 43, "a 256-bit secret");
    for key in internal.body["keys"].as_array().unwrap() {
        assert!(key.get("d").is_none(), "no private member: {key}");
    }
}

/// An HS256 installation rotates to ES256 (`keys rotate --alg ES256`): the new key is public
/// before it signs, old HS256 tokens keep validating until they expire, sessions refresh onto
/// ES256, and the HMAC key leaves the gateway's feed once its tokens are gone.
async fn an_hs256_ring_moves_to_es256_and_nobody_is_logged_out(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.signing_alg = Algorithm::HS256).await;
    let (user, before) = app.logged_in_user().await;
    let hmac_kid = app.signer_kid();
    assert_eq!(header_of(&before.access)["alg"], "HS256");
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        jwks.body["keys"],
        serde_json::json!([]),
        "HMAC keys are secret"
    );

    let (es_kid, activates_at) = app
        .state
        .ring
        .rotate_to(app.clock.now(), Algorithm::ES256)
        .await
        .unwrap();
    assert_eq!(activates_at, app.clock.now() + 300);
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        assert_public_only(&jwks.body),
        std::slice::from_ref(&es_kid),
        "published before it signs"
    );
    let internal = app.internal_keys().await;
    let types: Vec<_> = internal.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kty"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        ["oct", "EC"],
        "the gateway gets both during the migration"
    );
    assert_eq!(header_of(&user.login(&app).await.access)["alg"], "HS256");

    app.advance(Duration::from_secs(300));
    let after = user.login(&app).await;
    assert_eq!(header_of(&after.access)["alg"], "ES256");
    assert_eq!(header_of(&after.access)["kid"], es_kid.as_str());
    assert_eq!(app.validate(&after.access).await.status, StatusCode::OK);
    assert_eq!(
        app.validate(&before.access).await.status,
        StatusCode::OK,
        "an HS256 token issued before the switch still validates"
    );
    let refreshed = Tokens::from_response(&app.refresh(&before.refresh).await);
    assert_eq!(
        header_of(&refreshed.access)["alg"],
        "ES256",
        "the session moved on"
    );
    assert_eq!(app.validate(&refreshed.access).await.status, StatusCode::OK);

    app.advance(Duration::from_secs(900 + 60));
    assert_eq!(kids(&app.internal_keys().await), [es_kid]);
    assert!(!app.state.ring.snapshot().verifies(
        &hmac_kid,
        app.clock.now(),
        app.state.ring.policy()
    ));
}

/// With `AUTH_SIGNING_ALG`, the ring's own rotations (schedule, revoked signer) make keys of
/// that algorithm whatever the current signer's.
async fn the_ring_makes_keys_of_the_configured_algorithm(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.signing_alg = Algorithm::EdDSA).await;
    assert_eq!(
        app.signer().key.algorithm(),
        Algorithm::EdDSA,
        "the first key"
    );
    app.state
        .ring
        .rotate_to(app.clock.now(), Algorithm::HS256)
        .await
        .unwrap();
    app.advance(Duration::from_secs(300));
    assert_eq!(app.signer().key.algorithm(), Algorithm::HS256);
    let replacement = app
        .state
        .ring
        .revoke(&app.signer_kid(), app.clock.now())
        .await
        .unwrap()
        .replacement()
        .expect("the signer was revoked");
    assert_eq!(app.signer_kid(), replacement);
    assert_eq!(app.signer().key.algorithm(), Algorithm::EdDSA);
    let period = Duration::from_secs(24 * 3600);
    app.advance(period);
    let rotated = app
        .state
        .ring
        .rotate_if_due(app.clock.now(), period)
        .await
        .unwrap()
        .expect("due");
    let snapshot = app.state.ring.snapshot();
    let key = snapshot
        .keys()
        .iter()
        .find(|k| k.stored.kid == rotated)
        .unwrap();
    assert_eq!(key.key.algorithm(), Algorithm::EdDSA);
}

crate::on_every_store!(
    a_new_ring_signs_es256_tokens_that_validate,
    every_algorithm_signs_tokens_that_validate,
    public_jwks_has_pending_active_and_retired_keys_and_no_secret,
);

mod own_config {
    use super::*;

    crate::on_every_backend!(
        an_hs256_ring_moves_to_es256_and_nobody_is_logged_out,
        the_ring_makes_keys_of_the_configured_algorithm,
    );
}
