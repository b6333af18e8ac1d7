//! `GET /validate` with the verified-signature memo (`auth_api::signatures`) warm: a token
//! that validated once, and whose signature is therefore remembered, is still refused for
//! every reason checked per request (SECURITY.md B 12, B 19, B 20, B 21).

use std::time::Duration;

use axum::http::StatusCode;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

use crate::helpers::{claims_of, TestApp};

/// Validates `token` twice (the first verifies and remembers its signature, the second hits
/// the memo), both 200.
async fn validated_twice(app: &TestApp, token: &str) {
    for attempt in ["first", "remembered"] {
        let response = app.validate(token).await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{attempt}: {}",
            response.body
        );
    }
}

fn message(response: &crate::helpers::TestResponse) -> String {
    response.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn a_remembered_token_of_a_revoked_session_is_refused(app: TestApp) {
    // Arrange
    let (_, tokens) = app.logged_in_user().await;
    validated_twice(&app, &tokens.access).await;
    // Act
    assert_eq!(
        app.logout_refresh(&tokens.refresh, false).await.status,
        StatusCode::NO_CONTENT
    );
    let response = app.validate(&tokens.access).await;
    // Assert
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(message(&response).contains("revoked"), "{}", response.body);
}

async fn a_remembered_token_is_refused_once_expired(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    validated_twice(&app, &tokens.access).await;
    // The default lifetime (900 s) and leeway (60 s), and one second more.
    app.advance(Duration::from_secs(900 + 60 + 1));
    let response = app.validate(&tokens.access).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(message(&response).contains("expired"), "{}", response.body);
}

async fn a_remembered_token_of_a_key_revoked_by_another_replica_is_refused(app: TestApp) {
    // Arrange: revoked in the database only, as another replica or the CLI does, so this
    // replica's ring still holds the key and only the per-request read can refuse it.
    let (_, tokens) = app.logged_in_user().await;
    validated_twice(&app, &tokens.access).await;
    let kid = app.signer_kid();
    // Act
    assert!(app
        .state
        .store
        .revoke_key(&kid, app.clock.now())
        .await
        .unwrap());
    let response = app.validate(&tokens.access).await;
    // Assert
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(message(&response).contains("revoked"), "{}", response.body);
}

async fn a_remembered_token_of_a_key_revoked_here_is_refused(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    validated_twice(&app, &tokens.access).await;
    let kid = app.signer_kid();
    app.state.ring.revoke(&kid, app.clock.now()).await.unwrap();
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn a_remembered_token_with_any_one_bit_flipped_is_refused(app: TestApp) {
    // Arrange
    let (_, tokens) = app.logged_in_user().await;
    validated_twice(&app, &tokens.access).await;
    let (input, signature) = tokens.access.rsplit_once('.').unwrap();
    let raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
    // Act and assert: every bit of the signature, and one in each byte of the payload's
    // claims (re-encoded, so that only the signature can refuse it).
    for bit in 0..raw.len() * 8 {
        let mut flipped = raw.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&flipped));
        let response = app.validate(&token).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "signature bit {bit}: {}",
            response.body
        );
    }
    let (header, payload) = input.split_once('.').unwrap();
    let claims = claims_of(&tokens.access).to_string();
    for index in (0..claims.len()).step_by(7) {
        let mut altered = claims.clone().into_bytes();
        // A bit that keeps the JSON printable where it was a letter or digit.
        if !altered[index].is_ascii_alphanumeric() {
            continue;
        }
        altered[index] ^= 0x01;
        let Ok(altered) = String::from_utf8(altered) else {
            continue;
        };
        let token = format!("{header}.{}.{signature}", URL_SAFE_NO_PAD.encode(altered));
        assert_ne!(
            app.validate(&token).await.status,
            StatusCode::OK,
            "claims byte {index} of {payload}"
        );
    }
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::OK,
        "the genuine token still validates"
    );
}

crate::on_every_store!(
    a_remembered_token_of_a_revoked_session_is_refused,
    a_remembered_token_is_refused_once_expired,
    a_remembered_token_of_a_key_revoked_by_another_replica_is_refused,
    a_remembered_token_of_a_key_revoked_here_is_refused,
    a_remembered_token_with_any_one_bit_flipped_is_refused,
);
