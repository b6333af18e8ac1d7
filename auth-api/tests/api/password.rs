//! `POST /password` (SECURITY.md G 72, F 63, E 50): the current password is asked again, the
//! new one follows the signup policy, and the other sessions end.

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};
use serde_json::json;

use auth_api::store::{NewSession, PasswordChange};

use crate::helpers::{Backend, TestApp, TestResponse, TestUser, Tokens};

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn change(app: &TestApp, tokens: &Tokens, current: &str, new: &str) -> TestResponse {
    app.request(
        Request::post("/password")
            .header(header::AUTHORIZATION, format!("Bearer {}", tokens.access))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"current_password": current, "new_password": new}).to_string(),
            ))
            .unwrap(),
    )
    .await
}

async fn a_password_change_ends_the_other_sessions_and_keeps_this_one(app: TestApp) {
    let (user, here) = app.logged_in_user().await;
    let elsewhere = user.login(&app).await;
    let response = change(&app, &here, &user.password, NEW_PASSWORD).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.body);

    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::UNAUTHORIZED,
        "the old password is gone"
    );
    assert_eq!(
        app.login(&user.email, NEW_PASSWORD).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.validate(&elsewhere.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&elsewhere.refresh).await.status,
        StatusCode::UNAUTHORIZED,
        "a session opened before the change cannot refresh"
    );
    assert_eq!(app.validate(&here.access).await.status, StatusCode::OK);
    assert_eq!(app.refresh(&here.refresh).await.status, StatusCode::OK);
    let listed = app.revoked_sids().await;
    assert!(listed.contains(&elsewhere.sid()), "the gateway is told");
    assert!(!listed.contains(&here.sid()));
}

async fn a_wrong_current_password_is_403_and_counts_towards_the_lock(app: TestApp) {
    let (user, here) = app.logged_in_user().await;
    let elsewhere = user.login(&app).await;
    let wrong = change(&app, &here, "not my password at all", NEW_PASSWORD).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.error(), "wrong_password");
    assert_eq!(
        app.validate(&elsewhere.access).await.status,
        StatusCode::OK,
        "nothing changed"
    );
    // Four more wrong answers use up the five free attempts shared with login.
    for _ in 0..4 {
        change(&app, &here, "not my password at all", NEW_PASSWORD).await;
    }
    let locked = change(&app, &here, &user.password, NEW_PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "login is locked by the same counter"
    );
}

async fn a_weak_new_password_is_422_and_changes_nothing(app: TestApp) {
    let (user, here) = app.logged_in_user().await;
    let local_part = user.email.split('@').next().unwrap().to_owned();
    let cases = [
        ("short", "length"),
        ("1q2w3e4r5t6y7u8i9o0p", "common"),
        (&*format!("my {local_part} passphrase"), "contains_email"),
    ];
    for (new, reason) in cases {
        let response = change(&app, &here, &user.password, new).await;
        assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY, "{new}");
        assert_eq!(response.error(), "weak_password", "{new}");
        assert_eq!(response.body["reason"], reason, "{new}");
    }
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK,
        "the password is unchanged"
    );
}

async fn without_a_valid_access_token_it_is_401(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let anonymous = app
        .request(
            Request::post("/password")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"current_password": user.password, "new_password": NEW_PASSWORD})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(anonymous.header("www-authenticate").is_some());
    app.logout_bearer(&tokens.access, false).await;
    let revoked = change(&app, &tokens, &user.password, NEW_PASSWORD).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(revoked.error(), "invalid_token");
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK,
        "a logged-out session cannot change the password"
    );
}

crate::on_every_store!(
    changes_and_logins_that_lost_a_race_change_nothing,
    a_password_change_ends_the_other_sessions_and_keeps_this_one,
    a_wrong_current_password_is_403_and_counts_towards_the_lock,
    a_weak_new_password_is_422_and_changes_nothing,
    without_a_valid_access_token_it_is_401,
);

async fn other_sessions_can_be_kept_by_configuration(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.password_change_ends_other_sessions = false;
    })
    .await;
    let user = TestUser::random();
    user.register(&app).await;
    let here = user.login(&app).await;
    let elsewhere = user.login(&app).await;
    let response = change(&app, &here, &user.password, NEW_PASSWORD).await;
    assert_eq!(response.status, StatusCode::NO_CONTENT);
    assert_eq!(app.validate(&elsewhere.access).await.status, StatusCode::OK);
    assert_eq!(
        app.login(&user.email, NEW_PASSWORD).await.status,
        StatusCode::OK
    );
}

/// The races a review found, closed in the store: a change whose checked hash is no longer
/// current (another change won), a change from a session that ended meanwhile, and a login that
/// checked the old password while a change committed: none of them changes anything.
async fn changes_and_logins_that_lost_a_race_change_nothing(app: TestApp) {
    let (user, here) = app.logged_in_user().await;
    let row = app.user(&user.email).await;
    let store = &app.state.store;
    let at = app.state.revoke_at();
    let stale = "$2b$10$not.the.current.hash.at.all.................................";
    assert_eq!(
        store
            .change_password(&row.id, stale, "new-hash", &here.sid(), Some(at))
            .await
            .unwrap(),
        PasswordChange::Conflict
    );
    let elsewhere = user.login(&app).await;
    app.logout_bearer(&elsewhere.access, false).await;
    assert_eq!(
        store
            .change_password(
                &row.id,
                &row.password_hash,
                "new-hash",
                &elsewhere.sid(),
                Some(at)
            )
            .await
            .unwrap(),
        PasswordChange::SessionEnded
    );
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK,
        "the password is unchanged"
    );
    let session = NewSession {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: row.id.clone(),
        created_at: app.clock.now(),
        expires_at: app.clock.now() + 3600,
        rotation_key: app
            .state
            .ring
            .keks()
            .seal_rotation_key("unused", &[7; 32])
            .unwrap(),
        first_token_hash: vec![1; 32],
        auth_method: auth_api::domain::AuthMethod::Password,
    };
    assert!(
        store
            .create_session(&session, stale)
            .await
            .unwrap()
            .is_none(),
        "a login that checked another hash opens no session"
    );
    assert!(store.session(&session.id).await.unwrap().is_none());
}

mod own_config {
    use super::*;

    crate::on_every_backend!(other_sessions_can_be_kept_by_configuration);
}
