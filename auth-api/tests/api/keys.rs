//! Key material: the public JWKS, `/internal/keys`, rotation (SECURITY.md C 27-28, H 75, 77).

use std::time::Duration;

use axum::http::StatusCode;

use crate::helpers::{header_of, Backend, TestApp, TestDb, Tokens, INTERNAL_TOKEN};

fn internal_auth() -> String {
    format!("Bearer {INTERNAL_TOKEN}")
}

async fn public_jwks_lists_the_signers_public_key_only(app: TestApp) {
    let response = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(response.header("cache-control"), Some("public, max-age=60"));
    let keys = response.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{}", response.body);
    let key = &keys[0];
    assert_eq!(key["kid"], app.signer_kid().as_str());
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    let mut members: Vec<_> = key.as_object().unwrap().keys().cloned().collect();
    members.sort();
    assert_eq!(
        members,
        ["alg", "crv", "kid", "kty", "use", "x", "y"],
        "public members only"
    );
}

async fn internal_keys_need_the_internal_token(app: TestApp) {
    let cases = [
        (None, "no token"),
        (
            Some("Bearer wrong-token-of-sufficient-length-000"),
            "wrong token",
        ),
        (Some("Basic dXNlcjpwYXNz"), "another scheme"),
    ];
    for (authorization, reason) in cases {
        let response = app.get_internal("/internal/keys", authorization).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert!(response.body["error"].is_string(), "{reason}");
    }
}

/// Rotating the internal token without a gap: the old one is accepted beside the new one while
/// `AUTH_INTERNAL_TOKEN_PREVIOUS` names it, and not after.
#[tokio::test]
async fn the_previous_internal_token_works_until_it_is_dropped() {
    const OLD: &str = "the-old-internal-token-0123456789abcdef";
    let rotating = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.internal_token_previous = Some(OLD.to_owned().into());
    })
    .await;
    for token in [INTERNAL_TOKEN, OLD] {
        let response = rotating
            .get_internal("/internal/keys", Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(response.status, StatusCode::OK, "{token}");
    }
    let wrong = rotating
        .get_internal("/internal/keys", Some(&format!("Bearer {OLD}x")))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let rotated = TestApp::spawn(Backend::Sqlite).await;
    let old = rotated
        .get_internal("/internal/keys", Some(&format!("Bearer {OLD}")))
        .await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
}

async fn internal_keys_list_an_es256_signer_as_its_public_jwk(app: TestApp) {
    let response = app.internal_keys().await;
    assert_eq!(response.status, StatusCode::OK);
    let public = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(
        response.body, public.body,
        "without HMAC keys, the gateway's feed is the public JWKS"
    );
    assert!(response.body["keys"][0].get("d").is_none());
}

async fn rotation_publishes_first_then_signs_and_logs_nobody_out(app: TestApp) {
    let (user, before) = app.logged_in_user().await;
    let old_kid = app.signer_kid();
    let (new_kid, activates_at) = app.state.ring.rotate(app.clock.now()).await.unwrap();
    assert_eq!(
        activates_at,
        app.clock.now() + 300,
        "signs only after the publish delay"
    );

    // Published at once, not yet signing.
    let keys = app
        .get_internal("/internal/keys", Some(&internal_auth()))
        .await;
    let kids: Vec<_> = keys.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    assert_eq!(
        header_of(&user.login(&app).await.access)["kid"],
        old_kid.as_str()
    );

    // After the delay: new tokens carry the new kid; old ones still validate and refresh.
    app.advance(Duration::from_secs(300));
    let after = user.login(&app).await;
    assert_eq!(header_of(&after.access)["kid"], new_kid.as_str());
    assert_eq!(
        app.validate(&before.access).await.status,
        StatusCode::OK,
        "retired key verifies"
    );
    let refreshed = Tokens::from_response(&app.refresh(&before.refresh).await);
    assert_eq!(
        header_of(&refreshed.access)["kid"],
        new_kid.as_str(),
        "refresh signs with the current key"
    );

    // Once every token of the old key has expired, the old key leaves the set.
    app.advance(Duration::from_secs(900 + 60));
    let keys = app
        .get_internal("/internal/keys", Some(&internal_auth()))
        .await;
    let kids: Vec<_> = keys.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kids, [new_kid]);
}

/// SECURITY.md H30/32: the ring is in the database, so a restarted (or second) replica signs
/// with the same key and accepts the first one's tokens.
async fn kid_is_stable_across_restarts_and_replicas(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
    let first = TestApp::on_database(db, url.clone(), |_| {}).await;
    let (_, tokens) = first.logged_in_user().await;
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let second = TestApp::on_database(placeholder, url, |_| {}).await;
    assert_eq!(first.signer_kid(), second.signer_kid());
    assert_eq!(second.validate(&tokens.access).await.status, StatusCode::OK);
}

mod restarts {
    use super::*;

    crate::on_every_backend!(kid_is_stable_across_restarts_and_replicas);
}

/// Issue 11: replicas starting together on an empty database (a first rollout, a scale-up from
/// nothing) all start: the migrations run once, serialised by the store's lock, and the first
/// key is created once; every replica signs with it. On the server stores (SQLite is one
/// process's file).
async fn replicas_starting_together_on_an_empty_database_share_one_first_key(backend: Backend) {
    let (_db, url) = TestDb::create(backend).await;
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let config = crate::helpers::test_config(url.clone());
            tokio::spawn(auth_api::AppState::new(
                config,
                auth_api::clock::Clock::frozen(),
            ))
        })
        .collect();
    let mut replicas = Vec::new();
    for (i, start) in starts.into_iter().enumerate() {
        let state = start.await.unwrap();
        replicas.push(state.unwrap_or_else(|e| panic!("replica {i} did not start: {e:#}")));
    }
    let kids: Vec<_> = replicas
        .iter()
        .map(|r| r.ring.signer(r.clock.now()).expect("no signer").stored.kid)
        .collect();
    assert!(kids.iter().all(|k| *k == kids[0]), "{kids:?}");
    for replica in &replicas {
        replica.ring.reload().await.unwrap();
        assert_eq!(replica.ring.snapshot().keys().len(), 1, "one first key");
    }
}

mod replicas_together {
    use super::*;

    crate::on_server_backends!(replicas_starting_together_on_an_empty_database_share_one_first_key);
}

async fn revoked_key_is_refused_at_once_and_sessions_survive(app: TestApp) {
    let (_, tokens) = app.logged_in_user().await;
    let old_kid = app.signer_kid();
    let replacement = app
        .state
        .ring
        .revoke(&old_kid, app.clock.now())
        .await
        .unwrap()
        .replacement();
    let new_kid = replacement.expect("the signer was revoked, so a new key signs at once");
    assert_eq!(app.signer_kid(), new_kid);

    let refused = app.validate(&tokens.access).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let keys = app
        .get_internal("/internal/keys", Some(&internal_auth()))
        .await;
    let kids: Vec<_> = keys.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kids,
        std::slice::from_ref(&new_kid),
        "the revoked key is no longer published"
    );

    let refreshed = Tokens::from_response(&app.refresh(&tokens.refresh).await);
    assert_eq!(
        header_of(&refreshed.access)["kid"],
        new_kid.as_str(),
        "the session lives on under the new key"
    );
    assert_eq!(app.validate(&refreshed.access).await.status, StatusCode::OK);
}

async fn revoking_an_unknown_key_says_so(app: TestApp) {
    assert_eq!(
        app.state
            .ring
            .revoke("no-such-kid", app.clock.now())
            .await
            .unwrap(),
        auth_api::keyring::Revocation::Unknown
    );
}

async fn scheduled_rotation_happens_once_per_period(app: TestApp) {
    let period = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(
        app.state
            .ring
            .rotate_if_due(app.clock.now(), period)
            .await
            .unwrap(),
        None,
        "the first key is new"
    );
    app.advance(period);
    let ring = &app.state.ring;
    let (a, b) = tokio::join!(
        ring.rotate_if_due(app.clock.now(), period),
        ring.rotate_if_due(app.clock.now(), period)
    );
    let rotated = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
    assert_eq!(rotated, 1, "two replicas at the same moment rotate once");
    assert_eq!(
        ring.rotate_if_due(app.clock.now(), period).await.unwrap(),
        None
    );
    assert_eq!(ring.snapshot().keys().len(), 2);
}

/// SECURITY.md B 9: tokens naming made-up kids make the ring reload at most once a second, so
/// a flood of them costs one query a second, while each is still refused.
async fn unknown_kids_reload_the_ring_at_most_once_a_second(app: TestApp) {
    let forged = app.sign_raw(
        r#"{"alg":"HS256","typ":"at+jwt","kid":"made-up"}"#,
        r#"{"sub":"x"}"#,
    );
    assert_eq!(app.validate(&forged).await.status, StatusCode::UNAUTHORIZED);
    let started = std::time::Instant::now();
    let mut reloads = Vec::new();
    while started.elapsed() < Duration::from_millis(2_500) {
        // The ring's gate reads the time before it reloads: so does this.
        let asked_at = started.elapsed();
        if app.state.ring.reload_for_unknown_kid().await.unwrap() {
            reloads.push(asked_at);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        (1..=3).contains(&reloads.len()),
        "at most one reload a second over 2.5 s: {reloads:?}"
    );
    for pair in reloads.windows(2) {
        assert!(
            // A few milliseconds of slack: this loop's clock and the ring's are read apart.
            pair[1] - pair[0] >= Duration::from_millis(990),
            "two reloads less than a second apart: {reloads:?}"
        );
    }
}

crate::on_every_store!(
    unknown_kids_reload_the_ring_at_most_once_a_second,
    public_jwks_lists_the_signers_public_key_only,
    internal_keys_need_the_internal_token,
    internal_keys_list_an_es256_signer_as_its_public_jwk,
    rotation_publishes_first_then_signs_and_logs_nobody_out,
    revoked_key_is_refused_at_once_and_sessions_survive,
    revoking_an_unknown_key_says_so,
    scheduled_rotation_happens_once_per_period,
);
