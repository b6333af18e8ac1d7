//! Keys at the edge: before the first fetch, with auth-api gone, and one fetch per interval.

use std::time::Duration;

use e2e::{Stack, StackOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fails_closed_until_keys_arrive() {
    let mut stack = Stack::start(StackOptions {
        serve_auth_api: false,
        ..StackOptions::default()
    })
    .await;
    let before = stack.get("/api/orders", Some("a.b.c")).await;
    assert_eq!(before.status(), 503, "no keys yet: fail closed");
    let public = stack.get("/public/hello", None).await;
    assert_eq!(public.status(), 200, "public routes need no keys");
    stack.start_auth_api().await;
    stack.wait_for_keys().await;
    let (_, login) = stack.new_user().await;
    assert_eq!(
        stack
            .get("/api/orders", login["access_token"].as_str())
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_keep_passing_while_auth_api_is_down() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let (_, login) = stack.new_user().await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    stack.stop_auth_api().await;
    // Several polls fail meanwhile; the last good keys stay in force.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.get("/api/orders", Some(&access)).await.status(), 200);
    assert_eq!(
        stack.get("/auth/healthz", None).await.status(),
        503,
        "auth-api itself is unreachable"
    );
    assert!(
        stack.envoy.counter("jwks_fetch_failed").await > 0,
        "the failed polls are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fetched_once_per_interval_not_once_per_worker() {
    let stack = Stack::start(StackOptions {
        poll_seconds: 1,
        concurrency: 2,
        ..StackOptions::default()
    })
    .await;
    let start = stack.envoy.counter("jwks_fetch_success").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fetched = stack.envoy.counter("jwks_fetch_success").await - start;
    // One fetcher for both workers: about 5 in 5 s. Each worker fetching would be about 10.
    assert!(
        (3..=7).contains(&fetched),
        "{fetched} fetches in 5 s with 2 workers and a 1 s interval"
    );
}
