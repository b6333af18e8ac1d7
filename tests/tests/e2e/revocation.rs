//! Revocation reaches the edge: after logout (and its kin) the gateway refuses the old access
//! token within the feed's poll interval plus a second, while everyone else passes. Every
//! scenario runs on both server stores (`<scenario>::postgres`, `<scenario>::mysql`): the feed
//! is the store's.

use std::time::{Duration, Instant};

use e2e::{Backend, Stack, StackOptions};
use serde_json::{json, Value};

/// The filter polls the feed every second in these tests (`poll_seconds: 1`); the worker that
/// fetched uses the new feed at once, the other workers from their next tick (250 ms). So a
/// revocation reaches every worker within 1.25 s plus the fetch; the rest absorbs a noisy
/// machine.
const WITHIN: Duration = Duration::from_secs(2);

/// How long an answer must hold, on fresh connections, before every worker is known to give it:
/// longer than one tick.
const STEADY: Duration = Duration::from_millis(600);

/// Polls `GET /api/orders` with `token`, each time on a new connection so that every Envoy
/// worker gets asked, until it has answered `status` without a break for `STEADY`; panics if that
/// has not begun within `WITHIN`. Returns the last answer.
async fn answers_within(stack: &Stack, token: &str, status: u16) -> reqwest::Response {
    let deadline = Instant::now() + WITHIN;
    stack
        .gateway
        .answers_by(token, status, deadline, STEADY)
        .await
}

fn access(login: &Value) -> &str {
    login["access_token"].as_str().unwrap()
}

async fn logout_reaches_the_gateway_within_a_poll(backend: Backend) {
    let stack = Stack::start(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await;
    let (email, mine) = stack.gateway.new_user().await;
    let (_, someone_else) = stack.gateway.new_user().await;
    let my_other_session = stack.gateway.login(&email).await;
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&mine)))
            .await,
        200
    );

    let logout = stack
        .gateway
        .post_with_token("/auth/logout", access(&mine))
        .await;
    assert_eq!(logout.status(), 204);
    let refused = answers_within(&stack, access(&mine), 401).await;
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("revoked"), "{challenge}");

    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&my_other_session)))
            .await,
        200,
        "other session"
    );
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&someone_else)))
            .await,
        200,
        "other user"
    );
    assert!(
        stack
            .gateway
            .envoy
            .counter("revocations_fetch_success")
            .await
            > 0
    );
}

async fn logout_everywhere_reaches_every_session_at_the_gateway(backend: Backend) {
    let stack = Stack::start(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await;
    let (email, first) = stack.gateway.new_user().await;
    let second = stack.gateway.login(&email).await;
    let (_, someone_else) = stack.gateway.new_user().await;

    let logout = stack
        .gateway
        .client
        .post(stack.gateway.url("/auth/logout"))
        .bearer_auth(access(&first))
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    answers_within(&stack, access(&first), 401).await;
    answers_within(&stack, access(&second), 401).await;
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&someone_else)))
            .await,
        200
    );

    let again = stack.gateway.login(&email).await;
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&again)))
            .await,
        200,
        "a new login passes"
    );
}

async fn refresh_token_reuse_revokes_the_session_at_the_gateway(backend: Backend) {
    let stack = Stack::start(StackOptions {
        backend,
        // No grace: the replay below is reuse at once.
        configure: |c| c.refresh_reuse_grace = Duration::ZERO,
        ..StackOptions::default()
    })
    .await;
    let (_, login) = stack.gateway.new_user().await;
    let rotated: Value = stack
        .gateway
        .post(
            "/auth/refresh",
            &json!({"refresh_token": login["refresh_token"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&rotated)))
            .await,
        200
    );
    let replay = stack
        .gateway
        .post(
            "/auth/refresh",
            &json!({"refresh_token": login["refresh_token"]}),
        )
        .await;
    assert_eq!(replay.status(), 401);
    answers_within(&stack, access(&rotated), 401).await;
}

async fn disabling_a_user_reaches_the_gateway(backend: Backend) {
    let stack = Stack::start(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await;
    let (email, login) = stack.gateway.new_user().await;
    let user = stack.user(&email).await;
    stack
        .state
        .store
        .disable_user(&user.id, stack.state.revoke_at())
        .await
        .unwrap();
    answers_within(&stack, access(&login), 401).await;
}

async fn revoked_key_is_refused_at_the_gateway_within_a_poll(backend: Backend) {
    let stack = Stack::start(StackOptions {
        backend,
        ..StackOptions::default()
    })
    .await;
    let (email, login) = stack.gateway.new_user().await;
    let kid = stack.signer_kid();
    let replacement = stack
        .state
        .ring
        .revoke(&kid, stack.state.clock.now())
        .await
        .unwrap()
        .replacement();
    assert!(replacement.is_some());
    answers_within(&stack, access(&login), 401).await;
    // The replacement signs at once; the gateway accepts its tokens from its next key poll.
    let fresh = stack.gateway.login(&email).await;
    answers_within(&stack, access(&fresh), 200).await;
}

/// Revocations that arrive faster than one page per poll reach the gateway over several pages
/// of the feed, each asked for as soon as the last one answers: here pages of two entries, five
/// sessions revoked at once and a 4 s poll. A gateway that waited a poll between pages would
/// need three polls (at least 8 s) for the last one.
async fn a_burst_of_revocations_reaches_the_gateway_over_several_pages(backend: Backend) {
    const POLL: Duration = Duration::from_secs(4);
    let stack = Stack::start(StackOptions {
        backend,
        configure: |config| config.revocation_feed_page = 2,
        revocation_poll_seconds: 4,
        ..StackOptions::default()
    })
    .await;
    let (email, kept) = stack.gateway.new_user().await;
    let mut revoked = Vec::new();
    for _ in 0..5 {
        let login = stack.gateway.login(&email).await;
        revoked.push(access(&login).to_owned());
    }
    for token in &revoked {
        let logout = stack.gateway.post_with_token("/auth/logout", token).await;
        assert_eq!(logout.status(), 204);
    }
    let logged_out = Instant::now();
    let last = revoked.last().unwrap();
    loop {
        let status = stack
            .gateway
            .get_on_new_connection("/api/orders", Some(last))
            .await
            .status();
        if status == 401 {
            break;
        }
        assert!(
            logged_out.elapsed() < POLL + Duration::from_secs(3),
            "the fifth revocation (third page) still not in force after {:?}",
            logged_out.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for token in &revoked {
        answers_within(&stack, token, 401).await;
    }
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", Some(access(&kept)))
            .await,
        200,
        "the session nobody revoked"
    );
}

on_stores!(
    [postgres, mysql]:
    logout_reaches_the_gateway_within_a_poll,
    logout_everywhere_reaches_every_session_at_the_gateway,
    refresh_token_reuse_revokes_the_session_at_the_gateway,
    disabling_a_user_reaches_the_gateway,
    revoked_key_is_refused_at_the_gateway_within_a_poll,
    a_burst_of_revocations_reaches_the_gateway_over_several_pages,
);
