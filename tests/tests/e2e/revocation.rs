//! Revocation reaches the edge: after logout (and its kin) the gateway refuses the old access
//! token within the feed's poll interval plus a second, while everyone else passes.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::{json, Value};

/// The filter polls the feed every second in these tests (`poll_seconds: 1`).
const WITHIN: Duration = Duration::from_secs(2);

/// Polls `GET path` with `token` until it answers `status`; panics after `WITHIN` (plus the
/// time of one request). Returns how long it took.
async fn answers_within(stack: &Stack, token: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let answer = stack
            .get("/api/orders", Some(token))
            .await
            .status()
            .as_u16();
        if answer == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() <= WITHIN,
            "still {answer} after {:?}, expected {status}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn access(login: &Value) -> &str {
    login["access_token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_reaches_the_gateway_within_a_poll() {
    let stack = Stack::start(StackOptions::default()).await;
    let (email, mine) = stack.new_user().await;
    let (_, someone_else) = stack.new_user().await;
    let my_other_session = stack
        .post(
            "/auth/login",
            &json!({"email": email, "password": "correct horse battery staple"}),
        )
        .await;
    let my_other_session: Value = my_other_session.json().await.unwrap();
    assert_eq!(
        stack.get("/api/orders", Some(access(&mine))).await.status(),
        200
    );

    let logout = stack
        .client
        .post(stack.url("/auth/logout"))
        .bearer_auth(access(&mine))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    answers_within(&stack, access(&mine), 401).await;
    let refused = stack.get("/api/orders", Some(access(&mine))).await;
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("revoked"), "{challenge}");

    assert_eq!(
        stack
            .get("/api/orders", Some(access(&my_other_session)))
            .await
            .status(),
        200,
        "other session"
    );
    assert_eq!(
        stack
            .get("/api/orders", Some(access(&someone_else)))
            .await
            .status(),
        200,
        "other user"
    );
    assert!(stack.envoy.counter("revocations_fetch_success").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_everywhere_reaches_every_session_at_the_gateway() {
    let stack = Stack::start(StackOptions::default()).await;
    let (email, first) = stack.new_user().await;
    let credentials = json!({"email": email, "password": "correct horse battery staple"});
    let second: Value = stack
        .post("/auth/login", &credentials)
        .await
        .json()
        .await
        .unwrap();
    let (_, someone_else) = stack.new_user().await;

    let logout = stack
        .client
        .post(stack.url("/auth/logout"))
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
            .get("/api/orders", Some(access(&someone_else)))
            .await
            .status(),
        200
    );

    let again: Value = stack
        .post("/auth/login", &credentials)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        stack
            .get("/api/orders", Some(access(&again)))
            .await
            .status(),
        200,
        "a new login passes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_reuse_revokes_the_session_at_the_gateway() {
    let stack = Stack::start(StackOptions {
        // No grace: the replay below is reuse at once.
        configure: |c| c.refresh_reuse_grace = Duration::ZERO,
        ..StackOptions::default()
    })
    .await;
    let (_, login) = stack.new_user().await;
    let rotated: Value = stack
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
            .get("/api/orders", Some(access(&rotated)))
            .await
            .status(),
        200
    );
    let replay = stack
        .post(
            "/auth/refresh",
            &json!({"refresh_token": login["refresh_token"]}),
        )
        .await;
    assert_eq!(replay.status(), 401);
    answers_within(&stack, access(&rotated), 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_reaches_the_gateway() {
    let stack = Stack::start(StackOptions::default()).await;
    let (email, login) = stack.new_user().await;
    let user = stack
        .state
        .store
        .user_by_email(&email)
        .await
        .unwrap()
        .unwrap();
    stack
        .state
        .store
        .disable_user(&user.id, stack.state.revoke_at())
        .await
        .unwrap();
    answers_within(&stack, access(&login), 401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_is_refused_at_the_gateway_within_a_poll() {
    let stack = Stack::start(StackOptions::default()).await;
    let (email, login) = stack.new_user().await;
    let kid = stack.signer_kid();
    let replacement = stack
        .state
        .ring
        .revoke(&kid, stack.state.clock.now())
        .await
        .unwrap();
    assert!(replacement.is_some());
    answers_within(&stack, access(&login), 401).await;
    // The replacement signs at once; the gateway accepts its tokens from its next key poll.
    let credentials = json!({"email": email, "password": "correct horse battery staple"});
    let fresh: Value = stack
        .post("/auth/login", &credentials)
        .await
        .json()
        .await
        .unwrap();
    answers_within(&stack, access(&fresh), 200).await;
}
