//! Logins racing a disable or a "logout everywhere" (SECURITY.md 60 area): no token minted by
//! such a login may outlive the revocation, neither at `/validate` nor at the gateway (which
//! knows only the revocation feed), and `tokens_valid_after` never moves backwards.

use std::time::Duration;

use auth_api::store::{NewSession, RevokeAt};
use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};
use serde_json::{json, Value};

use crate::helpers::{claims_of, sids, TestApp, TestUser, Tokens};

/// Whether the gateway, which knows only the revocation feed, refuses `access`.
fn gateway_refuses(feed: &Value, access: &str) -> bool {
    let claims = claims_of(access);
    let sid = claims["sid"].as_str().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    let by_session = feed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["sid"] == sid);
    let by_user = feed["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["sub"] == claims["sub"] && iat < u["not_before"].as_i64().unwrap());
    by_session || by_user
}

/// `n` right-password logins for `user` on their own tasks, with `revoke` run on its own task
/// in their midst; the tokens of the logins that succeeded.
async fn logins_racing(
    app: &TestApp,
    user: &TestUser,
    n: usize,
    revoke: impl std::future::Future<Output = ()> + Send + 'static,
) -> Vec<Tokens> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let router = app.router.clone();
        let body = json!({"email": user.email, "password": user.password}).to_string();
        tasks.spawn(async move {
            let request = Request::post("/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            Some(crate::helpers::send(&router, request).await)
        });
    }
    tasks.spawn(async move {
        tokio::time::sleep(Duration::from_millis(3)).await;
        revoke.await;
        None
    });
    tasks
        .join_all()
        .await
        .into_iter()
        .flatten()
        .filter(|r| r.status == StatusCode::OK)
        .map(|r| Tokens::from_response(&r))
        .collect()
}

/// The fence: a login whose password check began before a disable and that creates its
/// session after the disable committed gets no session.
async fn a_login_finishing_after_a_disable_opens_no_session(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let checked = app.user(&user.email).await;
    app.state
        .store
        .disable_user(&checked.id, app.state.revoke_at())
        .await
        .unwrap();
    let session = NewSession {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: checked.id.clone(),
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
    let created = app
        .state
        .store
        .create_session(&session, &checked.password_hash)
        .await
        .unwrap();
    assert_eq!(created, None, "the disable came first");
    assert!(app
        .state
        .store
        .session(&session.id)
        .await
        .unwrap()
        .is_none());
}

async fn logins_racing_a_disable_leave_no_token_anyone_accepts(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let id = app.user(&user.email).await.id;
    let (store, at) = (app.state.store.clone(), app.state.revoke_at());
    let disable = async move {
        assert!(store.disable_user(&id, at).await.unwrap());
    };
    let tokens = logins_racing(&app, &user, 16, disable).await;
    let feed = app.revocation_feed().await.body;
    for t in &tokens {
        assert_eq!(
            app.validate(&t.access).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert!(
            gateway_refuses(&feed, &t.access),
            "{}",
            claims_of(&t.access)
        );
        assert_ne!(app.refresh(&t.refresh).await.status, StatusCode::OK);
    }
}

async fn logins_racing_a_logout_everywhere_leave_no_revoked_session_usable(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let id = app.user(&user.email).await.id;
    let (store, at) = (app.state.store.clone(), app.state.revoke_at());
    let logout_all = async move {
        store.revoke_all_sessions(&id, at).await.unwrap();
    };
    let tokens = logins_racing(&app, &user, 16, logout_all).await;
    let feed = app.revocation_feed().await.body;
    for t in &tokens {
        let session = app.state.store.session(&t.sid()).await.unwrap().unwrap();
        if session.revoked_at.is_some() {
            assert_eq!(
                app.validate(&t.access).await.status,
                StatusCode::UNAUTHORIZED
            );
            assert!(
                gateway_refuses(&feed, &t.access),
                "{}",
                claims_of(&t.access)
            );
        } else {
            // Opened after the logout everywhere: a login like any other.
            assert_eq!(app.validate(&t.access).await.status, StatusCode::OK);
        }
    }
}

/// Of two revocations, the one committing last may carry the older time (a replica whose
/// clock lags): `tokens_valid_after` keeps the later one.
async fn tokens_valid_after_never_moves_backwards(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let id = app.user(&user.email).await.id;
    let now = app.clock.now();
    let store = &app.state.store;
    store
        .revoke_all_sessions(&id, RevokeAt::new(now + 100, 900))
        .await
        .unwrap();
    store
        .disable_user(&id, RevokeAt::new(now, 900))
        .await
        .unwrap();
    assert_eq!(app.user(&user.email).await.tokens_valid_after, now + 101);
    let feed = app.revocation_feed().await.body;
    assert_eq!(feed["users"][0]["not_before"], now + 101, "{feed}");
    assert!(sids(&app.revocation_feed().await).is_empty());
    assert!(gateway_refuses(&feed, &tokens.access));
}

/// A session opened by a replica whose clock runs ahead: the revocation's "not before"
/// passes its tokens' `iat`, so the gateway refuses them although they postdate the
/// revoking replica's clock.
async fn a_revocation_passes_every_session_issue_time(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let row = app.user(&user.email).await;
    let now = app.clock.now();
    let ahead = NewSession {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: row.id.clone(),
        created_at: now + 30,
        expires_at: now + 3600,
        rotation_key: app
            .state
            .ring
            .keks()
            .seal_rotation_key("unused", &[7; 32])
            .unwrap(),
        first_token_hash: vec![2; 32],
        auth_method: auth_api::domain::AuthMethod::Password,
    };
    app.state
        .store
        .create_session(&ahead, &row.password_hash)
        .await
        .unwrap()
        .unwrap();
    app.state
        .store
        .revoke_all_sessions(&row.id, RevokeAt::new(now, 900))
        .await
        .unwrap();
    assert_eq!(app.user(&user.email).await.tokens_valid_after, now + 31);
}

/// Many users at once, each doing everything (logins, refreshes, a logout, a "logout
/// everywhere", a password change) while newcomers sign up and guessers fail logins: whatever
/// locks the store takes (on MySQL, foreign-key checks and next-key locks included), nothing is
/// a 5xx: no deadlock or lock timeout surfaces, on any store.
async fn everything_at_once_from_many_users_is_never_a_5xx(app: TestApp) {
    let mut users = Vec::new();
    for _ in 0..8 {
        let user = TestUser::random();
        user.register(&app).await;
        let first = user.login(&app).await;
        let second = user.login(&app).await;
        users.push((user, first, second));
    }
    let shared = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (user, first, second)) in users.into_iter().enumerate() {
        let app = std::sync::Arc::clone(&shared);
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            let mut refresh = first.refresh.clone();
            for _ in 0..3 {
                let response = app.refresh(&refresh).await;
                statuses.push(("refresh", response.status));
                if response.status == StatusCode::OK {
                    refresh = response.str("refresh_token");
                }
            }
            statuses.push(("login", app.login(&user.email, &user.password).await.status));
            let logout = app.logout_refresh(&second.refresh, false).await;
            statuses.push(("logout", logout.status));
            if i % 2 == 0 {
                let everywhere = app.logout_bearer(&first.access, true).await;
                statuses.push(("logout everywhere", everywhere.status));
            }
            if i % 3 == 0 {
                let change = app
                    .request(
                        Request::post("/password")
                            .header(header::AUTHORIZATION, format!("Bearer {}", first.access))
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(Body::from(
                                json!({
                                    "current_password": user.password,
                                    "new_password": "a brand new passphrase"
                                })
                                .to_string(),
                            ))
                            .unwrap(),
                    )
                    .await;
                statuses.push(("password", change.status));
            }
            statuses
        });
        let app = std::sync::Arc::clone(&shared);
        tasks.spawn(async move {
            let newcomer = TestUser::random();
            let mut statuses = vec![(
                "signup",
                app.signup(&newcomer.email, &newcomer.password).await.status,
            )];
            let guess = app.login(&newcomer.email, "a wrong guess entirely").await;
            statuses.push(("failed login", guess.status));
            statuses.push(("revocation feed", app.revocation_feed().await.status));
            statuses
        });
    }
    let statuses: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    let failed: Vec<_> = statuses
        .iter()
        .filter(|(_, status)| status.is_server_error())
        .collect();
    assert!(failed.is_empty(), "{failed:?} of {}", statuses.len());
}

crate::on_every_store!(
    everything_at_once_from_many_users_is_never_a_5xx,
    a_login_finishing_after_a_disable_opens_no_session,
    logins_racing_a_disable_leave_no_token_anyone_accepts,
    logins_racing_a_logout_everywhere_leave_no_revoked_session_usable,
    tokens_valid_after_never_moves_backwards,
    a_revocation_passes_every_session_issue_time,
);
