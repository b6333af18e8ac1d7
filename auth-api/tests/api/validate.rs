//! `GET /validate`: signature, claims and session checks (SECURITY.md B 6-26 at auth-api).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{claims_of, TestApp};

/// A valid header for the current signer, as JSON text.
fn header(app: &TestApp) -> String {
    let signer = app.signer();
    json!({"alg": signer.key.algorithm().as_str(), "typ": "at+jwt", "kid": signer.stored.kid})
        .to_string()
}

/// `claims` with `field` set to `value` (or removed, for `Value::Null`).
fn with(claims: &Value, field: &str, value: Value) -> String {
    let mut claims = claims.clone();
    let map = claims.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(field);
    } else {
        map.insert(field.to_owned(), value);
    }
    claims.to_string()
}

async fn valid_token_returns_its_claims(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let response = app.validate(&tokens.access).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    assert_eq!(response.body["email"], user.email.as_str());
    assert_eq!(response.body["amr"], json!(["pwd"]), "a password login");
    assert_eq!(response.body, claims_of(&tokens.access));
}

async fn resigned_token_passes_so_forgeries_below_fail_for_their_one_change(app: TestApp) {
    // The control for the forgery table: the same re-signing with nothing changed validates.
    let (_, tokens) = app.logged_in_user().await;
    let claims = claims_of(&tokens.access).to_string();
    let token = app.sign_raw(&header(&app), &claims);
    assert_eq!(app.validate(&token).await.status, StatusCode::OK);
}

async fn forged_tokens_are_invalid_token(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let claims = claims_of(&tokens.access);
    let mut cases =
        test_support::forged_tokens_with(&tokens.access, &app.signer().key, &tokens.refresh);
    // What only the stateful check at /validate can refuse.
    let h = header(&app);
    cases.push((
        "client_id missing",
        app.sign_raw(&h, &with(&claims, "client_id", Value::Null)),
    ));
    let no_session = with(&claims, "sid", json!(uuid::Uuid::new_v4().to_string()));
    cases.push(("sid of no session", app.sign_raw(&h, &no_session)));
    let stranger = with(&claims, "sub", json!(uuid::Uuid::new_v4().to_string()));
    cases.push(("sub of another user", app.sign_raw(&h, &stranger)));
    for (reason, token) in cases {
        let response = app.validate(&token).await;
        assert!(
            response.status == StatusCode::UNAUTHORIZED,
            "{reason}: expected 401, got {} {}",
            response.status,
            response.body
        );
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{reason}: {challenge}"
        );
    }
}

async fn expiry_within_the_leeway_is_accepted_and_beyond_it_refused(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    app.advance(Duration::from_secs(900 + 30));
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::OK,
        "within 60 s of leeway"
    );
    app.advance(Duration::from_secs(31));
    let response = app.validate(&tokens.access).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(
        response.body["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        response.body
    );
}

async fn no_credentials_get_a_bare_challenge(app: TestApp) {
    for authorization in [None, Some("Basic dXNlcjpwYXNz")] {
        let response = app.get("/validate", authorization).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.header("www-authenticate"),
            Some("Bearer realm=\"auth-service\"")
        );
        assert_eq!(response.error(), "missing_token", "the gateway's code too");
    }
}

async fn bearer_scheme_is_case_insensitive_but_strict(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let lower = app
        .get("/validate", Some(&format!("bearer {}", tokens.access)))
        .await;
    assert_eq!(lower.status, StatusCode::OK);
    let two_spaces = app
        .get("/validate", Some(&format!("Bearer  {}", tokens.access)))
        .await;
    assert_eq!(two_spaces.status, StatusCode::UNAUTHORIZED);
    let trailing = app
        .get("/validate", Some(&format!("Bearer {} x", tokens.access)))
        .await;
    assert_eq!(trailing.status, StatusCode::UNAUTHORIZED);
}

async fn token_in_the_query_string_is_ignored(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let response = app
        .get(&format!("/validate?access_token={}", tokens.access), None)
        .await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.header("www-authenticate"),
        Some("Bearer realm=\"auth-service\"")
    );
}

async fn token_of_a_logged_out_session_is_refused(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    assert_eq!(
        app.logout_refresh(&tokens.refresh, false).await.status,
        StatusCode::NO_CONTENT
    );
    let response = app.validate(&tokens.access).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(response.body["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
}

async fn token_issued_before_logout_everywhere_is_refused(app: TestApp) {
    let (user, first) = app.logged_in_user().await;
    let second = user.login(&app).await;
    assert_eq!(
        app.logout_bearer(&first.access, true).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.validate(&second.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.advance(Duration::from_secs(1));
    let fresh = user.login(&app).await;
    assert_eq!(
        app.validate(&fresh.access).await.status,
        StatusCode::OK,
        "a new login works again"
    );
}

async fn token_of_a_session_past_its_absolute_end_is_refused(app: TestApp) {
    // Arrange: a token whose own lifetime outlasts its session's, as a refresh a moment before
    // the session's absolute end issues (its `exp` is 15 minutes on, the session's end sooner).
    let (_, tokens) = app.logged_in_user().await;
    let session_secs = app.state.lifetimes.session_secs;
    app.advance(Duration::from_secs(u64::try_from(session_secs).unwrap()));
    let now = app.clock.now();
    let claims = claims_of(&tokens.access);
    let late = with(&claims, "iat", json!(now - 10));
    let late = with(
        &serde_json::from_str(&late).unwrap(),
        "exp",
        json!(now + 890),
    );
    let token = app.sign_raw(&header(&app), &late);
    // Act
    let response = app.validate(&token).await;
    // Assert
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        response.body
    );
    assert!(
        response.body["message"]
            .as_str()
            .unwrap()
            .contains("session has expired"),
        "{}",
        response.body
    );
}

crate::on_every_store!(
    valid_token_returns_its_claims,
    resigned_token_passes_so_forgeries_below_fail_for_their_one_change,
    forged_tokens_are_invalid_token,
    expiry_within_the_leeway_is_accepted_and_beyond_it_refused,
    no_credentials_get_a_bare_challenge,
    bearer_scheme_is_case_insensitive_but_strict,
    token_in_the_query_string_is_ignored,
    token_of_a_logged_out_session_is_refused,
    token_issued_before_logout_everywhere_is_refused,
    token_of_a_session_past_its_absolute_end_is_refused,
);
