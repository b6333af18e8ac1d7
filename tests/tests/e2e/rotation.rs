//! A key rotation from start to finish under a steady stream of requests: no valid request is
//! refused, new tokens carry the new kid, and the old key leaves the set at the end. Once within
//! one algorithm (ES256, the default, with the gateway on the public JWKS), once across an
//! algorithm change (HS256 → ES256, how an installation made before public keys moves on).
//! The key ring and the sessions refreshed under load are the store's: the first runs on
//! MySQL/MariaDB, the second on PostgreSQL (one each rather than both twice; see `main.rs`).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use auth_jwt::Algorithm;
use e2e::{Backend, GatewayKeys, Stack, StackOptions};
use serde_json::{json, Value};

/// Shortened timings: tokens live 4 s, a new key is published 3 s (three key polls) before it
/// signs, and a retired key leaves the set 4 s after its last token.
fn fast_rotation(config: &mut auth_api::Config) {
    config.access_token_ttl = Duration::from_secs(4);
    config.clock_skew = Duration::ZERO;
    config.key_publish_delay = Duration::from_secs(3);
    // Verifiers caching the public JWKS must see a new key before it signs.
    config.jwks_max_age = Duration::from_secs(1);
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Starts a stack whose ring signs with `from`, loads it with three users for 14 s, rotates to a
/// key of `to` after 1 s, and checks that no request with an unexpired token was refused and
/// every user ended on the new key. Returns the stack and the new kid.
async fn rotation_under_load(options: StackOptions, to: Algorithm) -> (Arc<Stack>, String) {
    let stack = Arc::new(Stack::start(options).await);
    let old_kid = stack.signer_kid();
    let deadline = Instant::now() + Duration::from_secs(14);
    let (sent, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));

    // Three users, each sending a request every 100 ms and refreshing every second.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (stack, sent, refused) = (Arc::clone(&stack), Arc::clone(&sent), Arc::clone(&refused));
        clients.push(tokio::spawn(async move {
            let (_, mut tokens) = stack.gateway.new_user().await;
            let mut refreshed_at = Instant::now();
            let mut kids = Vec::new();
            while Instant::now() < deadline {
                if refreshed_at.elapsed() >= Duration::from_secs(1) {
                    let response = stack
                        .gateway
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
                let header = test_support::jwt_part(access, 0);
                let status = stack.gateway.status("/api/orders", Some(access)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                if status != 200 && exp > unix_now() {
                    refused.fetch_add(1, Ordering::Relaxed);
                    eprintln!("valid {} token refused with {status}", header["alg"]);
                }
                let kid = (
                    header["kid"].as_str().unwrap().to_owned(),
                    header["alg"].as_str().unwrap().to_owned(),
                );
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
        .rotate_to(stack.state.clock.now(), to)
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
        assert_eq!(
            kids.first().map(|k| &k.0),
            Some(&old_kid),
            "started on the old key"
        );
        assert_eq!(
            kids.last(),
            Some(&(new_kid.clone(), to.as_str().to_owned())),
            "ended on the new key, of the new algorithm"
        );
    }
    (stack, new_kid)
}

/// The kids of a JWK Set.
fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_refuses_no_valid_request() {
    let (stack, new_kid) = rotation_under_load(
        StackOptions {
            backend: Backend::Mysql,
            configure: fast_rotation,
            ..StackOptions::default()
        },
        Algorithm::ES256,
    )
    .await;
    assert_eq!(
        kids(&stack.public_jwks().await),
        std::slice::from_ref(&new_kid),
        "the old key left the public set"
    );
    assert_eq!(kids(&stack.internal_keys().await), [new_kid]);
}

/// An installation made before public keys signs with HS256, and its gateway polls
/// `/internal/keys` (the only document with HS256 secrets; the public JWKS never lists them).
/// It rotates to ES256 under load: `/internal/keys` serves the new key's public JWK beside the
/// HS256 secret, so tokens of both verify until the last HS256 token has expired. Only then
/// can the gateway be switched to the public JWKS, holding no secret any more: the test checks
/// that everything it needs is there by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_from_hs256_to_es256_under_load_refuses_no_valid_request() {
    let (stack, new_kid) = rotation_under_load(
        StackOptions {
            configure: |config| {
                fast_rotation(config);
                config.signing_alg = Algorithm::HS256;
            },
            keys: GatewayKeys::Internal,
            backend: Backend::Postgres,
            ..StackOptions::default()
        },
        Algorithm::ES256,
    )
    .await;
    let internal = stack.internal_keys().await;
    assert_eq!(
        kids(&internal),
        std::slice::from_ref(&new_kid),
        "the HS256 key left"
    );
    assert_eq!(internal["keys"][0]["kty"], "EC", "and no secret is left");
    assert_eq!(
        kids(&stack.public_jwks().await),
        [new_kid],
        "the public JWKS now has every key the gateway needs"
    );
    assert!(
        stack
            .gateway
            .envoy
            .counter("auth_filter.signature.host")
            .await
            > 0,
        "ES256 tokens were checked by Envoy's verify_signature"
    );
}
