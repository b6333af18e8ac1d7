//! A raised `AUTH_BCRYPT_COST` reaches stored hashes: a successful login rehashes a weaker hash
//! at the configured cost, replacing only the hash it checked (SECURITY.md E 46).

use auth_api::{
    domain::Password,
    passwords::PasswordHasher,
    store::{InsertUser, UserRow},
};
use axum::http::StatusCode;

use crate::helpers::{Backend, TestApp, TestUser, Tokens};

/// The cost field of a `$2b$<cost>$…` hash.
fn cost_of(hash: &str) -> u32 {
    assert!(hash.starts_with("$2b$"), "{hash}");
    hash[4..6].parse().unwrap()
}

/// Inserts `user` with its password hashed at `cost`, as an account from before a raise.
async fn insert_at_cost(app: &TestApp, user: &TestUser, cost: u32) -> String {
    let old = PasswordHasher::new(cost, app.state.config.password_pepper.clone(), 1, 1)
        .await
        .unwrap();
    let hash = old
        .hash(&Password::for_login(&user.password).unwrap())
        .await
        .unwrap();
    let row = UserRow {
        id: uuid::Uuid::new_v4().to_string(),
        email: user.email.clone(),
        password_hash: hash.clone(),
        created_at: app.clock.now(),
        disabled_at: None,
        tokens_valid_after: 0,
        email_verified_at: None,
    };
    let inserted = app.state.store.insert_user(&row, &["user"]).await.unwrap();
    assert!(matches!(inserted, InsertUser::Created));
    hash
}

async fn a_login_at_a_raised_cost_rehashes_the_stored_password(backend: Backend) {
    // Arrange: a service at cost 5 and an account hashed at cost 4.
    let app = TestApp::spawn_with(backend, |c| c.bcrypt_cost = 5).await;
    let user = TestUser::random();
    let before = insert_at_cost(&app, &user, 4).await;
    assert_eq!(cost_of(&before), 4);
    // A wrong password rehashes nothing.
    let wrong = app.login(&user.email, "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.user(&user.email).await.password_hash, before);
    // Act
    let first = user.login(&app).await;
    // Assert: the stored hash is now at cost 5, and the password still logs in and refreshes.
    let after = app.user(&user.email).await.password_hash;
    assert_eq!(cost_of(&after), 5, "{after}");
    assert_ne!(after, before);
    assert_eq!(app.validate(&first.access).await.status, StatusCode::OK);
    let again = user.login(&app).await;
    assert_eq!(
        app.user(&user.email).await.password_hash,
        after,
        "a hash at the configured cost is kept"
    );
    let refreshed = app.refresh(&again.refresh).await;
    Tokens::from_response(&refreshed);
    assert_eq!(
        app.refresh(&first.refresh).await.status,
        StatusCode::OK,
        "the first session lives on"
    );
}

async fn a_hash_above_the_configured_cost_is_kept(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = TestUser::random();
    let before = insert_at_cost(&app, &user, 5).await;
    user.login(&app).await;
    assert_eq!(app.user(&user.email).await.password_hash, before);
}

async fn a_rehash_replaces_only_the_hash_it_checked(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.bcrypt_cost = 5).await;
    let user = TestUser::random();
    let checked = insert_at_cost(&app, &user, 4).await;
    let id = app.user(&user.email).await.id;
    let password = Password::for_login(&user.password).unwrap();
    let changed = app.state.hasher.hash(&password).await.unwrap();
    let rehashed = app.state.hasher.hash(&password).await.unwrap();
    // A password change (or another login's rehash) commits first: the rehash loses.
    assert!(app
        .state
        .store
        .rehash_password(&id, &checked, &changed)
        .await
        .unwrap());
    assert!(!app
        .state
        .store
        .rehash_password(&id, &checked, &rehashed)
        .await
        .unwrap());
    assert_eq!(app.user(&user.email).await.password_hash, changed);
}

crate::on_every_backend!(
    a_login_at_a_raised_cost_rehashes_the_stored_password,
    a_hash_above_the_configured_cost_is_kept,
    a_rehash_replaces_only_the_hash_it_checked,
);
