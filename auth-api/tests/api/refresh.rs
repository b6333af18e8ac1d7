//! `POST /refresh`: rotation, reuse detection and concurrency (SECURITY.md F).

use std::time::Duration;

use axum::http::StatusCode;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use sha2::{Digest, Sha256};

use crate::helpers::{claims_of, Backend, TestApp, Tokens};

async fn refresh_rotates_the_token_and_keeps_the_session(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let response = app.refresh(&first.refresh).await;
    let second = Tokens::from_response(&response);
    assert_ne!(second.refresh, first.refresh);
    assert_eq!(
        claims_of(&second.access)["sid"],
        claims_of(&first.access)["sid"]
    );
    assert_ne!(
        claims_of(&second.access)["jti"],
        claims_of(&first.access)["jti"]
    );
    assert_eq!(response.header("cache-control"), Some("no-store"));
    assert_eq!(response.header("pragma"), Some("no-cache"));
    assert_eq!(app.validate(&second.access).await.status, StatusCode::OK);
}

async fn refresh_tokens_are_stored_only_as_sha256(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let raw = app.raw().await;
    let stored = raw.bytes("refresh_tokens", "token_hash").await;
    for token in [&first.refresh, &second.refresh] {
        let raw = URL_SAFE_NO_PAD.decode(token).unwrap();
        assert!(
            stored.contains(&Sha256::digest(&raw).to_vec()),
            "the hash is stored"
        );
        assert!(!stored.contains(&raw), "the token itself is not");
    }
    raw.close().await;
}

async fn replay_after_the_grace_window_revokes_the_whole_session(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    app.advance(Duration::from_secs(11));
    let replay = app.refresh(&first.refresh).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(replay.error(), "invalid_grant");
    assert_eq!(
        app.refresh(&second.refresh).await.status,
        StatusCode::UNAUTHORIZED,
        "the successor dies too"
    );
    assert_eq!(
        app.validate(&second.access).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.validate(&first.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn replay_of_the_predecessor_within_grace_returns_the_same_successor(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let replay = Tokens::from_response(&app.refresh(&first.refresh).await);
    assert_eq!(
        replay.refresh, second.refresh,
        "one live refresh token per session"
    );
    let third = Tokens::from_response(&app.refresh(&second.refresh).await);
    assert_eq!(
        app.validate(&third.access).await.status,
        StatusCode::OK,
        "the session survived"
    );
}

async fn grace_does_not_extend_to_older_generations(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let third = Tokens::from_response(&app.refresh(&second.refresh).await);
    assert_eq!(
        app.refresh(&first.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&third.refresh).await.status,
        StatusCode::UNAUTHORIZED,
        "session revoked"
    );
}

async fn replay_of_the_predecessor_after_grace_is_reuse(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let third = Tokens::from_response(&app.refresh(&second.refresh).await);
    assert_eq!(
        app.refresh(&second.refresh).await.status,
        StatusCode::OK,
        "predecessor within grace"
    );
    app.advance(Duration::from_secs(11));
    assert_eq!(
        app.refresh(&second.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&third.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// SECURITY.md F61: generations, not timestamps. Without a grace window, two rotations in the
/// same second and a replay of the older token, in that same second, are reuse.
async fn two_rotations_in_one_second_then_replay_is_reuse(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.refresh_reuse_grace = Duration::ZERO).await;
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let third = Tokens::from_response(&app.refresh(&second.refresh).await);
    assert_eq!(
        app.refresh(&first.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&third.refresh).await.status,
        StatusCode::UNAUTHORIZED,
        "revoked"
    );
    assert_eq!(
        app.validate(&third.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

mod no_grace {
    use super::*;

    crate::on_every_backend!(two_rotations_in_one_second_then_replay_is_reuse);
}

async fn twenty_concurrent_refreshes_fork_nothing(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (app, token) = (app.clone(), first.refresh.clone());
        tasks.push(tokio::spawn(async move { app.refresh(&token).await }));
    }
    let mut successors = std::collections::HashSet::new();
    for task in tasks {
        let response = task.await.unwrap();
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        successors.insert(response.str("refresh_token"));
    }
    assert_eq!(successors.len(), 1, "every racer got the same successor");
    let successor = successors.into_iter().next().unwrap();
    let next = Tokens::from_response(&app.refresh(&successor).await);
    assert_eq!(
        app.validate(&next.access).await.status,
        StatusCode::OK,
        "the session is alive"
    );
}

async fn sessions_of_one_user_refresh_independently(app: TestApp) {
    let (user, a) = app.logged_in_user().await;
    let b = user.login(&app).await;
    let (ra, rb) = tokio::join!(app.refresh(&a.refresh), app.refresh(&b.refresh));
    assert_eq!(ra.status, StatusCode::OK);
    assert_eq!(rb.status, StatusCode::OK);
}

async fn session_past_its_absolute_lifetime_cannot_refresh(app: TestApp) {
    let (_, mut tokens) = app.logged_in_user().await;
    // Used every six days, it never idles out; thirty days after login it ends anyway.
    for _ in 0..4 {
        app.advance(Duration::from_secs(6 * 24 * 3600));
        tokens = Tokens::from_response(&app.refresh(&tokens.refresh).await);
    }
    app.advance(Duration::from_secs(6 * 24 * 3600 + 1));
    assert_eq!(
        app.refresh(&tokens.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn refresh_token_unused_past_the_idle_timeout_is_refused(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    app.advance(Duration::from_secs(7 * 24 * 3600));
    assert_eq!(
        app.refresh(&tokens.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn disabled_user_cannot_refresh(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let id = app.user(&user.email).await.id;
    app.state
        .store
        .disable_user(&id, app.state.revoke_at())
        .await
        .unwrap();
    assert_eq!(
        app.refresh(&tokens.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn malformed_refresh_tokens_are_invalid_grant(app: TestApp) {
    for token in [
        "",
        "short",
        "' OR 1=1 --",
        &"A".repeat(10_000),
        "\u{0}",
        "../../etc/passwd",
    ] {
        let response = app.refresh(token).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(response.error(), "invalid_grant");
    }
}

async fn unknown_well_formed_token_leaves_the_real_session_alone(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let forged = URL_SAFE_NO_PAD.encode([7_u8; 32]);
    assert_eq!(app.refresh(&forged).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.refresh(&tokens.refresh).await.status, StatusCode::OK);
}

async fn refreshed_token_carries_the_current_roles(app: TestApp) {
    let (user, tokens) = app.logged_in_user().await;
    let id = app.user(&user.email).await.id;
    app.state.store.grant_role(&id, "admin").await.unwrap();
    let next = Tokens::from_response(&app.refresh(&tokens.refresh).await);
    assert_eq!(
        claims_of(&next.access)["roles"],
        serde_json::json!(["admin", "user"])
    );
}

crate::on_every_store!(
    refresh_rotates_the_token_and_keeps_the_session,
    refresh_tokens_are_stored_only_as_sha256,
    replay_after_the_grace_window_revokes_the_whole_session,
    replay_of_the_predecessor_within_grace_returns_the_same_successor,
    grace_does_not_extend_to_older_generations,
    replay_of_the_predecessor_after_grace_is_reuse,
    twenty_concurrent_refreshes_fork_nothing,
    sessions_of_one_user_refresh_independently,
    session_past_its_absolute_lifetime_cannot_refresh,
    refresh_token_unused_past_the_idle_timeout_is_refused,
    disabled_user_cannot_refresh,
    malformed_refresh_tokens_are_invalid_grant,
    unknown_well_formed_token_leaves_the_real_session_alone,
    refreshed_token_carries_the_current_roles,
);

/// SECURITY.md F 60, on the server stores (SQLite serialises every write anyway): a refresh
/// locks only its own session, so while another session of the same user is held locked by an
/// open transaction, a refresh of this one completes; the locked one's own refresh waits, which
/// shows the lock is real. On MySQL this also shows that no gap or next-key lock of the held
/// row reaches a neighbouring session's rows.
async fn a_session_held_locked_does_not_hold_up_another_of_the_same_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (user, a) = app.logged_in_user().await;
    let b = user.login(&app).await;
    let raw = app.raw().await;
    let mut held = raw.pool.begin().await.unwrap();
    sqlx::query(raw.sql(
        "SELECT id FROM sessions WHERE id = $1 FOR UPDATE",
        "SELECT id FROM sessions WHERE id = ? FOR UPDATE",
    ))
    .bind(a.sid())
    .fetch_one(&mut *held)
    .await
    .unwrap();
    let other = tokio::time::timeout(Duration::from_secs(5), app.refresh(&b.refresh))
        .await
        .expect("a refresh of another session waited on this one's lock");
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let own = tokio::time::timeout(Duration::from_millis(500), app.refresh(&a.refresh)).await;
    assert!(
        own.is_err(),
        "the locked session's own refresh waits for the lock"
    );
    held.rollback().await.unwrap();
    let own = app.refresh(&a.refresh).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);
}

mod row_locks {
    use super::*;

    crate::on_server_backends!(a_session_held_locked_does_not_hold_up_another_of_the_same_user);
}
