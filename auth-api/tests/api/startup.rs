//! Starting and operating the service: the refusal to start on a ring that cannot sign
//! (SECURITY.md H 77), readiness and the exported metrics (H 79), and which listener serves the
//! internal routes (I 86).

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{send, test_config, Backend, TestApp, TestDb, TestResponse, INTERNAL_TOKEN};

/// Revokes every key of the app's ring in the database, without a replacement.
async fn revoke_every_key(app: &TestApp) {
    let now = app.clock.now();
    for key in app.state.store.keys().await.unwrap() {
        app.state.store.revoke_key(&key.kid, now).await.unwrap();
    }
}

/// SECURITY.md H 77: `App::build` (what `auth-api serve` runs) refuses a ring in which no key
/// can sign, naming the way out; an empty ring gets a first key instead.
async fn a_ring_that_cannot_sign_refuses_to_start(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
    let first = TestApp::on_database(db, url.clone(), |_| {}).await;
    assert!(
        first.state.ring.signer(first.clock.now()).is_some(),
        "an empty ring got a first key"
    );
    revoke_every_key(&first).await;
    let refused = auth_api::App::build(test_config(url))
        .await
        .expect_err("started on a ring that cannot sign");
    let message = format!("{refused:#}");
    assert!(message.contains("no signing key is active"), "{message}");
    assert!(message.contains("auth-api keys rotate"), "{message}");
}

/// SECURITY.md H 79: `/readyz` is 503 `not_ready` once no key of the ring signs (while
/// `/healthz` stays 200), and 200 again when one does.
async fn readyz_is_503_when_no_key_signs(app: TestApp) {
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    revoke_every_key(&app).await;
    app.state.ring.reload().await.unwrap();
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.error(), "not_ready");
    assert!(
        ready.body["message"]
            .as_str()
            .unwrap()
            .contains("no signing key"),
        "{}",
        ready.body
    );
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    let now = app.clock.now();
    let (_, activates_at) = app.state.ring.rotate(now).await.expect("a new key");
    app.advance(Duration::from_secs((activates_at - now + 1).unsigned_abs()));
    app.state.ring.reload().await.unwrap();
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
}

fn metrics_text(response: &TestResponse) -> String {
    assert_eq!(response.status, StatusCode::OK);
    response.body.as_str().unwrap().to_owned()
}

/// SECURITY.md H 79: a detected refresh-token reuse is counted in
/// `auth_refresh_total{result="reuse_detected"}`, next to the successes.
async fn metrics_count_refresh_token_reuse(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    assert_eq!(app.refresh(&tokens.refresh).await.status, StatusCode::OK);
    // Past the grace period the old token is a reuse: the session is revoked.
    app.advance(app.state.config.refresh_reuse_grace + Duration::from_secs(1));
    assert_eq!(
        app.refresh(&tokens.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );
    let text = metrics_text(&app.get("/metrics", None).await);
    assert!(
        text.contains(r#"auth_refresh_total{result="reuse_detected"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"auth_refresh_total{result="success"} 1"#),
        "{text}"
    );
}

/// SECURITY.md H 79: `auth_hash_queue_waiting` shows the logins waiting for a bcrypt slot, and
/// goes back to 0.
async fn metrics_show_the_hash_queue(backend: Backend) {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(backend, |c| {
            c.bcrypt_cost = 12;
            c.hash_concurrency = 1;
            c.hash_queue = 4;
        })
        .await,
    );
    let text = metrics_text(&app.get("/metrics", None).await);
    assert!(text.contains("auth_hash_queue_waiting 0"), "{text}");
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..3 {
        let app = std::sync::Arc::clone(&app);
        logins.spawn(async move {
            app.login(
                &format!("queued-{i}@example.com"),
                "wrong password entirely",
            )
            .await
            .status
        });
    }
    let hasher = app.state.hasher.clone();
    let mut seen = false;
    for _ in 0..5000 {
        if hasher.waiting() == 2 {
            let text = metrics_text(&app.get("/metrics", None).await);
            // The gauge is read at scrape time: the queue may move between the two reads.
            if text.contains("auth_hash_queue_waiting 2") {
                seen = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(seen, "the gauge never showed the two waiting logins");
    while let Some(status) = logins.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let text = metrics_text(&app.get("/metrics", None).await);
    assert!(text.contains("auth_hash_queue_waiting 0"), "{text}");
}

/// SECURITY.md I 86: the public router does not serve `/internal/*`, even with the internal
/// token: 404 `not_found`, as for any unknown route; the internal router does.
async fn internal_routes_are_404_on_the_public_listener(app: TestApp) {
    let bearer = format!("Bearer {INTERNAL_TOKEN}");
    for path in ["/internal/keys", "/internal/revocations"] {
        for authorization in [None, Some(bearer.as_str())] {
            let response = app.get(path, authorization).await;
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.error(), "not_found", "{path}");
        }
        assert_eq!(
            app.get_internal(path, Some(&bearer)).await.status,
            StatusCode::OK,
            "{path} on the internal listener"
        );
    }
    // Nor does the internal router serve the public API.
    let public_route = send(
        &app.internal,
        axum::http::Request::post("/login")
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .body(axum::body::Body::from(
                json!({"email": "a@example.com", "password": "x"}).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(public_route.status, StatusCode::NOT_FOUND);
}

/// The running service's hourly cleanup (its first round runs at start) deletes the sign-in
/// flows of social logins that expired unfinished, and only those (issue 14).
async fn the_running_service_purges_expired_sign_in_flows(backend: Backend) {
    // Arrange: one flow that expired unfinished, one still live, at the real clock's time,
    // which `App::build` runs on.
    let app = TestApp::spawn(backend).await;
    let now = auth_api::clock::Clock::default().now();
    let flow = |state_hash: [u8; 32], created_at: i64| auth_api::store::SignInFlow {
        state_hash: state_hash.to_vec(),
        provider: "local".to_owned(),
        nonce: "n-0S6_WzA2Mj".to_owned(),
        pkce_verifier: auth_api::kek::Sealed {
            kek_id: "test-kek".to_owned(),
            nonce: vec![7; 24],
            ciphertext: vec![9; 43 + 16],
        },
        browser_binding_hash: vec![state_hash[0]; 32],
        redirect_to: "https://app.example/signed-in".to_owned(),
        client_code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        created_at,
        expires_at: created_at + 600,
    };
    let (expired, live) = ([1; 32], [2; 32]);
    for row in [flow(expired, now - 3600), flow(live, now)] {
        app.state.store.insert_sign_in_flow(&row).await.unwrap();
    }
    // And second-factor challenges of logins never finished: one expired, one live, of two
    // users (a user's new challenge deletes their own expired ones).
    let challenge = |user: &crate::helpers::TestUser,
                     user_id: String,
                     token_hash: [u8; 32],
                     created_at: i64| {
        auth_api::store::MfaChallenge {
            token_hash: token_hash.to_vec(),
            user_id,
            password_digest: vec![3; 32],
            tokens_valid_after: 0,
            lock_key: user.email.clone(),
            created_at,
            expires_at: created_at + 300,
        }
    };
    for (token_hash, created_at) in [(expired, now - 3600), (live, now)] {
        let (user, _) = app.logged_in_user().await;
        let user_id = app.user(&user.email).await.id;
        app.state
            .store
            .insert_mfa_challenge(&challenge(&user, user_id, token_hash, created_at))
            .await
            .unwrap();
    }
    let raw = app.raw().await;

    // Act
    let service = auth_api::App::build(test_config(app.database_url.clone()))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left = raw.bytes("sign_in_flows", "state_hash").await;
        let challenges = raw.bytes("mfa_challenges", "token_hash").await;
        if (left.len() < 2 && challenges.len() < 2) || tokio::time::Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // Assert
    assert_eq!(left, vec![live.to_vec()], "only the live flow is kept");
    assert_eq!(
        raw.bytes("mfa_challenges", "token_hash").await,
        vec![live.to_vec()],
        "only the live challenge is kept"
    );
    raw.close().await;
}

crate::on_every_store!(
    readyz_is_503_when_no_key_signs,
    metrics_count_refresh_token_reuse,
    internal_routes_are_404_on_the_public_listener,
);

mod backends {
    use super::*;
    crate::on_every_backend!(
        a_ring_that_cannot_sign_refuses_to_start,
        metrics_show_the_hash_queue,
        the_running_service_purges_expired_sign_in_flows,
    );
}
