//! Scale-out, proven (issue 11): two auth-api replicas on one database and one Redis, each
//! behind its own Envoy with two workers. A session moves between replicas, reuse detected on
//! one ends the session on both, a logout through one gateway is refused at the other within the
//! documented bound, both replicas publish one key set and a scheduled rotation happens once,
//! and the per-address limit is one budget across replicas.
//!
//! Each scenario is a function of the store; `on_stores!` (in `main.rs`) makes one test per
//! store under a module named after the scenario: on PostgreSQL, and on MySQL/MariaDB with one
//! database shared by both replicas (Redis as on PostgreSQL).

use std::time::{Duration, Instant};

use auth_api::Config;
use e2e::{gateway::PASSWORD, Backend, Cluster, ClusterOptions, Replica};
use serde_json::{json, Value};

on_stores!(
    [postgres, mysql]:
    a_session_opened_on_one_replica_refreshes_on_the_other,
    refresh_token_reuse_on_one_replica_revokes_the_session_everywhere,
    a_logout_through_one_gateway_is_refused_at_the_other_within_a_poll,
    replicas_publish_the_same_keys_and_a_scheduled_rotation_happens_once,
    the_per_address_limit_is_one_budget_across_replicas,
    without_redis_each_replica_has_its_own_per_address_budget,
);

/// The filters poll the revocation feed every second here. README "Revocation": a revoked token
/// is refused at every gateway within one poll interval plus the fetch (the other workers take
/// it over at their next 250 ms tick); the slack absorbs a noisy machine, as in
/// `revocation.rs`.
const REVOCATION_BOUND: Duration = Duration::from_secs(2);

/// How long a gateway's answer must hold on fresh connections before every worker is known to
/// give it: longer than one tick.
const STEADY: Duration = Duration::from_millis(600);

async fn two_replicas(backend: Backend, configure: fn(&mut Config)) -> Cluster {
    Cluster::start(ClusterOptions {
        backend,
        configure,
        ..ClusterOptions::default()
    })
    .await
}

fn pair(cluster: &Cluster) -> (&Replica, &Replica) {
    let [a, b] = cluster.replicas.as_slice() else {
        panic!("two replicas expected");
    };
    (a, b)
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("an access token")
}

fn claim(token: &str, name: &str) -> Value {
    test_support::jwt_part(token, 1)[name].clone()
}

/// Every gateway passes `token` to the upstream, and every replica's `/validate` accepts it.
async fn accepted_everywhere(cluster: &Cluster, token: &str, what: &str) {
    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert_eq!(
            replica
                .gateway
                .get_on_new_connection("/api/orders", Some(token))
                .await
                .status(),
            200,
            "{what}: gateway {i}"
        );
        assert_eq!(
            replica.validate(token).await,
            200,
            "{what}: /validate of replica {i}"
        );
    }
}

async fn a_session_opened_on_one_replica_refreshes_on_the_other(backend: Backend) {
    let cluster = two_replicas(backend, |_| {}).await;
    let (a, b) = pair(&cluster);
    let (_, opened) = a.gateway.new_user().await;
    accepted_everywhere(&cluster, access(&opened), "opened on A").await;

    let on_b = b.gateway.refresh(&opened["refresh_token"]).await;
    assert_eq!(on_b.status(), 200, "refresh on B of a session opened on A");
    let on_b: Value = on_b.json().await.unwrap();
    accepted_everywhere(&cluster, access(&on_b), "refreshed on B").await;

    let back_on_a = a.gateway.refresh(&on_b["refresh_token"]).await;
    assert_eq!(back_on_a.status(), 200, "and on A again");
    let back_on_a: Value = back_on_a.json().await.unwrap();
    accepted_everywhere(&cluster, access(&back_on_a), "refreshed on A").await;

    let sid = claim(access(&opened), "sid");
    assert!(sid.is_string(), "tokens carry their session");
    for tokens in [&on_b, &back_on_a] {
        assert_eq!(claim(access(tokens), "sid"), sid, "one session throughout");
    }
    assert_ne!(on_b["refresh_token"], opened["refresh_token"], "B rotated");
    assert_ne!(
        back_on_a["refresh_token"], on_b["refresh_token"],
        "A rotated"
    );

    // The same token refreshed on both replicas at once (a client retrying through another
    // gateway): one rotation, inside the grace window both get its successor, no fork.
    let (on_a, on_b) = tokio::join!(
        a.gateway.refresh(&back_on_a["refresh_token"]),
        b.gateway.refresh(&back_on_a["refresh_token"]),
    );
    assert_eq!(
        (on_a.status().as_u16(), on_b.status().as_u16()),
        (200, 200),
        "both inside the grace"
    );
    let (on_a, on_b): (Value, Value) = (on_a.json().await.unwrap(), on_b.json().await.unwrap());
    assert_eq!(
        on_a["refresh_token"], on_b["refresh_token"],
        "one successor"
    );
    accepted_everywhere(&cluster, access(&on_a), "after the concurrent refresh").await;
    accepted_everywhere(&cluster, access(&on_b), "after the concurrent refresh").await;
    let next = b.gateway.refresh(&on_a["refresh_token"]).await;
    assert_eq!(next.status(), 200, "the successor is the live token");
}

async fn refresh_token_reuse_on_one_replica_revokes_the_session_everywhere(backend: Backend) {
    // No grace: the replay below is reuse at once.
    let cluster = two_replicas(backend, |c| c.refresh_reuse_grace = Duration::ZERO).await;
    let (a, b) = pair(&cluster);
    let (_, opened) = a.gateway.new_user().await;
    let (_, bystander) = b.gateway.new_user().await;
    let rotated = b.gateway.refresh(&opened["refresh_token"]).await;
    assert_eq!(rotated.status(), 200);
    let rotated: Value = rotated.json().await.unwrap();
    accepted_everywhere(&cluster, access(&rotated), "the rotated token").await;

    // The first token, already rotated away on B, replayed on A.
    let replay = a.gateway.refresh(&opened["refresh_token"]).await;
    assert_eq!(replay.status(), 401, "reuse detected on A");
    let reused_at = Instant::now();

    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert_eq!(
            replica.validate(access(&rotated)).await,
            401,
            "/validate of replica {i} refuses at once"
        );
    }
    let deadline = reused_at + REVOCATION_BOUND;
    let (at_a, at_b) = tokio::join!(
        a.gateway
            .answers_by(access(&rotated), 401, deadline, STEADY),
        b.gateway
            .answers_by(access(&rotated), 401, deadline, STEADY),
    );
    for answer in [at_a, at_b] {
        let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("revoked"), "{challenge}");
    }
    assert_eq!(
        b.gateway.refresh(&rotated["refresh_token"]).await.status(),
        401,
        "the live refresh token of the revoked session is dead on B too"
    );
    accepted_everywhere(&cluster, access(&bystander), "another user's session").await;
}

async fn a_logout_through_one_gateway_is_refused_at_the_other_within_a_poll(backend: Backend) {
    let cluster = two_replicas(backend, |_| {}).await;
    let (a, b) = pair(&cluster);
    let (email, mine) = a.gateway.new_user().await;
    let my_other_session = b.gateway.login(&email).await;
    accepted_everywhere(&cluster, access(&mine), "before the logout").await;

    let logout = a
        .gateway
        .post_with_token("/auth/logout", access(&mine))
        .await;
    assert_eq!(logout.status(), 204);
    let deadline = Instant::now() + REVOCATION_BOUND;
    let (at_b, at_a) = tokio::join!(
        b.gateway.answers_by(access(&mine), 401, deadline, STEADY),
        a.gateway.answers_by(access(&mine), 401, deadline, STEADY),
    );
    for answer in [at_b, at_a] {
        let challenge = answer.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("revoked"), "{challenge}");
    }
    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert_eq!(replica.validate(access(&mine)).await, 401, "replica {i}");
    }
    accepted_everywhere(
        &cluster,
        access(&my_other_session),
        "the session not logged out",
    )
    .await;
    for (i, replica) in cluster.replicas.iter().enumerate() {
        assert!(
            replica
                .gateway
                .envoy
                .counter("revocations_fetch_success")
                .await
                > 0,
            "gateway {i} reads its replica's feed"
        );
    }
}

/// The schedule's period: long enough that the cluster is up (and compared) before the first
/// rotation is due, and that no second one is due while the test watches.
const ROTATION_PERIOD: Duration = Duration::from_secs(10);
/// A rotated-in key is published this long before it signs: more than the gateways' key poll
/// (1 s) and the JWKS max-age (1 s), so every gateway has it first.
const PUBLISH_DELAY: Duration = Duration::from_secs(3);

fn scheduled_rotation(config: &mut Config) {
    config.key_rotation_interval = Some(ROTATION_PERIOD);
    config.key_refresh_interval = Duration::from_secs(1);
    config.key_publish_delay = PUBLISH_DELAY;
    config.jwks_max_age = Duration::from_secs(1);
}

fn kids(jwks: &Value) -> Vec<String> {
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .expect("a JWK Set")
        .iter()
        .map(|k| k["kid"].as_str().expect("a kid").to_owned())
        .collect();
    kids.sort();
    kids
}

/// Waits until every replica publishes the same JWKS with `count` keys; returns it.
async fn same_keys_everywhere(cluster: &Cluster, count: usize, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let sets = cluster.public_jwks().await;
        if sets.iter().all(|set| *set == sets[0]) && kids(&sets[0]).len() == count {
            let internal = cluster.replicas[0].internal_keys().await;
            assert_eq!(kids(&internal), kids(&sets[0]), "/internal/keys agrees");
            return sets[0].clone();
        }
        assert!(
            started.elapsed() < within,
            "the replicas do not publish one set of {count} keys after {:?}: {sets:#?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn replicas_publish_the_same_keys_and_a_scheduled_rotation_happens_once(backend: Backend) {
    let cluster = two_replicas(backend, scheduled_rotation).await;
    let (a, b) = pair(&cluster);
    let store = &a.state.store;
    let first = store.keys().await.unwrap();
    assert_eq!(
        first.len(),
        1,
        "the first key was made once, by the first replica"
    );
    let first_kid = first[0].kid.clone();
    let published = same_keys_everywhere(&cluster, 1, Duration::from_secs(1)).await;
    assert_eq!(kids(&published), std::slice::from_ref(&first_kid));
    let (_, from_a) = a.gateway.new_user().await;
    let (_, from_b) = b.gateway.new_user().await;
    for tokens in [&from_a, &from_b] {
        assert_eq!(
            test_support::jwt_part(access(tokens), 0)["kid"],
            first_kid.as_str()
        );
        accepted_everywhere(&cluster, access(tokens), "a token of the first key").await;
    }

    // Both replicas check the schedule every second; one of them rotates when it is due.
    let period = i64::try_from(ROTATION_PERIOD.as_secs()).unwrap();
    let due_in = first[0].created_at + period - a.state.clock.now();
    let due = Instant::now() + Duration::from_secs(u64::try_from(due_in).unwrap_or(0));
    let rotated_by = due + Duration::from_secs(4);
    let keys = loop {
        let keys = store.keys().await.unwrap();
        if keys.len() > 1 {
            break keys;
        }
        assert!(
            Instant::now() < rotated_by,
            "no scheduled rotation 4 s after it was due"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        keys.len(),
        2,
        "one rotation, not one per replica: {keys:#?}"
    );
    // Both replicas re-read the ring every second: both publish the new key before it signs.
    let published = same_keys_everywhere(&cluster, 2, Duration::from_secs(2)).await;
    let new_kid = keys
        .iter()
        .map(|k| k.kid.clone())
        .find(|kid| *kid != first_kid)
        .unwrap();
    assert!(kids(&published).contains(&new_kid));

    // Past the activation, each replica has ticked (and checked the schedule) several times
    // more: still the one rotation. Both sign with the new key, and each gateway accepts the
    // other replica's tokens.
    tokio::time::sleep(PUBLISH_DELAY + Duration::from_millis(500)).await;
    assert_eq!(store.keys().await.unwrap().len(), 2, "still one rotation");
    for replica in [a, b] {
        let (_, tokens) = replica.gateway.new_user().await;
        assert_eq!(
            test_support::jwt_part(access(&tokens), 0)["kid"],
            new_kid.as_str(),
            "the new key signs"
        );
        accepted_everywhere(&cluster, access(&tokens), "a token of the new key").await;
    }
    for tokens in [&from_a, &from_b] {
        accepted_everywhere(&cluster, access(tokens), "a token of the retired key").await;
    }
}

/// The limit in the two tests of the per-address budget: requests per address and minute.
const LIMIT: u32 = 6;

fn low_limit(config: &mut Config) {
    config.ip_limit_per_minute = LIMIT;
}

/// Sends failed logins alternately through each gateway (every request comes from
/// 127.0.0.1, the address each Envoy hands auth-api) until one is refused with 429 or `cap`
/// were sent; returns how many passed and the refused answer, if any. Each login names
/// another email, so that the per-email throttle (5 free failures, in the database) never
/// answers in the bucket's place.
async fn logins_until_limited(cluster: &Cluster, cap: u32) -> (u32, Option<reqwest::Response>) {
    for sent in 0..cap {
        let replica = &cluster.replicas[sent as usize % cluster.replicas.len()];
        let wrong = json!({
            "email": format!("nobody-{sent}@example.com"),
            "password": "not the password at all",
        });
        let answer = replica.gateway.post("/auth/login", &wrong).await;
        match answer.status().as_u16() {
            401 => {}
            429 => return (sent, Some(answer)),
            other => panic!("login {sent}: {other}"),
        }
    }
    (cap, None)
}

async fn the_per_address_limit_is_one_budget_across_replicas(backend: Backend) {
    let cluster = two_replicas(backend, low_limit).await;
    let (passed, refused) = logins_until_limited(&cluster, 2 * LIMIT).await;
    assert_eq!(passed, LIMIT, "one budget of {LIMIT} across both replicas");
    let refused = refused.unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited");
    for (i, replica) in cluster.replicas.iter().enumerate() {
        let answer = replica
            .gateway
            .post(
                "/auth/signup",
                &json!({"email": "x@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(answer.status(), 429, "gateway {i}: the budget is spent");
    }
}

/// The control of the test above: the same requests, buckets in memory, get twice the budget
/// (README "Brute force": without Redis N replicas allow N times the rate).
async fn without_redis_each_replica_has_its_own_per_address_budget(backend: Backend) {
    let cluster = Cluster::start(ClusterOptions {
        backend,
        configure: low_limit,
        shared_buckets: false,
        ..ClusterOptions::default()
    })
    .await;
    let (passed, _) = logins_until_limited(&cluster, 3 * LIMIT).await;
    assert_eq!(passed, 2 * LIMIT, "a budget of {LIMIT} on each replica");
}
