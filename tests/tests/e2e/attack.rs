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
    let (email, _) = stack.new_user().await;
    let (mut refused, mut throttled) = (0, 0);
    for i in 0..1000_u32 {
        let response = stack
            .client
            .post(stack.url("/auth/login"))
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

/// The address auth-api's per-client limits key on comes from Envoy, never from the client: a
/// client's own `x-envoy-external-address` is replaced with the address Envoy saw, also from a
/// loopback or private address (`internal_address_config` names no internal peers). auth-api
/// never reads `X-Forwarded-For`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_choose_the_address_auth_api_sees() {
    let stack = Stack::start(StackOptions::default()).await;
    let echoed: serde_json::Value = stack
        .client
        .get(stack.url("/public/whoami"))
        .header("x-envoy-external-address", "203.0.113.9")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &echoed["headers"];
    assert_eq!(
        headers["x-envoy-external-address"], "127.0.0.1",
        "Envoy's own view of the client: {headers}"
    );
}
