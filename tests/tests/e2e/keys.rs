//! Keys at the edge: before the first fetch, with auth-api gone, and one fetch per interval.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions, StaleAfter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_fails_closed_until_keys_arrive() {
    let mut stack = Stack::start(StackOptions {
        serve_auth_api: false,
        ..StackOptions::default()
    })
    .await;
    let before = stack.gateway.get("/api/orders", Some("a.b.c")).await;
    assert_eq!(before.status(), 503, "no keys yet: fail closed");
    let public = stack.gateway.get("/public/hello", None).await;
    assert_eq!(public.status(), 200, "public routes need no keys");
    stack.start_auth_api().await;
    stack.gateway.wait_for_keys().await;
    let (_, login) = stack.gateway.new_user().await;
    assert_eq!(
        stack
            .gateway
            .status("/api/orders", login["access_token"].as_str())
            .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_keep_passing_while_auth_api_is_down() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let (_, login) = stack.gateway.new_user().await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    stack.stop_auth_api().await;
    // Several polls fail meanwhile; the last good keys stay in force.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stack.gateway.status("/api/orders", Some(&access)).await,
        200
    );
    assert_eq!(
        stack.gateway.status("/auth/healthz", None).await,
        503,
        "auth-api itself is unreachable"
    );
    assert!(
        stack.gateway.envoy.counter("jwks_fetch_failed").await > 0,
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
    let start = stack.gateway.envoy.counter("jwks_fetch_success").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let fetched = stack.gateway.envoy.counter("jwks_fetch_success").await - start;
    // One fetcher for both workers: about 5 in 5 s. Each worker fetching would be about 10.
    assert!(
        (3..=7).contains(&fetched),
        "{fetched} fetches in 5 s with 2 workers and a 1 s interval"
    );
}

/// A key that signs before the next poll would bring it (here: the replacement after
/// `keys revoke`, which signs at once) is fetched when a token first names it, not a poll
/// (30 s) later; a flood of made-up kids still costs at most one fetch a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_signing_key_is_fetched_when_a_token_first_names_it() {
    let stack = Stack::start(StackOptions {
        poll_seconds: 30,
        ..StackOptions::default()
    })
    .await;
    let (email, _) = stack.gateway.new_user().await;
    let old_kid = stack.signer_kid();
    let replacement = stack
        .state
        .ring
        .revoke(&old_kid, stack.state.clock.now())
        .await
        .unwrap()
        .replacement()
        .expect("a replacement key");
    let fresh = stack.gateway.login(&email).await;
    let token = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        test_support::jwt_part(token, 0)["kid"],
        replacement.as_str(),
        "signed by the replacement"
    );
    let started = std::time::Instant::now();
    loop {
        let status = stack.gateway.status("/api/orders", Some(token)).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still {status} after {:?} with a 30 s key poll",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let fetches = stack.gateway.envoy.counter("jwks_fetch_success").await;
    let alg = stack.signer().key.algorithm();
    let flood_started = std::time::Instant::now();
    let mut sent = 0;
    while flood_started.elapsed() < Duration::from_secs(3) {
        let made_up = stack.sign_raw(
            &format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"made-up-{sent}"}}"#),
            r#"{"sub":"x"}"#,
        );
        assert_eq!(
            stack.gateway.status("/api/orders", Some(&made_up)).await,
            401
        );
        sent += 1;
    }
    // Counters reach Envoy on the next tick.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flood_fetches = stack.gateway.envoy.counter("jwks_fetch_success").await - fetches;
    assert!(
        flood_fetches <= 4,
        "{flood_fetches} key fetches for {sent} made-up kids in 3 s"
    );
}

/// With auth-api gone, a token that passes keeps passing until the gateway's copy of `source`
/// goes stale, then every worker answers 503 on protected routes (SECURITY.md I 85), while
/// public routes still pass.
async fn a_stale_source_fails_closed(stale_after: StaleAfter, source: &str) {
    let mut stack = Stack::start(StackOptions {
        stale_after: Some(stale_after),
        ..StackOptions::default()
    })
    .await;
    let (_, login) = stack.gateway.new_user().await;
    let access = login["access_token"].as_str().unwrap().to_owned();
    stack.stop_auth_api().await;
    let gateway = &stack.gateway;
    let ask = |path: &'static str, token: Option<String>| async move {
        gateway
            .get_on_new_connection(path, token.as_deref())
            .await
            .status()
            .as_u16()
    };
    let stopped = Instant::now();
    assert_eq!(
        ask("/api/orders", Some(access.clone())).await,
        200,
        "{source}: fresh copy"
    );
    loop {
        let status = ask("/api/orders", Some(access.clone())).await;
        if status == 503 {
            break;
        }
        assert_eq!(status, 200, "{source}");
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "{source}: still 200 {:?} after auth-api stopped",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "{source}: 503 after {:?}, before its stale limit",
        stopped.elapsed()
    );
    for _ in 0..6 {
        assert_eq!(
            ask("/api/orders", Some(access.clone())).await,
            503,
            "{source}: every worker"
        );
    }
    assert_eq!(
        ask("/public/hello", None).await,
        200,
        "public routes need neither"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_fail_closed_at_the_gateway() {
    a_stale_source_fails_closed(
        StaleAfter {
            keys: 3,
            revocations: 900,
        },
        "keys",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_revocation_feed_fails_closed_at_the_gateway() {
    a_stale_source_fails_closed(
        StaleAfter {
            keys: 3600,
            revocations: 3,
        },
        "revocations",
    )
    .await;
}
