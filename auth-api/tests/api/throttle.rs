//! Brute-force defences (SECURITY.md E 48-51): the per-email login throttle and the per-address
//! limit of the credential endpoints.

use std::{net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Request, StatusCode},
};
use serde_json::json;

use auth_api::store::LoginReservation;

use crate::helpers::{Backend, TestApp, TestResponse, TestUser};

async fn five_failures_lock_the_email_and_a_right_password_waits_too(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    for attempt in 1..=5 {
        let response = app.login(&user.email, "wrong password entirely").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt} is free"
        );
    }
    let locked = app.login(&user.email, &user.password).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password"
    );
    assert_eq!(locked.error(), "rate_limited");
    assert_eq!(locked.header("retry-after"), Some("1"));

    app.advance(Duration::from_secs(2));
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK,
        "the lock passes"
    );
    for attempt in 1..=5 {
        let response = app.login(&user.email, "wrong password entirely").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "success reset the count: {attempt}"
        );
    }
}

async fn delays_double_with_each_failure(app: TestApp) {
    let email = TestUser::random().email;
    for _ in 0..5 {
        app.login(&email, "wrong password entirely").await;
    }
    let mut waits = Vec::new();
    for _ in 0..4 {
        let locked = app.login(&email, "wrong password entirely").await;
        let wait: u64 = locked.header("retry-after").unwrap().parse().unwrap();
        waits.push(wait);
        app.advance(Duration::from_secs(wait));
        assert_eq!(
            app.login(&email, "wrong password entirely").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(waits, [1, 2, 4, 8]);
}

async fn unknown_email_is_throttled_exactly_like_a_known_one(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let unknown = TestUser::random().email;
    let run = |email: String| {
        let app = &app;
        async move {
            let mut answers = Vec::new();
            for _ in 0..7 {
                let r = app.login(&email, "wrong password entirely").await;
                answers.push((
                    r.status,
                    r.body.clone(),
                    r.header("retry-after").map(str::to_owned),
                ));
            }
            answers
        }
    };
    assert_eq!(run(user.email.clone()).await, run(unknown).await);
}

/// `n` logins for `email` with `password`, all sent at once, each on its own task; their
/// statuses.
async fn concurrent_logins(
    app: &TestApp,
    email: &str,
    password: &str,
    n: usize,
) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let router = app.router.clone();
        let body = json!({"email": email, "password": password}).to_string();
        tasks.spawn(async move {
            let request = Request::post("/login")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            crate::helpers::send(&router, request).await.status
        });
    }
    tasks.join_all().await
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

/// SECURITY.md 48: the lock is checked and the attempt counted in one write, so concurrent
/// guesses cannot all pass the check before the first failure is counted.
async fn concurrent_guesses_get_no_more_password_checks_than_the_lock_allows(app: TestApp) {
    let user = TestUser::random();
    user.register(&app).await;
    let start = app.clock.now();

    let before = app.state.hasher.started();
    let burst = concurrent_logins(&app, &user.email, "wrong password entirely", 20).await;
    assert_eq!(
        app.state.hasher.started() - before,
        5,
        "the five free attempts only: {burst:?}"
    );
    assert_eq!(count(&burst, StatusCode::UNAUTHORIZED), 5, "{burst:?}");
    assert_eq!(
        count(&burst, StatusCode::TOO_MANY_REQUESTS),
        15,
        "{burst:?}"
    );
    let locked_until = app
        .state
        .store
        .login_locked_until(&user.email)
        .await
        .unwrap();
    assert_eq!(locked_until, Some(start + 1), "the fifth failure's lock");

    app.advance(Duration::from_secs(1));
    let before = app.state.hasher.started();
    let burst = concurrent_logins(&app, &user.email, "wrong password entirely", 10).await;
    assert_eq!(
        app.state.hasher.started() - before,
        1,
        "one per lock: {burst:?}"
    );
    let locked_until = app
        .state
        .store
        .login_locked_until(&user.email)
        .await
        .unwrap();
    assert_eq!(
        locked_until,
        Some(start + 1 + 2),
        "the sixth failure's lock, doubled"
    );
}

/// A lock is never shortened: a straggler computing a shorter lock leaves the longer one.
async fn a_lock_never_shortens(app: TestApp) {
    let store = &app.state.store;
    let email = TestUser::random().email;
    let now = app.clock.now();
    let reserved = store
        .reserve_login_attempt(&email, now, |_| Some(900))
        .await
        .unwrap();
    assert_eq!(
        reserved,
        LoginReservation::Granted {
            failures: 1,
            locked_until: Some(now + 900)
        }
    );
    store.lock_login(&email, now + 5).await.unwrap();
    assert_eq!(
        store.login_locked_until(&email).await.unwrap(),
        Some(now + 900),
        "the straggler's shorter lock is ignored"
    );
    assert_eq!(
        store
            .reserve_login_attempt(&email, now + 899, |_| Some(1))
            .await
            .unwrap(),
        LoginReservation::Locked { until: now + 900 },
        "refused and not counted while locked"
    );
    let after = store
        .reserve_login_attempt(&email, now + 900, |_| None)
        .await
        .unwrap();
    assert_eq!(
        after,
        LoginReservation::Granted {
            failures: 2,
            locked_until: None
        },
        "the refused attempt was not counted"
    );
}

/// The hourly prune forgets only streaks that never earned a delay: waiting a day after a
/// series of delayed guesses does not buy a fresh series.
async fn the_prune_never_forgets_a_streak_that_earned_a_delay(app: TestApp) {
    let store = &app.state.store;
    let free = app.state.login_throttle.free_attempts;
    let (quiet, guessed) = (TestUser::random().email, TestUser::random().email);
    let now = app.clock.now();
    for _ in 0..free - 1 {
        store
            .reserve_login_attempt(&quiet, now, |_| None)
            .await
            .unwrap();
    }
    for _ in 0..free + 10 {
        app.login(&guessed, "wrong password entirely").await;
        app.advance(Duration::from_secs(900));
    }
    let later = app.clock.now() + 30 * 24 * 3600;
    let pruned = store
        .prune_login_attempts(later - 24 * 3600, later, free)
        .await
        .unwrap();
    assert_eq!(pruned, 1, "the streak below the free attempts");
    assert_eq!(store.login_locked_until(&quiet).await.unwrap(), None);
    assert!(store.login_locked_until(&guessed).await.unwrap().is_some());
    let next = store
        .reserve_login_attempt(&guessed, later, |_| None)
        .await
        .unwrap();
    assert_eq!(
        next,
        LoginReservation::Granted {
            failures: free + 11,
            locked_until: None
        },
        "the streak goes on"
    );
}

crate::on_every_store!(
    the_prune_never_forgets_a_streak_that_earned_a_delay,
    five_failures_lock_the_email_and_a_right_password_waits_too,
    delays_double_with_each_failure,
    unknown_email_is_throttled_exactly_like_a_known_one,
    concurrent_guesses_get_no_more_password_checks_than_the_lock_allows,
    a_lock_never_shortens,
);

mod hard_limit {
    use super::*;

    /// SECURITY.md 48: the hard limit holds under concurrency: of 130 guesses sent at once past
    /// any delay, at most 100 have their password checked, and the email ends locked for good.
    async fn concurrent_guesses_cannot_pass_the_hard_limit(backend: Backend) {
        let app = TestApp::spawn_with(backend, |c| {
            c.login_free_attempts = 1000;
            c.hash_queue = 1000;
        })
        .await;
        let email = TestUser::random().email;
        let before = app.state.hasher.started();
        let burst = concurrent_logins(&app, &email, "wrong password entirely", 130).await;
        let checked = app.state.hasher.started() - before;
        assert!(checked <= 100, "{checked} checks");
        assert_eq!(
            count(&burst, StatusCode::TOO_MANY_REQUESTS),
            30,
            "{burst:?}"
        );
        assert_eq!(
            app.state.store.login_locked_until(&email).await.unwrap(),
            Some(i64::MAX)
        );
    }

    crate::on_every_backend!(
        concurrent_guesses_cannot_pass_the_hard_limit,
        a_hundred_failures_lock_until_an_operator_unlocks,
    );
}

/// NIST SP 800-63B §5.2.2: at most 100 consecutive failures; then an operator unlocks.
async fn a_hundred_failures_lock_until_an_operator_unlocks(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.login_free_attempts = 1000).await;
    let user = TestUser::random();
    user.register(&app).await;
    for attempt in 1..=100 {
        let response = app.login(&user.email, "wrong password entirely").await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    app.advance(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert!(app
        .state
        .store
        .clear_login_failures(&user.email)
        .await
        .unwrap());
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK
    );
}

/// A request as the gateway sends it: from 127.0.0.1, with the client's address in
/// `x-envoy-external-address`, and whatever `X-Forwarded-For` the client made up.
fn through_gateway(path: &str, client: &str, forged_xff: &str) -> Request<Body> {
    let mut request = Request::post(path)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-envoy-external-address", client)
        .header("x-forwarded-for", forged_xff)
        .body(Body::from(
            json!({"email": "nobody@example.com", "password": "whatever123"}).to_string(),
        ))
        .unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000))));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_address_has_its_own_bucket_and_forwarded_for_is_ignored() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ip_limit_per_minute = 3).await;
    for (i, path) in ["/signup", "/login", "/refresh"].iter().enumerate() {
        let response = app
            .request(through_gateway(path, "203.0.113.5", &format!("10.0.0.{i}")))
            .await;
        assert_ne!(response.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
    }
    let limited: TestResponse = app
        .request(through_gateway("/login", "203.0.113.5", "10.9.9.9"))
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a new X-Forwarded-For does not help"
    );
    assert_eq!(limited.error(), "rate_limited");
    assert!(
        limited
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let other = app
        .request(through_gateway("/login", "203.0.113.6", "10.9.9.9"))
        .await;
    assert_ne!(
        other.status,
        StatusCode::TOO_MANY_REQUESTS,
        "another client is not affected"
    );
    let validate = app.get("/validate", None).await;
    assert_eq!(
        validate.status,
        StatusCode::UNAUTHORIZED,
        "only the credential endpoints are limited"
    );
    let metrics = app.get("/metrics", None).await;
    let metrics = metrics.body.as_str().unwrap();
    assert!(
        metrics.contains(r#"auth_login_total{result="rate_limited"} 1"#),
        "the refused login is counted:\n{metrics}"
    );
}

/// Load shedding: a flood of logins fills the bounded bcrypt queue and the excess is refused
/// at once with 503 and `Retry-After`, while refreshes (no bcrypt) keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_shed_and_refreshes_keep_working() {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(Backend::Sqlite, |c| {
            c.bcrypt_cost = 10;
            c.hash_concurrency = 1;
            c.hash_queue = 2;
        })
        .await,
    );
    let (_, tokens) = app.logged_in_user().await;
    let mut flood = Vec::new();
    for i in 0..24 {
        let app = std::sync::Arc::clone(&app);
        flood.push(tokio::spawn(async move {
            app.login(&format!("flood-{i}@example.com"), "wrong password entirely")
                .await
        }));
    }
    let mut refresh_token = tokens.refresh;
    for _ in 0..5 {
        let response = app.refresh(&refresh_token).await;
        assert_eq!(response.status, StatusCode::OK, "refresh during the flood");
        refresh_token = response.str("refresh_token");
    }
    let (mut shed, mut checked) = (0, 0);
    for login in flood {
        let response = login.await.unwrap();
        match response.status {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(response.error(), "overloaded");
                assert_eq!(response.header("retry-after"), Some("1"));
                shed += 1;
            }
            StatusCode::UNAUTHORIZED => checked += 1,
            other => panic!("{other}: {}", response.body),
        }
    }
    assert!(shed > 0, "the queue bound shed some logins");
    assert!(checked >= 3, "one running and two queued were served");
}

/// With `AUTH_REDIS_URL`, two replicas share one bucket per address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_address_buckets_in_redis() {
    let url = std::env::var("AUTH_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("auth-test:{}:", uuid::Uuid::new_v4().simple());
    let configure = |c: &mut auth_api::Config| {
        c.ip_limit_per_minute = 3;
        c.redis_url = Some(url.clone().into());
        c.redis_prefix = prefix.clone();
    };
    let (db, db_url) = crate::helpers::TestDb::create(Backend::Sqlite).await;
    let first = TestApp::on_database(db, db_url.clone(), |c| configure(c)).await;
    let (placeholder, _) = crate::helpers::TestDb::create(Backend::Sqlite).await;
    let second = TestApp::on_database(placeholder, db_url, |c| configure(c)).await;

    for (replica, name) in [(&first, "first"), (&second, "second"), (&first, "first")] {
        let response = replica
            .request(through_gateway("/login", "203.0.113.9", "10.0.0.1"))
            .await;
        assert_ne!(
            response.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{name} replica, within the bucket"
        );
    }
    let limited = second
        .request(through_gateway("/login", "203.0.113.9", "10.0.0.2"))
        .await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the other replica saw the same bucket"
    );
    assert!(limited.header("retry-after").is_some());
    let elsewhere = first
        .request(through_gateway("/login", "203.0.113.10", "10.0.0.2"))
        .await;
    assert_ne!(elsewhere.status, StatusCode::TOO_MANY_REQUESTS);
}

/// SECURITY.md E 49: `/logout` and `/password` are inside the per-address bucket: once a client
/// address has used it up, each answers 429 `rate_limited` with `Retry-After`, before any
/// token or password is looked at; another address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_is_in_the_bucket_and_a_valid_logout_never_waits_for_it() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ip_limit_per_minute = 2).await;
    let client = "203.0.113.21";
    let user = TestUser::random();
    user.register(&app).await;
    let tokens = user.login(&app).await;
    // A neighbour behind the same address spends the bucket on guesses.
    for _ in 0..2 {
        let response = app
            .request(through_gateway("/login", client, "10.0.0.1"))
            .await;
        assert_ne!(
            response.status,
            StatusCode::TOO_MANY_REQUESTS,
            "within the bucket"
        );
    }
    let password = app
        .request(through_gateway("/password", client, "10.0.0.2"))
        .await;
    assert_eq!(
        password.status,
        StatusCode::TOO_MANY_REQUESTS,
        "/password checks a password"
    );
    assert_eq!(password.error(), "rate_limited");
    let retry_after: u64 = password
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    // Ending one's own session must never wait on a neighbour's guesses (SECURITY.md E 49).
    let mut logout = through_gateway("/logout", client, "10.0.0.3");
    logout.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {}", tokens.access).parse().unwrap(),
    );
    let logout = app.request(logout).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.body);
    assert_eq!(
        app.validate(&tokens.access).await.status,
        StatusCode::UNAUTHORIZED,
        "the session is ended"
    );
}
