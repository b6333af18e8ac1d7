//! `POST /logout` (SECURITY.md G 68-71).

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};

use crate::helpers::{TestApp, Tokens};

async fn logout_with_refresh_token_ends_only_that_session(app: TestApp) {
    let (user, mine) = app.logged_in_user().await;
    let other = user.login(&app).await;
    assert_eq!(
        app.logout_refresh(&mine.refresh, false).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.refresh(&mine.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.validate(&mine.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.validate(&other.access).await.status,
        StatusCode::OK,
        "other sessions live on"
    );
    assert_eq!(app.refresh(&other.refresh).await.status, StatusCode::OK);
}

async fn logout_with_access_token_ends_its_session(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    assert_eq!(
        app.logout_bearer(&tokens.access, false).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.refresh(&tokens.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn logout_all_ends_every_session_of_the_user_only(app: TestApp) {
    let (user, a) = app.logged_in_user().await;
    let b = user.login(&app).await;
    let (_, stranger) = app.logged_in_user().await;
    assert_eq!(
        app.logout_refresh(&a.refresh, true).await.status,
        StatusCode::NO_CONTENT
    );
    for tokens in [&a, &b] {
        assert_eq!(
            app.refresh(&tokens.refresh).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.validate(&tokens.access).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(app.validate(&stranger.access).await.status, StatusCode::OK);
}

async fn logout_is_idempotent(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    for _ in 0..2 {
        assert_eq!(
            app.logout_refresh(&tokens.refresh, false).await.status,
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            app.logout_bearer(&tokens.access, false).await.status,
            StatusCode::NO_CONTENT
        );
    }
    let unknown = app.logout_refresh("not-a-token", false).await;
    assert_eq!(
        unknown.status,
        StatusCode::NO_CONTENT,
        "unknown tokens are not told apart"
    );
}

async fn logout_without_any_token_is_400(app: TestApp) {
    let empty = app
        .request(Request::post("/logout").body(Body::empty()).unwrap())
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.error(), "invalid_request");
    let not_json = app
        .request(
            Request::post("/logout")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{"))
                .unwrap(),
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let text = app
        .request(
            Request::post("/logout")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

async fn logout_with_a_bad_access_token_is_401(app: TestApp) {
    let response = app.logout_bearer("not.a.jwt", false).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert_eq!(response.error(), "invalid_token");
}

async fn an_old_refresh_token_cannot_log_out_everywhere(app: TestApp) {
    let (user, phone) = app.logged_in_user().await;
    let laptop = user.login(&app).await;
    Tokens::from_response(&app.refresh(&phone.refresh).await);
    app.advance(std::time::Duration::from_secs(11));
    // A stolen, long-rotated token: logging out everywhere with it changes nothing.
    assert_eq!(
        app.logout_refresh(&phone.refresh, true).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.validate(&laptop.access).await.status, StatusCode::OK);
}

async fn a_revoked_sessions_access_token_cannot_log_out_everywhere(app: TestApp) {
    let (user, phone) = app.logged_in_user().await;
    let laptop = user.login(&app).await;
    assert_eq!(
        app.logout_bearer(&phone.access, false).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.logout_bearer(&phone.access, true).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.validate(&laptop.access).await.status, StatusCode::OK);
}

crate::on_both_stores!(
    an_old_refresh_token_cannot_log_out_everywhere,
    a_revoked_sessions_access_token_cannot_log_out_everywhere,
    logout_with_refresh_token_ends_only_that_session,
    logout_with_access_token_ends_its_session,
    logout_all_ends_every_session_of_the_user_only,
    logout_is_idempotent,
    logout_without_any_token_is_400,
    logout_with_a_bad_access_token_is_401,
);
