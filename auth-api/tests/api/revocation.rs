//! The revocation feed on the internal listener (`GET /internal/revocations`).

use std::time::Duration;

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};

use crate::helpers::{claims_of, sids, TestApp, TestResponse, Tokens, INTERNAL_TOKEN};

async fn feed(app: &TestApp) -> TestResponse {
    app.revocation_feed().await
}

async fn feed_needs_the_internal_token(app: TestApp) {
    assert_eq!(
        app.get_internal("/internal/revocations", None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let wrong = app
        .get_internal(
            "/internal/revocations",
            Some("Bearer not-the-internal-token-at-all"),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

async fn logout_publishes_the_session_until_its_tokens_expire(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let sid = claims_of(&tokens.access)["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(sids(&feed(&app).await).is_empty(), "nothing revoked yet");
    assert_eq!(
        app.logout_bearer(&tokens.access, false).await.status,
        StatusCode::NO_CONTENT
    );
    let published = feed(&app).await;
    assert_eq!(sids(&published), std::slice::from_ref(&sid));
    let until = published.body["sessions"][0]["until"].as_i64().unwrap();
    assert_eq!(until, app.clock.now() + 900 + 60, "access TTL + clock skew");
    app.advance(Duration::from_secs(900 + 60));
    assert!(
        sids(&feed(&app).await).is_empty(),
        "expired entries leave the feed"
    );
}

async fn logout_everywhere_publishes_one_user_entry(app: TestApp) {
    let (user, first) = app.logged_in_user().await;
    user.login(&app).await;
    assert_eq!(
        app.logout_bearer(&first.access, true).await.status,
        StatusCode::NO_CONTENT
    );
    let published = feed(&app).await;
    assert!(
        sids(&published).is_empty(),
        "one entry for the user, not one per session"
    );
    let users = published.body["users"].as_array().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["sub"], claims_of(&first.access)["sub"]);
    let not_before = users[0]["not_before"].as_i64().unwrap();
    assert!(
        claims_of(&first.access)["iat"].as_i64().unwrap() < not_before,
        "the old token is covered"
    );

    // A login in the same second gets a token the entry does not cover.
    let fresh = user.login(&app).await;
    assert!(claims_of(&fresh.access)["iat"].as_i64().unwrap() >= not_before);
    assert_eq!(app.validate(&fresh.access).await.status, StatusCode::OK);
    assert_eq!(
        app.validate(&first.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn refresh_reuse_publishes_the_session(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    Tokens::from_response(&app.refresh(&first.refresh).await);
    app.advance(Duration::from_secs(11));
    assert_eq!(
        app.refresh(&first.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sids(&feed(&app).await),
        [claims_of(&first.access)["sid"].as_str().unwrap().to_owned()]
    );
}

async fn disabling_a_user_publishes_a_user_entry(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let id = app.user(&user.email).await.id;
    app.state
        .store
        .disable_user(&id, app.state.revoke_at())
        .await
        .unwrap();
    let users = feed(&app).await.body["users"].as_array().unwrap().clone();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["sub"], claims_of(&tokens.access)["sub"]);
}

async fn unchanged_feed_answers_304_to_its_etag(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let first = feed(&app).await;
    let etag = first.header("etag").unwrap().to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", first.body["version"].as_str().unwrap())
    );
    let conditional = |etag: String| {
        Request::get("/internal/revocations")
            .header(header::AUTHORIZATION, format!("Bearer {INTERNAL_TOKEN}"))
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap()
    };
    let unchanged = crate::helpers::send(&app.internal, conditional(etag.clone())).await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert_eq!(unchanged.body, serde_json::Value::Null);

    app.logout_bearer(&tokens.access, false).await;
    let changed = crate::helpers::send(&app.internal, conditional(etag.clone())).await;
    assert_eq!(
        changed.status,
        StatusCode::OK,
        "a new revocation changes the version"
    );
    assert_ne!(changed.header("etag").unwrap(), etag);
}

crate::on_both_stores!(
    feed_needs_the_internal_token,
    logout_publishes_the_session_until_its_tokens_expire,
    logout_everywhere_publishes_one_user_entry,
    refresh_reuse_publishes_the_session,
    disabling_a_user_publishes_a_user_entry,
    unchanged_feed_answers_304_to_its_etag,
);
