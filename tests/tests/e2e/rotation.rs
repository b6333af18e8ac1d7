//! A key rotation from start to finish under a steady stream of requests: no valid request is
//! refused, new tokens carry the new kid, and the old key leaves the set at the end.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use e2e::{Stack, StackOptions};
use serde_json::{json, Value};

/// Shortened timings: tokens live 4 s, a new key is published 3 s (three key polls) before it
/// signs, and a retired key leaves the set 4 s after its last token.
fn fast_rotation(config: &mut auth_api::Config) {
    config.access_token_ttl = Duration::from_secs(4);
    config.clock_skew = Duration::ZERO;
    config.key_publish_delay = Duration::from_secs(3);
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_refuses_no_valid_request() {
    let stack = Arc::new(
        Stack::start(StackOptions {
            configure: fast_rotation,
            ..StackOptions::default()
        })
        .await,
    );
    let old_kid = stack.signer_kid();
    let deadline = Instant::now() + Duration::from_secs(14);
    let (sent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Three users, each sending a request every 100 ms and refreshing every second.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (stack, sent, refused) = (Arc::clone(&stack), Arc::clone(&sent), Arc::clone(&refused));
        clients.push(tokio::spawn(async move {
            let (_, mut tokens) = stack.new_user().await;
            let mut refreshed_at = Instant::now();
            let mut kids = Vec::new();
            while Instant::now() < deadline {
                if refreshed_at.elapsed() >= Duration::from_secs(1) {
                    let response = stack
                        .post(
                            "/auth/refresh",
                            &json!({"refresh_token": tokens["refresh_token"]}),
                        )
                        .await;
                    assert_eq!(response.status(), 200, "refresh during rotation");
                    tokens = response.json::<Value>().await.unwrap();
                    refreshed_at = Instant::now();
                }
                let access = tokens["access_token"].as_str().unwrap();
                let exp = test_support::jwt_part(access, 1)["exp"].as_i64().unwrap();
                let status = stack.get("/api/orders", Some(access)).await.status();
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 && exp > unix_now() {
                    refused.fetch_add(1, Ordering::Relaxed);
                    eprintln!("valid token refused with {status}");
                }
                let kid = test_support::jwt_part(access, 0)["kid"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                if kids.last() != Some(&kid) {
                    kids.push(kid);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            kids
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let (new_kid, _) = stack
        .state
        .ring
        .rotate(stack.state.clock.now())
        .await
        .unwrap();
    let mut kids_seen = Vec::new();
    for client in clients {
        kids_seen.push(client.await.unwrap());
    }

    assert!(sent.load(Ordering::Relaxed) > 200, "the stream kept going");
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "valid requests refused during the rotation"
    );
    for kids in &kids_seen {
        assert_eq!(kids.first(), Some(&old_kid), "started on the old key");
        assert_eq!(kids.last(), Some(&new_kid), "ended on the new key");
    }
    let keys: Value = stack
        .client
        .get(format!("http://{}/internal/keys", internal_addr(&stack)))
        .bearer_auth(e2e::stack::INTERNAL_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<_> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(published, [new_kid], "the old key left the set");
}

fn internal_addr(stack: &Stack) -> String {
    stack.internal_addr.to_string()
}
