//! An attacker's script through the gateway: 1,000 wrong passwords against one account, each
//! with a new made-up `X-Forwarded-For`. After the free attempts everything is 429.

use e2e::{Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_passwords_from_rotating_forwarded_for_get_429s() {
    let stack = Stack::start(StackOptions {
        configure: |c| c.ip_limit_per_minute = 60,
        ..StackOptions::default()
    })
    .await;
    let (email, _) = stack.gateway.new_user().await;
    let (mut refused, mut throttled) = (0, 0);
    for i in 0..1000_u32 {
        let response = stack
            .gateway
            .client
            .post(stack.gateway.url("/auth/login"))
            .header("x-forwarded-for", format!("198.51.{}.{}", i / 256, i % 256))
            .json(&json!({"email": email, "password": format!("guess-{i}")}))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            401 => refused += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                throttled += 1;
            }
            other => panic!("attempt {i}: {other}"),
        }
    }
    // Five free attempts, and a few more as the first short locks run out during the loop.
    assert!(refused <= 12, "{refused} passwords were checked");
    assert_eq!(refused + throttled, 1000);
    let right = stack
        .gateway
        .post(
            "/auth/login",
            &json!({"email": email, "password": "correct horse battery staple"}),
        )
        .await;
    assert_eq!(
        right.status(),
        429,
        "still locked, and no hint whether the password was right"
    );
}

/// A client cannot pick its own rate-limit bucket through the gateway: the shipped configs name
/// no internal address, so from every peer (loopback, as here, included) Envoy writes
/// `x-envoy-external-address` itself, over the client's own. (Were the peer internal, Envoy would
/// pass the client's copy on marked `x-envoy-internal`, and auth-api would ignore it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_its_rate_limit_bucket() {
    let stack = Stack::start(StackOptions {
        configure: |c| c.ip_limit_per_minute = 5,
        ..StackOptions::default()
    })
    .await;
    let mut statuses = Vec::new();
    for i in 0..10_u32 {
        let response = stack
            .gateway
            .client
            .post(stack.gateway.url("/auth/login"))
            .header("x-envoy-external-address", format!("203.0.113.{i}"))
            .json(
                &json!({"email": format!("nobody-{i}@example.com"), "password": "whatever it is"}),
            )
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        5,
        "one bucket of 5 whatever the spoofed address: {statuses:?}"
    );
}
