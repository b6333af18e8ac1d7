//! The store of the TOTP second factor (issue 15), on every store: one enrolment per user,
//! replaced until a first code confirms it and kept from then on; the secret sealed for its
//! user; a time step and a recovery code each used once, even by racing logins; disabling and
//! deleting the user leave nothing behind.

use auth_api::{
    domain::{totp_step, RecoveryCode, TotpSecret, RECOVERY_CODE_COUNT},
    kek::Sealed,
    store::{BeginTotp, TotpEnrolment},
};

use crate::helpers::{TestApp, TestUser};

/// A registered user's id.
async fn user(app: &TestApp) -> String {
    let user = TestUser::random();
    user.register(app).await;
    app.user(&user.email).await.id
}

/// A fresh secret and its seal for `user_id` under the app's key-encryption keys.
fn sealed_secret(app: &TestApp, user_id: &str) -> (TotpSecret, Sealed) {
    let secret = TotpSecret::generate();
    let sealed = app
        .state
        .ring
        .keks()
        .seal_totp_secret(user_id, &secret)
        .unwrap();
    (secret, sealed)
}

/// The hashes of a new set of recovery codes, and the codes.
fn recovery_codes() -> (Vec<RecoveryCode>, Vec<[u8; 32]>) {
    let codes = RecoveryCode::generate_set();
    let hashes = codes.iter().map(RecoveryCode::hash).collect();
    (codes, hashes)
}

/// A user with a confirmed factor, confirmed by the code of `totp_step(now)`.
async fn confirmed_user(app: &TestApp) -> (String, TotpSecret, Vec<RecoveryCode>) {
    let store = &app.state.store;
    let now = app.clock.now();
    let user_id = user(app).await;
    let (secret, sealed) = sealed_secret(app, &user_id);
    let (codes, hashes) = recovery_codes();
    assert_eq!(
        store
            .begin_totp_enrolment(&user_id, &sealed, now)
            .await
            .unwrap(),
        BeginTotp::Started
    );
    assert!(store
        .confirm_totp(&user_id, &sealed, totp_step(now), now, &hashes)
        .await
        .unwrap());
    (user_id, secret, codes)
}

/// Until a first code confirms it, starting again replaces the secret; once confirmed, a new
/// enrolment changes nothing, and a confirmation of a replaced secret confirms nothing.
async fn an_enrolment_is_replaced_until_confirmed_then_kept(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let user_id = user(&app).await;
    let (_, first) = sealed_secret(&app, &user_id);
    let (_, second) = sealed_secret(&app, &user_id);
    let (_, third) = sealed_secret(&app, &user_id);
    let (_, hashes) = recovery_codes();

    // Act
    let began_first = store.begin_totp_enrolment(&user_id, &first, now).await;
    let began_second = store.begin_totp_enrolment(&user_id, &second, now + 5).await;
    let confirmed_replaced = store
        .confirm_totp(&user_id, &first, totp_step(now), now + 6, &hashes)
        .await;
    let pending = store.totp_enrolment(&user_id).await.unwrap();
    let confirmed = store
        .confirm_totp(&user_id, &second, totp_step(now + 7), now + 7, &hashes)
        .await;
    let confirmed_again = store
        .confirm_totp(&user_id, &second, totp_step(now + 8), now + 8, &hashes)
        .await;
    let began_third = store.begin_totp_enrolment(&user_id, &third, now + 9).await;
    let unknown_user = store
        .begin_totp_enrolment(&uuid::Uuid::new_v4().to_string(), &third, now)
        .await;

    // Assert
    assert_eq!(began_first.unwrap(), BeginTotp::Started);
    assert_eq!(began_second.unwrap(), BeginTotp::Started);
    assert!(!confirmed_replaced.unwrap(), "the replaced secret");
    assert_eq!(
        pending,
        Some(TotpEnrolment {
            user_id: user_id.clone(),
            secret: second.clone(),
            created_at: now + 5,
            confirmed_at: None,
            last_used_step: None,
        })
    );
    assert!(!pending.unwrap().is_confirmed());
    assert!(confirmed.unwrap());
    assert!(!confirmed_again.unwrap(), "confirmed once");
    assert_eq!(began_third.unwrap(), BeginTotp::AlreadyConfirmed);
    assert_eq!(unknown_user.unwrap(), BeginTotp::UserNotFound);
    assert_eq!(
        store.totp_enrolment(&user_id).await.unwrap(),
        Some(TotpEnrolment {
            user_id: user_id.clone(),
            secret: second,
            created_at: now + 5,
            confirmed_at: Some(now + 7),
            last_used_step: Some(totp_step(now + 7)),
        }),
        "the confirmed secret, untouched by the third enrolment"
    );
}

/// What the database holds is ciphertext bound to its user: it opens under the app's KEK and
/// computes the app's codes, and copied onto another user's row it opens for nobody.
async fn the_stored_secret_is_sealed_for_its_user(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let keks = app.state.ring.keks();
    let now = app.clock.now();
    let (owner, other) = (user(&app).await, user(&app).await);
    let (secret, sealed) = sealed_secret(&app, &owner);
    store
        .begin_totp_enrolment(&owner, &sealed, now)
        .await
        .unwrap();

    // Act
    let raw = app.raw().await;
    let stored: Vec<u8> = sqlx::query_scalar(raw.sql(
        "SELECT secret_sealed FROM user_totp WHERE user_id = $1",
        "SELECT secret_sealed FROM user_totp WHERE user_id = ?",
    ))
    .bind(&owner)
    .fetch_one(&raw.pool)
    .await
    .unwrap();
    raw.close().await;
    let read = store.totp_enrolment(&owner).await.unwrap().unwrap();
    store
        .begin_totp_enrolment(&other, &read.secret, now)
        .await
        .unwrap();
    let moved = store.totp_enrolment(&other).await.unwrap().unwrap();

    // Assert
    let plain = secret.expose_bytes();
    assert!(
        !stored.windows(plain.len()).any(|w| w == plain),
        "no plaintext in the row"
    );
    let opened = keks.open_totp_secret(&owner, &read.secret).unwrap();
    let code = secret.code_at(now);
    assert_eq!(opened.verify(&code, now), Some(totp_step(now)));
    assert!(
        keks.open_totp_secret(&other, &moved.secret).is_err(),
        "a secret moved to another user opens for nobody"
    );
}

/// The confirming code's step counts as used, and the first recovery codes arrive with the
/// confirmation.
async fn confirmation_uses_its_step_and_stores_the_first_recovery_codes(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let step = totp_step(now);

    // Act
    let (user_id, _, codes) = confirmed_user(&app).await;
    let replayed = store.use_totp_step(&user_id, step).await.unwrap();
    let older = store.use_totp_step(&user_id, step - 1).await.unwrap();
    let newer = store.use_totp_step(&user_id, step + 1).await.unwrap();

    // Assert
    assert!(!replayed, "the confirming code does not sign in again");
    assert!(!older);
    assert!(newer);
    assert_eq!(
        store.recovery_codes_left(&user_id).await.unwrap(),
        RECOVERY_CODE_COUNT as i64
    );
    assert!(store
        .use_recovery_code(&user_id, &codes[0].hash(), now)
        .await
        .unwrap());
}

/// Of many logins presenting codes of one step at once, exactly one wins; the step and every
/// older one are refused from then on. An unconfirmed enrolment accepts no step at all.
async fn a_step_is_used_once_even_by_racing_logins(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _, _) = confirmed_user(&app).await;
    let (pending_user, pending_secret) = {
        let id = user(&app).await;
        let (_, sealed) = sealed_secret(&app, &id);
        (id, sealed)
    };
    store
        .begin_totp_enrolment(&pending_user, &pending_secret, now)
        .await
        .unwrap();
    let step = totp_step(now) + 1;

    // Act
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let user_id = user_id.clone();
        logins.spawn(async move { store.use_totp_step(&user_id, step).await });
    }
    let won = logins
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|won| *won)
        .count();

    // Assert
    assert_eq!(won, 1, "exactly one login with the code");
    assert!(!store.use_totp_step(&user_id, step).await.unwrap());
    assert!(!store.use_totp_step(&user_id, step - 1).await.unwrap());
    assert_eq!(
        store
            .totp_enrolment(&user_id)
            .await
            .unwrap()
            .unwrap()
            .last_used_step,
        Some(step)
    );
    assert!(
        !store.use_totp_step(&pending_user, step + 10).await.unwrap(),
        "not confirmed"
    );
    assert!(!store
        .use_totp_step(&uuid::Uuid::new_v4().to_string(), step)
        .await
        .unwrap());
}

/// Of many logins presenting one recovery code at once, exactly one wins, and the code is
/// spent; another user's code, or no code, wins nothing.
async fn a_recovery_code_is_used_once_even_by_racing_logins(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _, codes) = confirmed_user(&app).await;
    let (other_user, _, other_codes) = confirmed_user(&app).await;
    let hash = codes[3].hash();

    // Act
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        let user_id = user_id.clone();
        logins.spawn(async move { store.use_recovery_code(&user_id, &hash, now).await });
    }
    let won = logins
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .filter(|won| *won)
        .count();

    // Assert
    assert_eq!(won, 1, "exactly one login with the code");
    assert!(!store.use_recovery_code(&user_id, &hash, now).await.unwrap());
    assert_eq!(
        store.recovery_codes_left(&user_id).await.unwrap(),
        RECOVERY_CODE_COUNT as i64 - 1
    );
    assert!(
        !store
            .use_recovery_code(&user_id, &other_codes[0].hash(), now)
            .await
            .unwrap(),
        "another user's code"
    );
    assert!(!store
        .use_recovery_code(&user_id, &RecoveryCode::generate().hash(), now)
        .await
        .unwrap());
    assert_eq!(
        store.recovery_codes_left(&other_user).await.unwrap(),
        RECOVERY_CODE_COUNT as i64,
        "the other user's codes are untouched"
    );
}

/// New recovery codes void every old one, used or not, and only a confirmed factor gets any.
async fn replacing_recovery_codes_voids_the_old_ones(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _, old) = confirmed_user(&app).await;
    store
        .use_recovery_code(&user_id, &old[0].hash(), now)
        .await
        .unwrap();
    let (new, hashes) = recovery_codes();
    let pending_user = user(&app).await;
    let (_, pending_secret) = sealed_secret(&app, &pending_user);
    store
        .begin_totp_enrolment(&pending_user, &pending_secret, now)
        .await
        .unwrap();

    // Act
    let replaced = store
        .replace_recovery_codes(&user_id, &hashes, now + 1)
        .await
        .unwrap();
    let pending_replaced = store
        .replace_recovery_codes(&pending_user, &hashes, now + 1)
        .await
        .unwrap();

    // Assert
    assert!(replaced);
    assert!(!pending_replaced, "no confirmed factor, no recovery codes");
    assert_eq!(store.recovery_codes_left(&pending_user).await.unwrap(), 0);
    assert_eq!(
        store.recovery_codes_left(&user_id).await.unwrap(),
        RECOVERY_CODE_COUNT as i64
    );
    assert!(!store
        .use_recovery_code(&user_id, &old[1].hash(), now + 2)
        .await
        .unwrap());
    assert!(store
        .use_recovery_code(&user_id, &new[0].hash(), now + 2)
        .await
        .unwrap());
}

/// Disabling removes the secret and every recovery code of that user only; the user may then
/// enrol again.
async fn disabling_removes_the_secret_and_every_recovery_code(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let now = app.clock.now();
    let (user_id, _, codes) = confirmed_user(&app).await;
    let (other_user, _, _) = confirmed_user(&app).await;

    // Act
    let disabled = store.disable_totp(&user_id).await.unwrap();
    let disabled_again = store.disable_totp(&user_id).await.unwrap();

    // Assert
    assert!(disabled);
    assert!(!disabled_again);
    assert_eq!(store.totp_enrolment(&user_id).await.unwrap(), None);
    assert_eq!(store.recovery_codes_left(&user_id).await.unwrap(), 0);
    assert!(!store
        .use_recovery_code(&user_id, &codes[0].hash(), now)
        .await
        .unwrap());
    assert!(!store
        .use_totp_step(&user_id, totp_step(now) + 5)
        .await
        .unwrap());
    assert!(store
        .totp_enrolment(&other_user)
        .await
        .unwrap()
        .is_some_and(|e| e.is_confirmed()));
    assert_eq!(
        store.recovery_codes_left(&other_user).await.unwrap(),
        RECOVERY_CODE_COUNT as i64
    );
    let (_, sealed) = sealed_secret(&app, &user_id);
    assert_eq!(
        store
            .begin_totp_enrolment(&user_id, &sealed, now)
            .await
            .unwrap(),
        BeginTotp::Started
    );
}

/// A confirmation racing a new enrolment of the same user (two tabs) either confirms the
/// secret its code was checked against, and the enrolment is then refused, or confirms
/// nothing, and the new secret waits for its own code: never a confirmed secret the user's
/// app does not hold.
async fn a_confirmation_racing_a_new_enrolment_confirms_the_shown_secret_or_nothing(app: TestApp) {
    let store = &app.state.store;
    let now = app.clock.now();
    for _ in 0..10 {
        // Arrange
        let user_id = user(&app).await;
        let (_, shown) = sealed_secret(&app, &user_id);
        let (_, newer) = sealed_secret(&app, &user_id);
        let (_, hashes) = recovery_codes();
        store
            .begin_totp_enrolment(&user_id, &shown, now)
            .await
            .unwrap();

        // Act
        let confirm = {
            let (store, user_id, shown) = (store.clone(), user_id.clone(), shown.clone());
            tokio::spawn(async move {
                store
                    .confirm_totp(&user_id, &shown, totp_step(now), now, &hashes)
                    .await
            })
        };
        let begin = {
            let (store, user_id, newer) = (store.clone(), user_id.clone(), newer.clone());
            tokio::spawn(async move { store.begin_totp_enrolment(&user_id, &newer, now).await })
        };
        let (confirmed, began) = (
            confirm.await.unwrap().unwrap(),
            begin.await.unwrap().unwrap(),
        );

        // Assert
        let stored = store.totp_enrolment(&user_id).await.unwrap().unwrap();
        let left = store.recovery_codes_left(&user_id).await.unwrap();
        if confirmed {
            assert_eq!(began, BeginTotp::AlreadyConfirmed);
            assert_eq!(stored.secret, shown);
            assert!(stored.is_confirmed());
            assert_eq!(left, RECOVERY_CODE_COUNT as i64);
        } else {
            assert_eq!(began, BeginTotp::Started);
            assert_eq!(stored.secret, newer);
            assert!(!stored.is_confirmed());
            assert_eq!(left, 0);
        }
    }
}

/// After a KEK rotation the start's re-seal (`service::totp::reseal_totp_secrets`) seals the
/// same secret again under the new KEK, once, even by two replicas at once; codes keep
/// working, and the old KEK is then needed by no row.
async fn a_kek_rotation_reseals_the_same_secret_once(app: TestApp) {
    // Arrange: two users enrolled under the app's KEK, and a ring whose first KEK is new.
    let store = &app.state.store;
    let now = app.clock.now();
    let old_keks = app.state.ring.keks().clone();
    let (new_keks, _) = auth_api::kek::KeyEncryptionKeys::generate("kek-totp-2").unwrap();
    let both = new_keks.with_fallback(&old_keks);
    let (confirmed, secret, _) = confirmed_user(&app).await;
    let pending = user(&app).await;
    let (_, pending_sealed) = sealed_secret(&app, &pending);
    store
        .begin_totp_enrolment(&pending, &pending_sealed, now)
        .await
        .unwrap();

    // Act: what every start does, by two replicas at once.
    let (first, second) = tokio::join!(
        auth_api::service::totp::reseal_totp_secrets(store, &both),
        auth_api::service::totp::reseal_totp_secrets(store, &both),
    );
    let resealed = first.unwrap() + second.unwrap();

    // Assert
    assert_eq!(resealed, 2, "each row once");
    assert!(store
        .totp_secrets_not_under(both.current_id(), "", 100)
        .await
        .unwrap()
        .is_empty());
    let stored = store.totp_enrolment(&confirmed).await.unwrap().unwrap();
    assert_eq!(stored.secret.kek_id, "kek-totp-2");
    assert!(stored.is_confirmed(), "confirmation and step are kept");
    let opened = new_keks
        .open_totp_secret(&confirmed, &stored.secret)
        .unwrap();
    let later = now + 60;
    assert_eq!(
        opened.verify(&secret.code_at(later), later),
        Some(totp_step(later)),
        "the user's app still computes the codes"
    );
}

/// Deleting a user (an operator's SQL) deletes its second factor and recovery codes.
async fn deleting_a_user_deletes_its_second_factor(app: TestApp) {
    // Arrange
    let store = &app.state.store;
    let (user_id, _, _) = confirmed_user(&app).await;

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
    let codes: i64 = sqlx::query_scalar(raw.sql(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1",
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?",
    ))
    .bind(&user_id)
    .fetch_one(&raw.pool)
    .await
    .unwrap();
    raw.close().await;

    // Assert
    assert_eq!(store.totp_enrolment(&user_id).await.unwrap(), None);
    assert_eq!(codes, 0);
}

crate::on_every_store!(
    an_enrolment_is_replaced_until_confirmed_then_kept,
    the_stored_secret_is_sealed_for_its_user,
    confirmation_uses_its_step_and_stores_the_first_recovery_codes,
    a_step_is_used_once_even_by_racing_logins,
    a_recovery_code_is_used_once_even_by_racing_logins,
    replacing_recovery_codes_voids_the_old_ones,
    disabling_removes_the_secret_and_every_recovery_code,
    a_confirmation_racing_a_new_enrolment_confirms_the_shown_secret_or_nothing,
    a_kek_rotation_reseals_the_same_secret_once,
    deleting_a_user_deletes_its_second_factor,
);
