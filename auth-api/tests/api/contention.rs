//! A row held by another transaction for longer than the store waits for a lock. auth-api's
//! MySQL connections wait at most 10 s (`innodb_lock_wait_timeout`, set per connection, where
//! the server's default is 50 s, past the request timeout), then give up: the request answers
//! `503 unavailable` with `Retry-After`, never a 500, nothing of it is left half done, and once
//! the row is free the same request succeeds.

use std::time::{Duration, Instant};

use axum::http::StatusCode;

use crate::helpers::{Backend, TestApp, TestUser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_timeout_on_mysql_is_503_and_the_retry_succeeds() {
    let app = TestApp::spawn(Backend::Mysql).await;
    let user = TestUser::random();
    user.register(&app).await;
    let raw = app.raw().await;
    // An operator's (or a stuck job's) transaction holding the user's row, which a login
    // locks to create its session.
    let mut holder = raw.pool.begin().await.unwrap();
    let user_id: String = sqlx::query_scalar("SELECT id FROM users WHERE email = ? FOR UPDATE")
        .bind(&user.email)
        .fetch_one(&mut *holder)
        .await
        .unwrap();

    let started = Instant::now();
    let refused = app.login(&user.email, &user.password).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.error(), "unavailable", "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "gave up after {:?}, before the lock wait timeout",
        started.elapsed()
    );
    let sessions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = ?")
        .bind(&user_id)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    assert_eq!(sessions, 0, "the refused login left no session behind");

    holder.rollback().await.unwrap();
    let retried = app.login(&user.email, &user.password).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    raw.close().await;
}
