//! Device tokens (SECURITY.md E 48, E 50; OWASP "device cookies"): a login with a device token
//! its user was given counts against that token's own lock, so a guesser who locks the email
//! cannot lock the owner out of a device they used before, and a device login never resets the
//! email's streak, so the guesser gets no more than 100 guesses per password.

use axum::{
    body::Body,
    http::{header, Request, StatusCode},
};
use serde_json::{json, Value};

use auth_api::devices::{DeviceTokens, Holder, FORGET_AFTER_SECS, KEY_PREFIX, LIFETIME_SECS};

use crate::helpers::{Backend, TestApp, TestResponse, TestUser};

const WRONG: &str = "wrong password entirely";

async fn login_with(app: &TestApp, email: &str, password: &str, token: &str) -> TestResponse {
    app.post_json(
        "/login",
        json!({"email": email, "password": password, "device_token": token}),
    )
    .await
}

/// A registered user and the device token of their first login.
async fn user_with_device(app: &TestApp) -> (TestUser, String) {
    let user = TestUser::random();
    user.register(app).await;
    let response = app.login(&user.email, &user.password).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.body);
    (user, response.str("device_token"))
}

/// The lock of `token`'s own counter, as the store holds it.
async fn device_lock(app: &TestApp, user: &TestUser, token: &str) -> Option<i64> {
    let row = app.user(&user.email).await;
    let device = DeviceTokens::new(app.state.ring.keks())
        .recognise(token, &Holder::of(&row), app.clock.now())
        .expect("a valid device token");
    app.state
        .store
        .login_locked_until(device.throttle_key())
        .await
        .unwrap()
}

async fn change_password(
    app: &TestApp,
    access: &str,
    current: &str,
    new: &str,
    device_token: Option<&str>,
) -> TestResponse {
    let mut body = json!({"current_password": current, "new_password": new});
    if let Some(token) = device_token {
        body["device_token"] = token.into();
    }
    app.request(
        Request::post("/password")
            .header(header::AUTHORIZATION, format!("Bearer {access}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
    )
    .await
}

/// Status, body and `Retry-After` of an answer: what a client can compare.
fn seen(r: &TestResponse) -> (StatusCode, Value, Option<String>) {
    (
        r.status,
        r.body.clone(),
        r.header("retry-after").map(str::to_owned),
    )
}

async fn a_login_returns_a_device_token_and_every_login_a_new_one(app: TestApp) {
    let (user, first) = user_with_device(&app).await;
    assert_eq!(first.len(), 76, "{first}");
    let again = login_with(&app, &user.email, &user.password, &first).await;
    assert_eq!(again.status, StatusCode::OK);
    let second = again.str("device_token");
    assert_ne!(first, second);
    let refreshed = app.refresh(&again.str("refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert!(
        refreshed.body.get("device_token").is_none(),
        "a refresh proves no password: {}",
        refreshed.body
    );
}

/// Failures with a device token lock that token (5 free, then 1 s, 2 s …) and nothing else:
/// the email and the user's other devices go on.
async fn failures_with_a_device_token_lock_that_token_only(app: TestApp) {
    let (user, token) = user_with_device(&app).await;
    let other_device = app
        .login(&user.email, &user.password)
        .await
        .str("device_token");
    for attempt in 1..=5 {
        let response = login_with(&app, &user.email, WRONG, &token).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let locked = login_with(&app, &user.email, &user.password, &token).await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the device's lock"
    );
    assert_eq!(locked.error(), "rate_limited");
    assert_eq!(locked.header("retry-after"), Some("1"));
    assert_eq!(
        app.state
            .store
            .login_locked_until(&user.email)
            .await
            .unwrap(),
        None,
        "the email was never counted"
    );
    assert_eq!(
        login_with(&app, &user.email, &user.password, &other_device)
            .await
            .status,
        StatusCode::OK,
        "another device of the user"
    );
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::OK,
        "no device token: the email's counter, untouched"
    );
}

/// Guesses without a device token count against the email only: the owner's device token is
/// untouched and logs in while the email is locked; and that login does not clear the email's
/// streak, which would hand the guesser a fresh series.
async fn the_owner_logs_in_with_a_device_token_while_the_email_is_locked(app: TestApp) {
    let (user, token) = user_with_device(&app).await;
    for _ in 0..5 {
        app.login(&user.email, WRONG).await;
    }
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the email is locked"
    );
    assert_eq!(device_lock(&app, &user, &token).await, None, "untouched");
    let owner = login_with(&app, &user.email, &user.password, &token).await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
    assert_eq!(
        app.login(&user.email, &user.password).await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the email is still locked"
    );
    app.advance(std::time::Duration::from_secs(1));
    assert_eq!(
        app.login(&user.email, WRONG).await.status,
        StatusCode::UNAUTHORIZED
    );
    let next = app.login(&user.email, &user.password).await;
    assert_eq!(
        (next.status, next.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, Some("2")),
        "the sixth failure in a row: the device login did not reset the streak"
    );
}

/// A device token that is not valid for the email's user counts as none: the attempt meets the
/// email's lock, like a login without one.
async fn a_forged_tampered_expired_or_foreign_device_token_counts_as_none(app: TestApp) {
    let (user, token) = user_with_device(&app).await;
    let (_, foreign) = user_with_device(&app).await;
    let row = app.user(&user.email).await;
    let holder = Holder::of(&row);
    let now = app.clock.now();
    let expired = DeviceTokens::new(app.state.ring.keks()).issue(&holder, now - LIFETIME_SECS);
    let (other_install, _) = auth_api::kek::KeyEncryptionKeys::generate("elsewhere").unwrap();
    let other_kek = DeviceTokens::new(&other_install).issue(&holder, now);
    let mut tampered = token.clone().into_bytes();
    tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for _ in 0..5 {
        app.login(&user.email, WRONG).await;
    }
    let cases = [
        (foreign.as_str(), "another user's"),
        (expired.as_str(), "expired"),
        (other_kek.as_str(), "made under another KEK"),
        (tampered.as_str(), "tampered"),
        ("not a device token", "garbage"),
        ("", "empty"),
    ];
    for (bad, reason) in cases {
        let response = login_with(&app, &user.email, &user.password, bad).await;
        assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS, "{reason}");
        assert_eq!(response.error(), "rate_limited", "{reason}");
    }
    assert_eq!(
        login_with(&app, &user.email, &user.password, &token)
            .await
            .status,
        StatusCode::OK,
        "the real one"
    );
}

/// No enumeration: an unknown email sent with someone's device token, and a known one sent with
/// a token of another user, get exactly the answers of a login without one, throttle included,
/// and still cost one password check (the dummy hash).
async fn an_unknown_email_with_a_device_token_answers_like_a_wrong_password(app: TestApp) {
    let (_, token) = user_with_device(&app).await;
    let known = TestUser::random();
    known.register(&app).await;
    let unknown = TestUser::random().email;
    let mut plain = Vec::new();
    let mut with_token = Vec::new();
    let mut foreign = Vec::new();
    for _ in 0..7 {
        plain.push(seen(&app.login(&TestUser::random().email, WRONG).await));
        let before = app.state.hasher.started();
        let response = login_with(&app, &unknown, WRONG, &token).await;
        if response.status == StatusCode::UNAUTHORIZED {
            assert_eq!(app.state.hasher.started() - before, 1, "the dummy hash ran");
        }
        with_token.push(seen(&response));
        foreign.push(seen(&login_with(&app, &known.email, WRONG, &token).await));
    }
    // The first sequence is of fresh emails: compare the first answer with each fresh one, and
    // the sequences of the same email with each other.
    assert!(plain.iter().all(|p| *p == with_token[0]), "{plain:?}");
    assert_eq!(with_token, foreign);
    assert_eq!(with_token[0].0, StatusCode::UNAUTHORIZED);
    assert_eq!(with_token[6].0, StatusCode::TOO_MANY_REQUESTS);
}

/// The store: a device token's counter, even hard-locked, is forgotten once its token has
/// expired; an email's hard lock never is, not even for an email that looks like a device key.
async fn the_prune_forgets_a_device_counter_once_its_token_has_expired(app: TestApp) {
    let store = &app.state.store;
    let free = app.state.login_throttle.free_attempts;
    let device = format!("{KEY_PREFIX}{}", "ab".repeat(32));
    let email = TestUser::random().email;
    let odd_email = format!("{KEY_PREFIX}{email}");
    let t0 = app.clock.now();
    let keys = [device.as_str(), email.as_str(), odd_email.as_str()];
    for key in keys {
        store
            .reserve_login_attempt(key, t0, |_| Some(i64::MAX))
            .await
            .unwrap();
    }
    let kept = |now: i64| async move {
        let _ = store
            .prune_login_attempts(now - 24 * 3600, now, free)
            .await
            .unwrap();
        let mut kept = Vec::new();
        for key in keys {
            kept.push(store.login_locked_until(key).await.unwrap().is_some());
        }
        kept
    };
    assert_eq!(
        kept(t0 + FORGET_AFTER_SECS).await,
        [true, true, true],
        "the token may still be alive"
    );
    assert_eq!(
        kept(t0 + FORGET_AFTER_SECS + 1).await,
        [false, true, true],
        "only the expired token's counter goes"
    );
}

/// The F3 attack (SECURITY.md E 48): someone who once knew the password collected device
/// tokens; after `void` (a password change, a "logout everywhere", a disable) each of them
/// counts as none: guesses with them count against the email and lock it, and none is
/// recognised any more. A token issued afterwards is.
async fn collected_tokens_count_as_none_after(
    app: &TestApp,
    void: impl AsyncFnOnce(&TestUser, &str) -> String,
) {
    let (user, first) = user_with_device(app).await;
    let mut collected = vec![first];
    for _ in 0..3 {
        collected.push(
            app.login(&user.email, &user.password)
                .await
                .str("device_token"),
        );
    }
    let owner = app.login(&user.email, &user.password).await;
    let password = void(&user, &owner.str("access_token")).await;
    let fresh = app.login(&user.email, &password).await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    let fresh = fresh.str("device_token");
    let row = app.user(&user.email).await;
    let devices = DeviceTokens::new(app.state.ring.keks());
    for token in &collected {
        assert_eq!(
            devices.recognise(token, &Holder::of(&row), app.clock.now()),
            None
        );
    }
    assert!(devices
        .recognise(&fresh, &Holder::of(&row), app.clock.now())
        .is_some());
    for attempt in 0..5 {
        let token = &collected[attempt % collected.len()];
        let response = login_with(app, &user.email, WRONG, token).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{attempt}");
    }
    let locked = app.login(&user.email, &password).await;
    assert_eq!(
        (locked.status, locked.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, Some("1")),
        "the guesses with the old tokens counted against the email"
    );
    for token in &collected {
        let response = login_with(app, &user.email, &password, token).await;
        assert_eq!(
            response.status,
            StatusCode::TOO_MANY_REQUESTS,
            "counts as none"
        );
    }
    let owner = login_with(app, &user.email, &password, &fresh).await;
    assert_eq!(
        owner.status,
        StatusCode::OK,
        "the new token: {}",
        owner.body
    );
}

async fn collected_device_tokens_count_as_none_after_a_password_change(app: TestApp) {
    let new_password = "a brand new passphrase";
    collected_tokens_count_as_none_after(&app, async |user, access| {
        let changed = change_password(&app, access, &user.password, new_password, None).await;
        assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
        new_password.to_owned()
    })
    .await;
}

async fn collected_device_tokens_count_as_none_after_logout_everywhere(app: TestApp) {
    collected_tokens_count_as_none_after(&app, async |user, access| {
        let out = app.logout_bearer(access, true).await;
        assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.body);
        user.password.clone()
    })
    .await;
}

async fn collected_device_tokens_count_as_none_after_a_disable(app: TestApp) {
    collected_tokens_count_as_none_after(&app, async |user, _| {
        let id = app.user(&user.email).await.id;
        let store = &app.state.store;
        assert!(store
            .disable_user(&id, app.state.revoke_at())
            .await
            .unwrap());
        assert!(store.enable_user(&id).await.unwrap());
        user.password.clone()
    })
    .await;
}

crate::on_every_store!(
    collected_device_tokens_count_as_none_after_a_password_change,
    collected_device_tokens_count_as_none_after_logout_everywhere,
    collected_device_tokens_count_as_none_after_a_disable,
    the_prune_forgets_a_device_counter_once_its_token_has_expired,
    a_login_returns_a_device_token_and_every_login_a_new_one,
    failures_with_a_device_token_lock_that_token_only,
    the_owner_logs_in_with_a_device_token_while_the_email_is_locked,
    a_forged_tampered_expired_or_foreign_device_token_counts_as_none,
    an_unknown_email_with_a_device_token_answers_like_a_wrong_password,
);

mod hard_limit {
    use super::*;

    /// SECURITY.md E 48/E 50: a guesser drives the email to the hard lock; the owner's device
    /// logs in regardless, changes the password from there (the check counts against the
    /// device), and the change starts the email's streak over.
    async fn an_owner_locked_out_by_a_guesser_keeps_the_device_and_a_password_change_unlocks(
        backend: Backend,
    ) {
        let app = TestApp::spawn_with(backend, |c| c.login_free_attempts = 1000).await;
        let (user, token) = user_with_device(&app).await;
        for attempt in 1..=100 {
            let response = app.login(&user.email, WRONG).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{attempt}");
        }
        assert_eq!(
            app.state
                .store
                .login_locked_until(&user.email)
                .await
                .unwrap(),
            Some(i64::MAX),
            "the hard lock"
        );
        assert_eq!(device_lock(&app, &user, &token).await, None);
        let owner = login_with(&app, &user.email, &user.password, &token).await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.body);
        assert_eq!(
            app.login(&user.email, &user.password).await.status,
            StatusCode::TOO_MANY_REQUESTS,
            "the device login left the hard lock in place"
        );
        let access = owner.str("access_token");
        let device = owner.str("device_token");
        let new_password = "a brand new passphrase";
        let without_device =
            change_password(&app, &access, &user.password, new_password, None).await;
        assert_eq!(
            without_device.status,
            StatusCode::TOO_MANY_REQUESTS,
            "without the device token the check meets the email's lock"
        );
        let changed =
            change_password(&app, &access, &user.password, new_password, Some(&device)).await;
        assert_eq!(changed.status, StatusCode::NO_CONTENT, "{}", changed.body);
        assert_eq!(
            app.state
                .store
                .login_locked_until(&user.email)
                .await
                .unwrap(),
            None,
            "a password change resets the email's streak"
        );
        assert_eq!(
            app.login(&user.email, new_password).await.status,
            StatusCode::OK
        );
    }

    /// The hard limit holds per device token too: 100 failures with it lock it for good, and
    /// only it.
    async fn a_hundred_failures_with_a_device_token_lock_it_for_good(backend: Backend) {
        let app = TestApp::spawn_with(backend, |c| c.login_free_attempts = 1000).await;
        let (user, token) = user_with_device(&app).await;
        for attempt in 1..=100 {
            let response = login_with(&app, &user.email, WRONG, &token).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{attempt}");
        }
        app.advance(std::time::Duration::from_secs(30 * 24 * 3600));
        assert_eq!(
            login_with(&app, &user.email, &user.password, &token)
                .await
                .status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(device_lock(&app, &user, &token).await, Some(i64::MAX));
        assert_eq!(
            app.login(&user.email, &user.password).await.status,
            StatusCode::OK,
            "the email is not affected"
        );
    }

    /// A login that rehashes the password at a raised cost (SECURITY.md E 46) hands out a
    /// token bound to the hash it stored, which then works as a device token; the tokens
    /// issued before the rehash count as none from then on (E 48: once per account and raise).
    async fn a_login_that_rehashes_hands_out_a_token_for_the_new_hash(backend: Backend) {
        use auth_api::{
            domain::Password,
            passwords::PasswordHasher,
            store::{InsertUser, UserRow},
        };
        let app = TestApp::spawn_with(backend, |c| c.bcrypt_cost = 5).await;
        let user = TestUser::random();
        let old = PasswordHasher::new(4, app.state.config.password_pepper.clone(), 1, 1)
            .await
            .unwrap();
        let row = UserRow {
            id: uuid::Uuid::new_v4().to_string(),
            email: user.email.clone(),
            password_hash: old
                .hash(&Password::for_login(&user.password).unwrap())
                .await
                .unwrap(),
            created_at: app.clock.now(),
            disabled_at: None,
            tokens_valid_after: 0,
            email_verified_at: None,
        };
        let inserted = app.state.store.insert_user(&row, &["user"]).await.unwrap();
        assert!(matches!(inserted, InsertUser::Created));
        let devices = DeviceTokens::new(app.state.ring.keks());
        let before_raise = devices.issue(&Holder::of(&row), app.clock.now());

        let response = login_with(&app, &user.email, &user.password, &before_raise).await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        let rehashed = app.user(&user.email).await;
        assert_ne!(rehashed.password_hash, row.password_hash, "rehashed");
        let fresh = response.str("device_token");
        let now = app.clock.now();
        assert!(devices
            .recognise(&fresh, &Holder::of(&rehashed), now)
            .is_some());
        assert_eq!(
            devices.recognise(&before_raise, &Holder::of(&rehashed), now),
            None
        );
        for attempt in 1..=5 {
            let response = login_with(&app, &user.email, WRONG, &fresh).await;
            assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{attempt}");
        }
        assert_eq!(
            app.login(&user.email, &user.password).await.status,
            StatusCode::OK,
            "the guesses counted against the new token, not the email"
        );
    }

    crate::on_every_backend!(
        a_login_that_rehashes_hands_out_a_token_for_the_new_hash,
        an_owner_locked_out_by_a_guesser_keeps_the_device_and_a_password_change_unlocks,
        a_hundred_failures_with_a_device_token_lock_it_for_good,
    );
}

/// The OpenAPI document names the field on both sides of `/login` and on `/password`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_device_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = app.get("/openapi.json", None).await.body;
    let schemas = &doc["components"]["schemas"];
    for schema in ["LoginRequest", "TokenResponse", "ChangePasswordRequest"] {
        assert!(
            schemas[schema]["properties"]["device_token"].is_object(),
            "{schema}: {}",
            schemas[schema]
        );
    }
    let required = schemas["LoginRequest"]["required"].as_array().unwrap();
    assert!(!required.contains(&"device_token".into()), "optional");
}
