//! Load shedding under cancellation: logins whose clients go away (a disconnect, a proxy's
//! timeout) cannot raise concurrent bcrypt work above `AUTH_HASH_CONCURRENCY`, and the queue
//! gauge returns to 0.

use std::time::Duration;

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};
use serde_json::json;

use crate::helpers::{send, Backend, TestApp, TestUser};

fn login_request(email: &str, password: &str) -> Request<Body> {
    Request::post("/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"email": email, "password": password}).to_string(),
        ))
        .unwrap()
}

/// Polls `done` every 2 ms for up to 10 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..5000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn abandoned_logins_cannot_raise_concurrent_bcrypt_above_the_limit(backend: Backend) {
    // Arrange: one permit, two places in the queue, a bcrypt of a few hundred milliseconds.
    let app = TestApp::spawn_with(backend, |c| {
        c.bcrypt_cost = 12;
        c.hash_concurrency = 1;
        c.hash_queue = 2;
    })
    .await;
    let user = TestUser::random();
    user.register(&app).await;
    let hasher = app.state.hasher.clone();
    let before = hasher.started();
    // Act: six logins (each for its own email, so no lock is involved): one hashes, two wait,
    // three are shed; then every client goes away while the first bcrypt runs.
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..6 {
        let router = app.router.clone();
        logins.spawn(async move {
            let email = format!("gone-{i}@example.com");
            send(&router, login_request(&email, "wrong password entirely"))
                .await
                .status
        });
    }
    wait_until("one login hashes and two wait", || {
        hasher.started() - before == 1 && hasher.waiting() == 2
    })
    .await;
    logins.abort_all();
    while let Some(outcome) = logins.join_next().await {
        if let Ok(status) = outcome {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "shed at once");
        }
    }
    // Assert: the abandoned waiters left the queue.
    assert_eq!(hasher.waiting(), 0, "the queue gauge is back to 0");
    // A new login waits for the abandoned bcrypt instead of running beside it.
    let router = app.router.clone();
    let (email, password) = (user.email.clone(), user.password.clone());
    let next =
        tokio::spawn(async move { send(&router, login_request(&email, &password)).await.status });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        hasher.started() - before,
        1,
        "no second bcrypt starts while the abandoned one still holds the only permit"
    );
    assert_eq!(
        next.await.unwrap(),
        StatusCode::OK,
        "served once it is free"
    );
    assert_eq!(hasher.started() - before, 2);
    assert_eq!(hasher.waiting(), 0);
}

/// A login shed for want of a bcrypt slot (503) is not a wrong password: it never counts against
/// the account's lock, so a user who retries an overloaded service is not locked out by it.
async fn shed_logins_do_not_count_against_the_lock(backend: Backend) {
    // Arrange: one permit, no room to wait, a bcrypt of a few hundred milliseconds; the user's
    // lock would close after 5 failures.
    let app = TestApp::spawn_with(backend, |c| {
        c.bcrypt_cost = 12;
        c.hash_concurrency = 1;
        c.hash_queue = 0;
        c.login_free_attempts = 5;
    })
    .await;
    let user = TestUser::random();
    user.register(&app).await;
    let hasher = app.state.hasher.clone();
    let before = hasher.started();
    // Act: another login holds the only permit while the user tries ten times.
    let router = app.router.clone();
    let busy = tokio::spawn(async move {
        send(
            &router,
            login_request("busy@example.com", "some wrong password"),
        )
        .await
        .status
    });
    wait_until("the other login hashes", || hasher.started() - before == 1).await;
    for attempt in 0..10 {
        let answer = app.login(&user.email, &user.password).await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "attempt {attempt}: shed while the permit is taken"
        );
    }
    assert_eq!(busy.await.unwrap(), StatusCode::UNAUTHORIZED);
    // Assert: no failure was counted, and the right password logs in at once.
    assert_eq!(
        app.state
            .store
            .login_locked_until(&user.email.to_lowercase())
            .await
            .unwrap(),
        None,
        "no attempt row for the shed logins"
    );
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK
    );
}

crate::on_every_backend!(
    abandoned_logins_cannot_raise_concurrent_bcrypt_above_the_limit,
    shed_logins_do_not_count_against_the_lock,
);
