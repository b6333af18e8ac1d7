//! `GET /validate` under concurrency, where the store reads of requests waiting together are
//! one query (`auth_api::store::StatusBatch`): each request still gets its own session's
//! answer, a revocation committed before a request is seen by it (SECURITY.md B), and a store
//! that fails answers 503 rather than leaving requests waiting.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
    Router,
};
use tokio::task::JoinSet;

use crate::helpers::{claims_of, header_of, send, TestApp, TestResponse, TestUser, Tokens};

/// `GET /validate` through `router`, from a task of its own.
async fn validate_on(router: Router, token: String) -> TestResponse {
    let request = Request::get("/validate")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    send(&router, request).await
}

/// Validates every token of `tokens` at once, each from a task of its own; the answers in the
/// same order, each within 10 s.
async fn validate_all(app: &TestApp, tokens: &[String]) -> Vec<TestResponse> {
    let mut reads = JoinSet::new();
    for (index, token) in tokens.iter().enumerate() {
        let (router, token) = (app.router.clone(), token.clone());
        reads.spawn(async move { (index, validate_on(router, token).await) });
    }
    let mut answers: Vec<Option<TestResponse>> = (0..tokens.len()).map(|_| None).collect();
    while let Some(read) = tokio::time::timeout(Duration::from_secs(10), reads.join_next())
        .await
        .expect("a validation hangs")
    {
        let (index, response) = read.unwrap();
        answers[index] = Some(response);
    }
    answers.into_iter().map(Option::unwrap).collect()
}

fn message(response: &TestResponse) -> String {
    response.body["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `sessions` logins of each of `users` fresh users.
async fn logins(app: &TestApp, users: usize, sessions: usize) -> Vec<Tokens> {
    let mut tokens = Vec::new();
    for _ in 0..users {
        let user = TestUser::random();
        user.register(app).await;
        for _ in 0..sessions {
            tokens.push(user.login(app).await);
        }
    }
    tokens
}

async fn concurrent_validations_of_different_sessions_each_get_their_own_answer(app: TestApp) {
    // Arrange: sessions under two keys, the first revoked in the database only (as another
    // replica does, so only the store read refuses its tokens); under the second, some
    // sessions revoked, some unknown, the rest live.
    let old_kid = app.signer_kid();
    let under_old_key = logins(&app, 2, 4).await;
    let (new_kid, _) = app.state.ring.rotate(app.clock.now()).await.unwrap();
    app.advance(Duration::from_secs(300));
    let under_new_key = logins(&app, 4, 4).await;
    assert_eq!(header_of(&under_new_key[0].access)["kid"], new_kid.as_str());
    assert!(app
        .state
        .store
        .revoke_key(&old_kid, app.clock.now())
        .await
        .unwrap());
    let mut cases: Vec<(String, &str)> = Vec::new();
    for tokens in &under_old_key {
        cases.push((tokens.access.clone(), "the signing key has been revoked"));
    }
    for (index, tokens) in under_new_key.iter().enumerate() {
        if index % 3 == 0 {
            let logout = app.logout_refresh(&tokens.refresh, false).await;
            assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.body);
            cases.push((tokens.access.clone(), "the session has been revoked"));
        } else {
            cases.push((tokens.access.clone(), "ok"));
        }
        if index % 4 == 1 {
            let mut claims = claims_of(&tokens.access);
            claims["sid"] = uuid::Uuid::new_v4().to_string().into();
            let header = header_of(&tokens.access);
            let forged = app.sign_raw(&header.to_string(), &claims.to_string());
            cases.push((forged, "the session does not exist"));
        }
    }
    // Each token three times, so that batches also hold one session more than once.
    let cases: Vec<_> = cases.iter().chain(&cases).chain(&cases).collect();
    let tokens: Vec<String> = cases.iter().map(|(token, _)| token.clone()).collect();
    for round in 0..3 {
        // Act
        let answers = validate_all(&app, &tokens).await;
        // Assert
        for ((_, expected), response) in cases.iter().zip(&answers) {
            if *expected == "ok" {
                assert_eq!(
                    response.status,
                    StatusCode::OK,
                    "round {round}: {}",
                    response.body
                );
            } else {
                assert_eq!(
                    response.status,
                    StatusCode::UNAUTHORIZED,
                    "round {round}, {expected}: {}",
                    response.body
                );
                assert_eq!(message(response), *expected, "round {round}");
            }
        }
    }
}

async fn a_revocation_committed_before_a_validation_is_always_seen_under_load(app: TestApp) {
    // Arrange: validations of other sessions keep the store reads busy throughout, so that
    // each checked validation queues while batches are in flight.
    let background = logins(&app, 1, 4).await;
    let checked = logins(&app, 1, 12).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = JoinSet::new();
    for tokens in background.iter().cycle().take(16) {
        let (router, token, stop) = (app.router.clone(), tokens.access.clone(), stop.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let response = validate_on(router.clone(), token.clone()).await;
                assert_eq!(response.status, StatusCode::OK, "{}", response.body);
            }
        });
    }
    for (round, tokens) in checked.iter().enumerate() {
        assert_eq!(
            app.validate(&tokens.access).await.status,
            StatusCode::OK,
            "round {round}: before the logout"
        );
        // Act: the logout has committed when it answers.
        let logout = app.logout_refresh(&tokens.refresh, false).await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT, "{}", logout.body);
        let response = app.validate(&tokens.access).await;
        // Assert
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "round {round}: {}",
            response.body
        );
        assert_eq!(message(&response), "the session has been revoked");
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(task) = load.join_next().await {
        task.unwrap();
    }
}

async fn a_store_that_fails_under_concurrent_validations_answers_503_not_a_hang(app: TestApp) {
    // Arrange
    let sessions = logins(&app, 2, 4).await;
    let tokens: Vec<String> = sessions
        .iter()
        .cycle()
        .take(64)
        .map(|tokens| tokens.access.clone())
        .collect();
    // Act: the pool closes while a burst is being read, then a second burst comes.
    let during = {
        let (router, tokens) = (app.router.clone(), tokens.clone());
        tokio::spawn(async move {
            let mut reads = JoinSet::new();
            for token in tokens {
                reads.spawn(validate_on(router.clone(), token));
            }
            reads.join_all().await
        })
    };
    app.state.store.close().await;
    let during = tokio::time::timeout(Duration::from_secs(10), during)
        .await
        .expect("a validation hangs")
        .unwrap();
    let after = validate_all(&app, &tokens).await;
    // Assert: while closing, each is read or refused as unavailable; after, every one is 503.
    for response in &during {
        assert!(
            [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE].contains(&response.status),
            "{} {}",
            response.status,
            response.body
        );
    }
    for response in &after {
        assert_eq!(
            response.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            response.body
        );
        assert_eq!(response.error(), "unavailable");
        assert_eq!(response.header("retry-after"), Some("5"));
    }
}

crate::on_every_store!(
    concurrent_validations_of_different_sessions_each_get_their_own_answer,
    a_revocation_committed_before_a_validation_is_always_seen_under_load,
    a_store_that_fails_under_concurrent_validations_answers_503_not_a_hang,
);
