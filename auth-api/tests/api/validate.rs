//! `GET /validate`: signature, claims and session checks (SECURITY.md B 6-26 at auth-api).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{claims_of, TestApp};

/// A valid header for the current signer, as JSON text.
fn header(app: &TestApp) -> String {
    json!({"alg": "HS256", "typ": "at+jwt", "kid": app.signer_kid()}).to_string()
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
    let now = app.clock.now();
    let kid = app.signer_kid();
    let h = header(&app);
    let refresh_header = json!({"alg": "HS256", "typ": "rt+jwt", "kid": kid}).to_string();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none, empty signature",
            test_support::unsigned(&claims.to_string()),
        ),
        (
            "alg HS384 on an HS256 key",
            app.sign_raw(
                &json!({"alg": "HS384", "typ": "at+jwt", "kid": kid}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "unknown kid",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": "nope"}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "kid path traversal",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": "../../etc/passwd"}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "kid SQL",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": "' OR 1=1 --"}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "kid NUL",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": "a\u{0}b"}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "kid of 10 KB",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": "k".repeat(10_000)}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "jku to an attacker",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "jku": "https://evil.example/jwks"})
                    .to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "typ missing",
            app.sign_raw(
                &json!({"alg": "HS256", "kid": kid}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "typ JWT",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "typ rt+jwt (refresh-token shaped)",
            app.sign_raw(&refresh_header, &claims.to_string()),
        ),
        (
            "crit header",
            app.sign_raw(
                &json!({"alg": "HS256", "typ": "at+jwt", "kid": kid, "crit": ["exp"]}).to_string(),
                &claims.to_string(),
            ),
        ),
        (
            "duplicate header member",
            app.sign_raw(
                &format!(r#"{{"alg":"HS256","typ":"at+jwt","kid":"{kid}","kid":"{kid}"}}"#),
                &claims.to_string(),
            ),
        ),
        (
            "duplicate sub claim",
            app.sign_raw(
                &h,
                &format!(r#"{{"sub":"someone-else",{}"#, &claims.to_string()[1..]),
            ),
        ),
        (
            "exp past the leeway",
            app.sign_raw(&h, &with(&claims, "exp", json!(now - 61))),
        ),
        (
            "exp missing",
            app.sign_raw(&h, &with(&claims, "exp", Value::Null)),
        ),
        (
            "exp a string",
            app.sign_raw(&h, &with(&claims, "exp", json!("never"))),
        ),
        (
            "nbf in the future",
            app.sign_raw(&h, &with(&claims, "nbf", json!(now + 3600))),
        ),
        (
            "iat in the future",
            app.sign_raw(&h, &with(&claims, "iat", json!(now + 3600))),
        ),
        (
            "aud missing",
            app.sign_raw(&h, &with(&claims, "aud", Value::Null)),
        ),
        (
            "aud empty",
            app.sign_raw(&h, &with(&claims, "aud", json!([]))),
        ),
        (
            "aud someone else's",
            app.sign_raw(&h, &with(&claims, "aud", json!(["billing"]))),
        ),
        (
            "iss with a trailing slash",
            app.sign_raw(&h, &with(&claims, "iss", json!("auth-service/"))),
        ),
        (
            "iss in another case",
            app.sign_raw(&h, &with(&claims, "iss", json!("Auth-Service"))),
        ),
        (
            "sub missing",
            app.sign_raw(&h, &with(&claims, "sub", Value::Null)),
        ),
        (
            "jti missing",
            app.sign_raw(&h, &with(&claims, "jti", Value::Null)),
        ),
        (
            "sid missing",
            app.sign_raw(&h, &with(&claims, "sid", Value::Null)),
        ),
        (
            "iat missing",
            app.sign_raw(&h, &with(&claims, "iat", Value::Null)),
        ),
        (
            "client_id missing",
            app.sign_raw(&h, &with(&claims, "client_id", Value::Null)),
        ),
        (
            "sid of no session",
            app.sign_raw(
                &h,
                &with(&claims, "sid", json!(uuid::Uuid::new_v4().to_string())),
            ),
        ),
        (
            "sub of another user",
            app.sign_raw(
                &h,
                &with(&claims, "sub", json!(uuid::Uuid::new_v4().to_string())),
            ),
        ),
        ("payload bit flipped", {
            let mut parts: Vec<String> = tokens.access.split('.').map(str::to_owned).collect();
            let mut payload = parts[1].clone().into_bytes();
            payload[3] ^= 0x01;
            parts[1] = String::from_utf8(payload).unwrap();
            parts.join(".")
        }),
        (
            "signature truncated",
            tokens.access[..tokens.access.len() - 4].to_owned(),
        ),
        (
            "two segments",
            tokens.access.rsplit_once('.').unwrap().0.to_owned(),
        ),
        ("four segments", format!("{}.e30", tokens.access)),
        (
            "JWE-shaped, five segments",
            "eyJhbGciOiJkaXIifQ..iv.ct.tag".to_owned(),
        ),
        ("padded base64", format!("{}==", tokens.access)),
        ("refresh token as a bearer token", tokens.refresh.clone()),
        ("an 8 KiB blob", "a".repeat(9000)),
    ];
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

crate::on_both_stores!(
    valid_token_returns_its_claims,
    resigned_token_passes_so_forgeries_below_fail_for_their_one_change,
    forged_tokens_are_invalid_token,
    expiry_within_the_leeway_is_accepted_and_beyond_it_refused,
    no_credentials_get_a_bare_challenge,
    bearer_scheme_is_case_insensitive_but_strict,
    token_in_the_query_string_is_ignored,
    token_of_a_logged_out_session_is_refused,
    token_issued_before_logout_everywhere_is_refused,
);
