//! The store of sign-in through external providers (issue 14), on every store: identities
//! map to one user each, a user created by such a sign-in has no password that any login
//! could match, and flows and one-time codes are taken once, even by racing requests, and
//! never after they expire.

use auth_api::{
    kek::Sealed,
    store::{
        ExternalIdentity, InsertIdentity, InsertPasswordlessUser, SignInCode, SignInFlow,
        UnlinkIdentity, NO_PASSWORD,
    },
};
use axum::http::StatusCode;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, TestUser};

/// Flows live ten minutes, codes one.
const FLOW_TTL: i64 = 600;
const CODE_TTL: i64 = 60;

/// `n` random bytes: the values here are hashes and ciphertexts, mostly not UTF-8.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// SHA-256 of a fresh random value, as `/authorize` and `/callback` key their rows.
fn random_hash() -> Vec<u8> {
    Sha256::digest(random_bytes(32)).to_vec()
}

/// An identity at `provider` with a fresh subject, for `user_id`, created at `now`.
fn identity(provider: &str, user_id: &str, now: i64) -> ExternalIdentity {
    ExternalIdentity {
        provider: provider.to_owned(),
        subject: format!("sub-{}", uuid::Uuid::new_v4().simple()),
        issuer: Some(format!("https://{provider}.example")),
        user_id: user_id.to_owned(),
        email: Some(format!("{}@idp.example", uuid::Uuid::new_v4().simple())),
        email_verified: true,
        created_at: now,
        last_used_at: now,
    }
}

/// A flow started at `now`.
fn flow(now: i64) -> SignInFlow {
    SignInFlow {
        state_hash: random_hash(),
        provider: "google".to_owned(),
        nonce: "n-0S6_WzA2Mj".to_owned(),
        pkce_verifier: Sealed {
            kek_id: "test-kek".to_owned(),
            nonce: random_bytes(24),
            ciphertext: random_bytes(43 + 16),
        },
        browser_binding_hash: random_hash(),
        redirect_to: "https://app.example/after-sign-in?x=1".to_owned(),
        client_code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        created_at: now,
        expires_at: now + FLOW_TTL,
    }
}

/// A code for `user_id` handed out at `now`.
fn code(user_id: &str, now: i64) -> SignInCode {
    SignInCode {
        code_hash: random_hash(),
        user_id: user_id.to_owned(),
        provider: "google".to_owned(),
        amr: "oidc".to_owned(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned(),
        created_at: now,
        expires_at: now + CODE_TTL,
    }
}

/// A fresh passwordless user created by a sign-in at `google`; its id and identity.
async fn passwordless_user(app: &TestApp) -> (String, ExternalIdentity) {
    let now = app.clock.now();
    let user_id = uuid::Uuid::new_v4().to_string();
    let identity = identity("google", &user_id, now);
    let email = TestUser::random().email;
    let created = app
        .state
        .store
        .insert_passwordless_user(&email, &["user"], &identity)
        .await
        .unwrap();
    assert_eq!(created, InsertPasswordlessUser::Created);
    (user_id, identity)
}

/// An identity is linked once: the same (provider, subject) again is refused whichever user
/// asks, and it is found by itself and listed under its user only.
async fn an_identity_is_linked_to_one_user_only(app: TestApp) {
    // Arrange: two password users.
    let store = &app.state.store;
    let now = app.clock.now();
    let (alice, bob) = (TestUser::random(), TestUser::random());
    alice.register(&app).await;
    bob.register(&app).await;
    let (alice, bob) = (app.user(&alice.email).await, app.user(&bob.email).await);
    let linked = identity("google", &alice.id, now);

    // Act
    let first = store.insert_identity(&linked).await.unwrap();
    let again = store.insert_identity(&linked).await.unwrap();
    let to_bob = ExternalIdentity {
        user_id: bob.id.clone(),
        ..linked.clone()
    };
    let stolen = store.insert_identity(&to_bob).await.unwrap();
    let elsewhere = ExternalIdentity {
        provider: "github".to_owned(),
        user_id: bob.id.clone(),
        email: None,
        email_verified: false,
        ..linked.clone()
    };
    let same_subject_other_provider = store.insert_identity(&elsewhere).await.unwrap();

    // Assert
    assert_eq!(first, InsertIdentity::Created);
    assert_eq!(again, InsertIdentity::AlreadyLinked);
    assert_eq!(stolen, InsertIdentity::AlreadyLinked, "never moved to bob");
    assert_eq!(same_subject_other_provider, InsertIdentity::Created);
    let found = store.identity("google", &linked.subject).await.unwrap();
    assert_eq!(found.as_ref(), Some(&linked), "as written, still alice's");
    assert_eq!(
        store.identity("google", "no-such-subject").await.unwrap(),
        None
    );
    assert_eq!(store.identities_of(&alice.id).await.unwrap(), vec![linked]);
    assert_eq!(store.identities_of(&bob.id).await.unwrap(), vec![elsewhere]);
}

/// A sign-in records when it happened and what the provider now asserts.
async fn touching_an_identity_records_the_sign_in(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let (_, linked) = passwordless_user(&app).await;
    let later = linked.last_used_at + 3600;

    // Act: a sign-in that asserts no email, and one of an identity that is not linked.
    let now_asserted = ExternalIdentity {
        email: None,
        email_verified: false,
        issuer: Some("https://another-issuer.example".to_owned()),
        ..linked.clone()
    };
    let touched = store.touch_identity(&now_asserted, later).await.unwrap();
    let unknown = store
        .touch_identity(
            &ExternalIdentity {
                subject: "no-such-subject".to_owned(),
                ..now_asserted.clone()
            },
            later,
        )
        .await
        .unwrap();

    // Assert: the email follows the provider; the issuer recorded at linking stays.
    assert!(touched);
    assert!(!unknown);
    let found = store
        .identity("google", &linked.subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found,
        ExternalIdentity {
            email: None,
            email_verified: false,
            last_used_at: later,
            ..linked
        }
    );
}

/// The user and its identity are written together, or not at all: an email already taken
/// is its own outcome (never a silent link), and so is an identity linked meanwhile.
async fn a_passwordless_user_is_created_with_its_identity_or_not_at_all(app: TestApp) {
    // Arrange: a password user whose email a new identity will assert.
    let store = &app.state.store;
    let now = app.clock.now();
    let owner = TestUser::random();
    owner.register(&app).await;

    // Act
    let (user_id, linked) = passwordless_user(&app).await;
    let taken_email_id = uuid::Uuid::new_v4().to_string();
    let taken_email_identity = identity("google", &taken_email_id, now);
    let email_taken = store
        .insert_passwordless_user(&owner.email, &["user"], &taken_email_identity)
        .await
        .unwrap();
    let taken_identity_id = uuid::Uuid::new_v4().to_string();
    let fresh_email = TestUser::random().email;
    let identity_taken = store
        .insert_passwordless_user(
            &fresh_email,
            &["user"],
            &ExternalIdentity {
                user_id: taken_identity_id.clone(),
                ..linked.clone()
            },
        )
        .await
        .unwrap();

    // Assert
    let user = store.user_by_id(&user_id).await.unwrap().unwrap();
    assert_eq!(user.password_hash, NO_PASSWORD);
    assert!(!user.has_password());
    assert!(app.user(&owner.email).await.has_password());
    assert_eq!(user.created_at, now);
    assert_eq!(
        store.roles(&user_id).await.unwrap(),
        vec!["user".to_owned()]
    );
    assert_eq!(store.identities_of(&user_id).await.unwrap(), vec![linked]);

    assert_eq!(email_taken, InsertPasswordlessUser::EmailTaken);
    assert!(store.user_by_id(&taken_email_id).await.unwrap().is_none());
    assert_eq!(
        store
            .identity("google", &taken_email_identity.subject)
            .await
            .unwrap(),
        None,
        "nothing linked to the owner of the email"
    );
    assert_eq!(
        store
            .identities_of(&app.user(&owner.email).await.id)
            .await
            .unwrap(),
        vec![]
    );

    assert_eq!(identity_taken, InsertPasswordlessUser::IdentityTaken);
    assert!(store
        .user_by_id(&taken_identity_id)
        .await
        .unwrap()
        .is_none());
    assert!(store.user_by_email(&fresh_email).await.unwrap().is_none());
    assert!(store.roles(&taken_identity_id).await.unwrap().is_empty());
}

/// A passwordless account answers every password, the stored value itself included, as a
/// wrong password does: `invalid_credentials`, after one bcrypt (on the dummy hash), so
/// neither the answer nor its time tells such an account apart.
async fn a_password_login_to_a_passwordless_account_is_invalid_credentials(app: TestApp) {
    // Arrange: a passwordless account, and a password account for comparison.
    let (user_id, _) = passwordless_user(&app).await;
    let email = app
        .state
        .store
        .user_by_id(&user_id)
        .await
        .unwrap()
        .unwrap()
        .email;
    let owner = TestUser::random();
    owner.register(&app).await;

    for (who, password) in [
        (&email, NO_PASSWORD),
        (&email, ""),
        (&email, "correct horse battery staple"),
        (&owner.email, "a wrong password"),
    ] {
        // Act
        let before = app.state.hasher.started();
        let response = app.login(who, password).await;

        // Assert
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{password:?}: {}",
            response.body
        );
        assert_eq!(response.error(), "invalid_credentials", "{password:?}");
        assert_eq!(
            app.state.hasher.started() - before,
            1,
            "{password:?}: one bcrypt, like a wrong password"
        );
    }
}

/// An identity is unlinked only while its user keeps a way to sign in, and two unlinks
/// racing for a passwordless user's last two identities never both succeed.
async fn unlinking_keeps_a_way_in(app: TestApp) {
    // Arrange: a passwordless user with a second identity, and a password user with one.
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, google) = passwordless_user(&app).await;
    let github = identity("github", &user_id, now);
    assert_eq!(
        store.insert_identity(&github).await.unwrap(),
        InsertIdentity::Created
    );
    let owner = TestUser::random();
    owner.register(&app).await;
    let owner = app.user(&owner.email).await;
    let owners = identity("google", &owner.id, now);
    store.insert_identity(&owners).await.unwrap();

    // Act: both of the passwordless user's identities at once.
    let (a, b) = tokio::join!(
        {
            let store = store.clone();
            let subject = google.subject.clone();
            let user_id = user_id.clone();
            tokio::spawn(async move { store.delete_identity("google", &subject, &user_id).await })
        },
        {
            let store = store.clone();
            let subject = github.subject.clone();
            let user_id = user_id.clone();
            tokio::spawn(async move { store.delete_identity("github", &subject, &user_id).await })
        },
    );
    let mut outcomes = [a.unwrap().unwrap(), b.unwrap().unwrap()];
    outcomes.sort_by_key(|outcome| format!("{outcome:?}"));

    // Assert
    assert_eq!(
        outcomes,
        [UnlinkIdentity::LastWayIn, UnlinkIdentity::Unlinked]
    );
    let left = store.identities_of(&user_id).await.unwrap();
    assert_eq!(left.len(), 1, "one identity stays: {left:?}");
    let last = &left[0];
    assert_eq!(
        store
            .delete_identity(&last.provider, &last.subject, &user_id)
            .await
            .unwrap(),
        UnlinkIdentity::LastWayIn
    );
    assert_eq!(
        store
            .delete_identity(&last.provider, &last.subject, &owner.id)
            .await
            .unwrap(),
        UnlinkIdentity::NotFound,
        "another user's identity"
    );
    assert_eq!(
        store
            .delete_identity("google", &owners.subject, "no-such-user")
            .await
            .unwrap(),
        UnlinkIdentity::NotFound
    );
    assert_eq!(
        store
            .delete_identity("google", &owners.subject, &owner.id)
            .await
            .unwrap(),
        UnlinkIdentity::Unlinked,
        "the password stays a way in"
    );
    assert!(store.identities_of(&owner.id).await.unwrap().is_empty());
}

/// Of many requests presenting one state at once, exactly one gets the flow, as written; a
/// replay afterwards finds nothing.
async fn a_flow_is_taken_once_even_by_racing_callbacks(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let started = flow(now);
    let other = flow(now);
    store.insert_sign_in_flow(&started).await.unwrap();
    store.insert_sign_in_flow(&other).await.unwrap();

    // Act
    let mut takers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let state_hash = started.state_hash.clone();
        takers.spawn(async move { store.take_sign_in_flow(&state_hash, now + 1).await });
    }
    let taken: Vec<SignInFlow> = takers
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::unwrap)
        .collect();

    // Assert
    assert_eq!(taken, vec![started.clone()], "exactly one, as written");
    assert_eq!(
        store
            .take_sign_in_flow(&started.state_hash, now + 1)
            .await
            .unwrap(),
        None,
        "a replay"
    );
    assert_eq!(
        store
            .take_sign_in_flow(&other.state_hash, now + 1)
            .await
            .unwrap(),
        Some(other),
        "the other flow is untouched"
    );
}

/// Of many exchanges presenting one code at once, exactly one gets it.
async fn a_code_is_taken_once_even_by_racing_exchanges(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _) = passwordless_user(&app).await;
    let handed_out = code(&user_id, now);
    store.insert_sign_in_code(&handed_out).await.unwrap();

    // Act
    let mut exchanges = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let code_hash = handed_out.code_hash.clone();
        exchanges.spawn(async move { store.take_sign_in_code(&code_hash, now + 1).await });
    }
    let taken: Vec<SignInCode> = exchanges
        .join_all()
        .await
        .into_iter()
        .filter_map(Result::unwrap)
        .collect();

    // Assert
    assert_eq!(taken, vec![handed_out.clone()], "exactly one, as written");
    assert_eq!(
        store
            .take_sign_in_code(&handed_out.code_hash, now + 1)
            .await
            .unwrap(),
        None,
        "a replay"
    );
}

/// A flow or code presented at or after its expiry is refused, and gone: presenting it again
/// with an earlier clock finds nothing either.
async fn expired_flows_and_codes_are_refused_and_deleted(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _) = passwordless_user(&app).await;
    let (late_flow, live_flow) = (flow(now), flow(now));
    let (late_code, live_code) = (code(&user_id, now), code(&user_id, now));
    for started in [&late_flow, &live_flow] {
        store.insert_sign_in_flow(started).await.unwrap();
    }
    for handed_out in [&late_code, &live_code] {
        store.insert_sign_in_code(handed_out).await.unwrap();
    }

    // Act
    let flow_at_expiry = store
        .take_sign_in_flow(&late_flow.state_hash, late_flow.expires_at)
        .await
        .unwrap();
    let code_at_expiry = store
        .take_sign_in_code(&late_code.code_hash, late_code.expires_at)
        .await
        .unwrap();
    let flow_just_before = store
        .take_sign_in_flow(&live_flow.state_hash, live_flow.expires_at - 1)
        .await
        .unwrap();
    let code_just_before = store
        .take_sign_in_code(&live_code.code_hash, live_code.expires_at - 1)
        .await
        .unwrap();

    // Assert
    assert_eq!(flow_at_expiry, None);
    assert_eq!(code_at_expiry, None);
    assert_eq!(flow_just_before, Some(live_flow));
    assert_eq!(code_just_before, Some(live_code));
    assert_eq!(
        store
            .take_sign_in_flow(&late_flow.state_hash, now)
            .await
            .unwrap(),
        None,
        "the expired flow was deleted"
    );
    assert_eq!(
        store
            .take_sign_in_code(&late_code.code_hash, now)
            .await
            .unwrap(),
        None,
        "the expired code was deleted"
    );
}

/// Pruning deletes what has expired and nothing else.
async fn pruning_deletes_only_expired_flows_and_codes(app: TestApp) {
    // Arrange: a flow and a code that expire at `now + CODE_TTL`, and a flow and code that
    // live longer.
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _) = passwordless_user(&app).await;
    let short_flow = SignInFlow {
        expires_at: now + CODE_TTL,
        ..flow(now)
    };
    let long_flow = flow(now);
    let short_code = code(&user_id, now);
    let long_code = SignInCode {
        expires_at: now + FLOW_TTL,
        ..code(&user_id, now)
    };
    for started in [&short_flow, &long_flow] {
        store.insert_sign_in_flow(started).await.unwrap();
    }
    for handed_out in [&short_code, &long_code] {
        store.insert_sign_in_code(handed_out).await.unwrap();
    }

    // Act
    let before_expiry = store.prune_sign_in(now + CODE_TTL - 1).await.unwrap();
    let at_expiry = store.prune_sign_in(now + CODE_TTL).await.unwrap();

    // Assert
    assert_eq!(before_expiry, 0);
    assert_eq!(at_expiry, 2);
    let raw = app.raw().await;
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM sign_in_flows) + (SELECT COUNT(*) FROM sign_in_codes)",
    )
    .fetch_one(&raw.pool)
    .await
    .unwrap();
    raw.close().await;
    assert_eq!(left, 2);
    assert_eq!(
        store
            .take_sign_in_flow(&long_flow.state_hash, now + 1)
            .await
            .unwrap(),
        Some(long_flow)
    );
    assert_eq!(
        store
            .take_sign_in_code(&long_code.code_hash, now + 1)
            .await
            .unwrap(),
        Some(long_code)
    );
}

/// Deleting a user (there is no command for it yet: an operator's SQL) deletes its
/// identities and its codes, so neither can sign anybody in afterwards.
async fn deleting_a_user_deletes_its_identities_and_codes(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, linked) = passwordless_user(&app).await;
    let handed_out = code(&user_id, now);
    store.insert_sign_in_code(&handed_out).await.unwrap();

    // Act
    let raw = app.raw().await;
    sqlx::query(raw.sql(
        "DELETE FROM users WHERE id = $1",
        "DELETE FROM users WHERE id = ?",
    ))
    .bind(&user_id)
    .execute(&raw.pool)
    .await
    .unwrap();
    raw.close().await;

    // Assert
    assert_eq!(
        store.identity("google", &linked.subject).await.unwrap(),
        None
    );
    assert!(store.identities_of(&user_id).await.unwrap().is_empty());
    assert_eq!(
        store
            .take_sign_in_code(&handed_out.code_hash, now + 1)
            .await
            .unwrap(),
        None
    );
}

crate::on_every_store!(
    an_identity_is_linked_to_one_user_only,
    touching_an_identity_records_the_sign_in,
    a_passwordless_user_is_created_with_its_identity_or_not_at_all,
    a_password_login_to_a_passwordless_account_is_invalid_credentials,
    unlinking_keeps_a_way_in,
    a_flow_is_taken_once_even_by_racing_callbacks,
    a_code_is_taken_once_even_by_racing_exchanges,
    expired_flows_and_codes_are_refused_and_deleted,
    pruning_deletes_only_expired_flows_and_codes,
    deleting_a_user_deletes_its_identities_and_codes,
);
