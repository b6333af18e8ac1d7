//! `POST /logout` (SECURITY.md G 68-71).

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};

use crate::helpers::{TestApp, TestResponse, Tokens};

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

/// `POST /logout?scope=…` with a bearer token, or with a refresh token when `refresh` is set.
async fn logout_scoped(app: &TestApp, scope: &str, tokens: &Tokens, refresh: bool) -> TestResponse {
    let builder = Request::post(format!("/logout?scope={scope}"));
    let request = if refresh {
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({"refresh_token": tokens.refresh}).to_string(),
            ))
    } else {
        builder
            .header(header::AUTHORIZATION, format!("Bearer {}", tokens.access))
            .body(Body::empty())
    };
    app.request(request.unwrap()).await
}

/// Whether the access token of each of `sessions` still passes `/validate`.
async fn alive(app: &TestApp, sessions: &[&Tokens]) -> Vec<bool> {
    let mut alive = Vec::new();
    for tokens in sessions {
        let validates = app.validate(&tokens.access).await.status == StatusCode::OK;
        alive.push(validates);
    }
    alive
}

async fn scope_all_in_the_query_ends_every_session(app: TestApp) {
    for (scope, refresh) in [("all", false), ("global", true)] {
        let (user, a) = app.logged_in_user().await;
        let b = user.login(&app).await;
        let (_, stranger) = app.logged_in_user().await;
        let response = logout_scoped(&app, scope, &a, refresh).await;
        assert_eq!(response.status, StatusCode::NO_CONTENT, "{scope}");
        assert_eq!(
            alive(&app, &[&a, &b, &stranger]).await,
            [false, false, true],
            "{scope}"
        );
        assert_eq!(
            app.refresh(&b.refresh).await.status,
            StatusCode::UNAUTHORIZED,
            "{scope}"
        );
    }
}

async fn scope_others_keeps_only_the_current_session(app: TestApp) {
    for refresh in [false, true] {
        let (user, current) = app.logged_in_user().await;
        let b = user.login(&app).await;
        let c = user.login(&app).await;
        let (_, stranger) = app.logged_in_user().await;
        let response = logout_scoped(&app, "others", &current, refresh).await;
        assert_eq!(response.status, StatusCode::NO_CONTENT);
        assert_eq!(
            alive(&app, &[&current, &b, &c, &stranger]).await,
            [true, false, false, true],
            "with the refresh token: {refresh}"
        );
        for ended in [&b, &c] {
            assert_eq!(
                app.refresh(&ended.refresh).await.status,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            app.refresh(&current.refresh).await.status,
            StatusCode::OK,
            "the current session refreshes on"
        );
        let listed = app.revoked_sids().await;
        for ended in [&b, &c] {
            assert!(
                listed.contains(&ended.sid()),
                "each ended session is in the feed"
            );
        }
        assert!(!listed.contains(&current.sid()));
    }
}

async fn an_unknown_or_contradicting_scope_is_400_and_ends_nothing(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let unknown = logout_scoped(&app, "everything", &tokens, false).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error(), "invalid_request");
    let contradicting = app
        .request(
            Request::post("/logout?scope=others")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({"refresh_token": tokens.refresh, "all": true}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(contradicting.status, StatusCode::BAD_REQUEST);
    assert_eq!(alive(&app, &[&tokens]).await, [true]);
}

crate::on_every_store!(
    scope_all_in_the_query_ends_every_session,
    scope_others_keeps_only_the_current_session,
    an_unknown_or_contradicting_scope_is_400_and_ends_nothing,
    an_old_refresh_token_cannot_log_out_everywhere,
    a_revoked_sessions_access_token_cannot_log_out_everywhere,
    logout_with_refresh_token_ends_only_that_session,
    logout_with_access_token_ends_its_session,
    logout_all_ends_every_session_of_the_user_only,
    logout_is_idempotent,
    logout_without_any_token_is_400,
    logout_with_a_bad_access_token_is_401,
);
