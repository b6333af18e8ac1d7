//! Each session's rotation key at rest (SECURITY.md I 100, issue 10): sealed under the
//! key-encryption key and bound to its session, so that a database dump plus an old refresh
//! token no longer derives the live successor. Rows from before get a new key sealed at start
//! (and by a refresh), and so do rows after a KEK rotation: the old key, in a dump or under
//! the old KEK, derives nothing live; a row that does not open refuses cleanly.

use auth_api::{kek::Sealed, tokens::RefreshToken};
use axum::http::StatusCode;
use sqlx::Row as _;

use crate::helpers::{RawDb, TestApp, TestDb, Tokens};

/// A second KEK, for rotation tests.
const NEW_KEK: &str = "kek-2:bmV3LWtleS1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcyE";

/// A session's row exactly as stored: what a dump holds.
#[derive(Debug, Clone)]
struct RawSession {
    rotation_key: Vec<u8>,
    rotation_key_kek: Option<String>,
}

async fn raw_session(url: &str, session_id: &str) -> RawSession {
    let raw = RawDb::connect(url).await;
    let row = sqlx::query(raw.sql(
        "SELECT rotation_key, rotation_key_kek FROM sessions WHERE id = $1",
        "SELECT rotation_key, rotation_key_kek FROM sessions WHERE id = ?",
    ))
    .bind(session_id)
    .fetch_one(&raw.pool)
    .await
    .unwrap();
    raw.close().await;
    RawSession {
        rotation_key: row.get("rotation_key"),
        rotation_key_kek: row.get("rotation_key_kek"),
    }
}

/// Overwrites a session's stored rotation key, as a dump restored elsewhere, an earlier
/// version or anyone able to write to the database would.
async fn write_raw_session(url: &str, session_id: &str, raw: &RawSession) {
    let db = RawDb::connect(url).await;
    sqlx::query(db.sql(
        "UPDATE sessions SET rotation_key = $1, rotation_key_kek = $2 WHERE id = $3",
        "UPDATE sessions SET rotation_key = ?, rotation_key_kek = ? WHERE id = ?",
    ))
    .bind(raw.rotation_key.clone())
    .bind(raw.rotation_key_kek.clone())
    .bind(session_id)
    .execute(&db.pool)
    .await
    .unwrap();
    db.close().await;
}

/// Every stored refresh-token hash.
async fn stored_token_hashes(url: &str) -> Vec<Vec<u8>> {
    let raw = RawDb::connect(url).await;
    let hashes = raw.bytes("refresh_tokens", "token_hash").await;
    raw.close().await;
    hashes
}

/// The stored column as the app reads it: nonce, then ciphertext and tag.
fn sealed_of(raw: &RawSession) -> Sealed {
    Sealed {
        kek_id: raw.rotation_key_kek.clone().expect("sealed"),
        nonce: raw.rotation_key[..24].to_vec(),
        ciphertext: raw.rotation_key[24..].to_vec(),
    }
}

/// The session's rotation key, opened with the app's KEKs (what only the app can do).
fn opened(app: &TestApp, session_id: &str, raw: &RawSession) -> Vec<u8> {
    app.state
        .ring
        .keks()
        .open_rotation_key(session_id, &sealed_of(raw))
        .expect("the stored key opens")
        .to_vec()
}

/// Whether any 8-byte run of `needle` appears in `haystack`.
fn shares_a_run(haystack: &[u8], needle: &[u8]) -> bool {
    needle
        .windows(8)
        .any(|run| haystack.windows(8).any(|w| w == run))
}

/// The successor `key` derives from the refresh token `token`.
fn successor(token: &str, key: &[u8]) -> String {
    RefreshToken::parse(token)
        .unwrap()
        .successor(key)
        .expose()
        .to_owned()
}

/// A restart over the same database (the placeholder keeps `TestApp`'s own `TestDb` slot).
async fn restart(url: &str, keks: &str) -> TestApp {
    let (placeholder, _) = TestDb::create(crate::helpers::Backend::Sqlite).await;
    let keks = keks.to_owned();
    TestApp::on_database(placeholder, url.to_owned(), move |c| {
        c.key_encryption_keys = Some(keks.parse().unwrap());
    })
    .await
}

/// A refused refresh: `401 invalid_grant` as every refused refresh, never a 5xx.
fn assert_invalid_grant(response: &crate::helpers::TestResponse, reason: &str) {
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{reason}: {}",
        response.body
    );
    assert_eq!(response.error(), "invalid_grant", "{reason}");
}

/// The stored column is the XChaCha20-Poly1305 sealing of a 32-byte key under the KEK named
/// beside it: it never equals the key, holds no run of it, and differs between sessions.
async fn stored_rotation_keys_are_sealed_under_the_kek(app: TestApp) {
    let (_, a) = app.logged_in_user().await;
    let (_, b) = app.logged_in_user().await;
    let raw_a = raw_session(&app.database_url, &a.sid()).await;
    let raw_b = raw_session(&app.database_url, &b.sid()).await;
    for (tokens, raw) in [(&a, &raw_a), (&b, &raw_b)] {
        assert_eq!(raw.rotation_key_kek.as_deref(), Some("test-kek"));
        assert_eq!(raw.rotation_key.len(), 24 + 32 + 16, "nonce, key, tag");
        let key = opened(&app, &tokens.sid(), raw);
        assert_eq!(key.len(), 32);
        assert_ne!(raw.rotation_key, key);
        assert!(!shares_a_run(&raw.rotation_key, &key));
        // The key in the column is the one refresh uses.
        let next = Tokens::from_response(&app.refresh(&tokens.refresh).await);
        assert_eq!(next.refresh, successor(&tokens.refresh, &key));
    }
    assert_ne!(raw_a.rotation_key, raw_b.rotation_key);
}

/// The original attack (issue 10): with only the database's contents and an old refresh token,
/// HMAC(stored column, old token) — or any slice of the column in place of the key — is not the
/// live successor, and refreshing with it is refused. The same computation with the key the
/// column seals (which takes the KEK) does give it, so the test would see the hole.
async fn a_dump_and_an_old_refresh_token_do_not_derive_the_live_successor(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let live = Tokens::from_response(&app.refresh(&second.refresh).await);
    // The attacker: a dump, and the stolen `second` (an old token, no longer live).
    let dump = raw_session(&app.database_url, &live.sid()).await;
    let hashes = stored_token_hashes(&app.database_url).await;
    let column = &dump.rotation_key;
    let guesses = [
        column.as_slice(),
        &column[24..],
        &column[24..24 + 32],
        &column[..32],
    ];
    for guess in guesses {
        let forged = successor(&second.refresh, guess);
        assert_ne!(forged, live.refresh);
        assert!(
            !hashes.contains(&RefreshToken::parse(&forged).unwrap().hash()),
            "the forged token is no token of the session"
        );
        assert_invalid_grant(&app.refresh(&forged).await, "forged successor");
    }
    let key = opened(&app, &live.sid(), &dump);
    assert_eq!(
        successor(&second.refresh, &key),
        live.refresh,
        "with the KEK's help the successor is derived: the column is what protects it"
    );
}

/// Refresh works across a restart: the key sealed by one process opens in the next.
async fn refresh_works_across_a_restart(backend: crate::helpers::Backend) {
    let (db, url) = TestDb::create(backend).await;
    let first = TestApp::on_database(db, url.clone(), |_| {}).await;
    let (_, tokens) = first.logged_in_user().await;
    let tokens = Tokens::from_response(&first.refresh(&tokens.refresh).await);
    let before = raw_session(&url, &tokens.sid()).await;

    let second = restart(&url, test_support::TEST_KEK).await;
    let after = raw_session(&url, &tokens.sid()).await;
    assert_eq!(
        before.rotation_key, after.rotation_key,
        "a row under the current KEK is left alone"
    );
    let next = Tokens::from_response(&second.refresh(&tokens.refresh).await);
    assert_eq!(next.sid(), tokens.sid());
    Tokens::from_response(&second.refresh(&next.refresh).await);
}

/// The associated data is the session id: a sealed key copied onto another session (to give
/// it a key whose successors one can predict, or a known one) does not open there, and the
/// refresh is refused cleanly; the session is not revoked, so its own key brings it back.
async fn a_rotation_key_moved_to_another_session_does_not_open(app: TestApp) {
    let (_, a) = app.logged_in_user().await;
    let (_, b) = app.logged_in_user().await;
    let raw_a = raw_session(&app.database_url, &a.sid()).await;
    let raw_b = raw_session(&app.database_url, &b.sid()).await;
    write_raw_session(&app.database_url, &b.sid(), &raw_a).await;
    assert_invalid_grant(&app.refresh(&b.refresh).await, "a's key on b's row");
    assert_eq!(
        raw_session(&app.database_url, &b.sid()).await.rotation_key,
        raw_a.rotation_key,
        "nothing re-sealed it"
    );
    Tokens::from_response(&app.refresh(&a.refresh).await);

    write_raw_session(&app.database_url, &b.sid(), &raw_b).await;
    Tokens::from_response(&app.refresh(&b.refresh).await);
}

/// Reuse detection does not need the rotation key: an old refresh token still ends the session
/// where the key does not open (a replica without one of the KEKs, an altered row).
async fn an_old_token_ends_the_session_even_where_the_key_does_not_open(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let second = Tokens::from_response(&app.refresh(&first.refresh).await);
    let live = Tokens::from_response(&app.refresh(&second.refresh).await);
    let original = raw_session(&app.database_url, &live.sid()).await;
    let unknown = RawSession {
        rotation_key_kek: Some("kek-gone".to_owned()),
        ..original.clone()
    };
    write_raw_session(&app.database_url, &live.sid(), &unknown).await;
    assert_invalid_grant(&app.refresh(&first.refresh).await, "reuse");
    assert!(app.revoked_sids().await.contains(&live.sid()));
    write_raw_session(&app.database_url, &live.sid(), &original).await;
    assert_invalid_grant(&app.refresh(&live.refresh).await, "the session was revoked");
}

/// A key under a KEK this replica does not have, under a different key with the same id, or
/// altered: the refresh is `invalid_grant` (never a 5xx), the row is left as it was, and a
/// restart still starts (the row is counted, not fatal).
async fn a_rotation_key_that_does_not_open_is_refused_cleanly(backend: crate::helpers::Backend) {
    let (db, url) = TestDb::create(backend).await;
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let (_, tokens) = app.logged_in_user().await;
    let sid = tokens.sid();
    let original = raw_session(&url, &sid).await;
    let key = opened(&app, &sid, &original);

    let (impostor, _) = auth_api::kek::KeyEncryptionKeys::generate("test-kek").unwrap();
    let same_id_other_key = impostor.seal_rotation_key(&sid, &key).unwrap();
    let mut tampered = original.rotation_key.clone();
    tampered[30] ^= 1;
    let cases = [
        (
            RawSession {
                rotation_key: original.rotation_key.clone(),
                rotation_key_kek: Some("kek-gone".to_owned()),
            },
            "an unknown KEK",
        ),
        (
            RawSession {
                rotation_key: [same_id_other_key.nonce, same_id_other_key.ciphertext].concat(),
                rotation_key_kek: Some("test-kek".to_owned()),
            },
            "another key under the same KEK id",
        ),
        (
            RawSession {
                rotation_key: tampered,
                rotation_key_kek: Some("test-kek".to_owned()),
            },
            "a flipped bit",
        ),
        (
            RawSession {
                rotation_key: vec![1, 2, 3],
                rotation_key_kek: Some("test-kek".to_owned()),
            },
            "too short for a nonce",
        ),
    ];
    for (raw, reason) in &cases {
        write_raw_session(&url, &sid, raw).await;
        assert_invalid_grant(&app.refresh(&tokens.refresh).await, reason);
        assert_eq!(
            raw_session(&url, &sid).await.rotation_key,
            raw.rotation_key,
            "{reason}: left as it was"
        );
    }

    let restarted = restart(&url, test_support::TEST_KEK).await;
    assert_invalid_grant(&restarted.refresh(&tokens.refresh).await, "after a restart");
    write_raw_session(&url, &sid, &original).await;
    Tokens::from_response(&restarted.refresh(&tokens.refresh).await);
}

/// Two successors on from `token`, derived with `key`: what a dump's key and a stolen token
/// give once the owner has refreshed twice.
fn two_on(token: &str, key: &[u8]) -> String {
    successor(&successor(token, key), key)
}

/// SECURITY.md I 100 (F6): rows from before issue 10 hold the key in the clear
/// (`rotation_key_kek` NULL). A start replaces every one it finds by a new key sealed under
/// the KEK; a refresh replaces one written later (by a replica of an earlier version during a
/// rolling upgrade). Either way the session refreshes, then and afterwards, and the legacy key
/// — what a dump taken before the upgrade holds — plus the token stolen then no longer derives
/// the live successor.
async fn legacy_plaintext_rotation_keys_are_replaced_and_still_refresh(
    backend: crate::helpers::Backend,
) {
    let (db, url) = TestDb::create(backend).await;
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let legacy_key = *b"a legacy rotation key, 32 bytes!";
    let legacy = RawSession {
        rotation_key: legacy_key.to_vec(),
        rotation_key_kek: None,
    };

    // Replaced by the next start, before any refresh.
    let (_, at_start) = app.logged_in_user().await;
    write_raw_session(&url, &at_start.sid(), &legacy).await;
    // Replaced by a refresh.
    let (_, by_refresh) = app.logged_in_user().await;
    write_raw_session(&url, &by_refresh.sid(), &legacy).await;

    let next = Tokens::from_response(&app.refresh(&by_refresh.refresh).await);
    let replaced = raw_session(&url, &by_refresh.sid()).await;
    assert_eq!(replaced.rotation_key_kek.as_deref(), Some("test-kek"));
    assert!(!shares_a_run(&replaced.rotation_key, &legacy_key));
    let key = opened(&app, &by_refresh.sid(), &replaced);
    assert_ne!(key, legacy_key, "a new key, not the legacy one sealed");
    assert_eq!(next.refresh, successor(&by_refresh.refresh, &key));
    let live = Tokens::from_response(&app.refresh(&next.refresh).await);
    let forged = two_on(&by_refresh.refresh, &legacy_key);
    assert_ne!(
        live.refresh, forged,
        "the dump no longer derives the live token"
    );
    assert_invalid_grant(&app.refresh(&forged).await, "the dump's successor");
    Tokens::from_response(&app.refresh(&live.refresh).await);

    let restarted = restart(&url, test_support::TEST_KEK).await;
    let replaced = raw_session(&url, &at_start.sid()).await;
    assert_eq!(replaced.rotation_key_kek.as_deref(), Some("test-kek"));
    assert!(!shares_a_run(&replaced.rotation_key, &legacy_key));
    let key = opened(&restarted, &at_start.sid(), &replaced);
    assert_ne!(key, legacy_key, "a new key, not the legacy one sealed");
    let next = Tokens::from_response(&restarted.refresh(&at_start.refresh).await);
    assert_eq!(next.refresh, successor(&at_start.refresh, &key));
    let live = Tokens::from_response(&restarted.refresh(&next.refresh).await);
    let forged = two_on(&at_start.refresh, &legacy_key);
    assert_ne!(
        live.refresh, forged,
        "the dump no longer derives the live token"
    );
    assert_invalid_grant(&restarted.refresh(&forged).await, "the dump's successor");
    Tokens::from_response(&restarted.refresh(&live.refresh).await);
}

/// The one loss of replacing a key (SECURITY.md I 100): the grace-window retry of the live
/// token's predecessor, for a session refreshed just before its key was replaced, derives a
/// token that is not the live one. It is refused as `invalid_grant` like an unknown token —
/// not a 200 with a token that is no token, not a revocation — and the live token refreshes.
async fn a_grace_retry_after_a_key_replacement_is_refused_and_the_session_lives(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let live = Tokens::from_response(&app.refresh(&first.refresh).await);
    let legacy = RawSession {
        rotation_key: b"a legacy rotation key, 32 bytes!".to_vec(),
        rotation_key_kek: None,
    };
    write_raw_session(&app.database_url, &live.sid(), &legacy).await;
    let done =
        auth_api::service::sessions::reseal_rotation_keys(&app.state.store, app.state.ring.keks())
            .await
            .unwrap();
    assert_eq!(done.resealed, 1);
    let retry = app.refresh(&first.refresh).await;
    assert_invalid_grant(&retry, "the predecessor after the replacement");
    assert!(
        !app.revoked_sids().await.contains(&live.sid()),
        "not revoked"
    );
    let next = Tokens::from_response(&app.refresh(&live.refresh).await);
    assert_eq!(next.sid(), live.sid());
}

/// A rotation made by a replica of an earlier version (key in the clear, successor derived
/// with it) is retried within the grace window on an upgraded one: the retry uses the key as
/// stored and answers with the live token; the next rotation replaces the key.
async fn a_grace_retry_of_a_legacy_rotation_answers_the_live_token(app: TestApp) {
    let (_, first) = app.logged_in_user().await;
    let legacy_key = *b"a legacy rotation key, 32 bytes!";
    let legacy = RawSession {
        rotation_key: legacy_key.to_vec(),
        rotation_key_kek: None,
    };
    write_raw_session(&app.database_url, &first.sid(), &legacy).await;
    let by_old_replica = successor(&first.refresh, &legacy_key);
    let store = &app.state.store;
    let hash = RefreshToken::parse(&by_old_replica).unwrap().hash();
    assert!(store
        .rotate_refresh_token(&first.sid(), 0, &hash, app.clock.now())
        .await
        .unwrap());
    let retry = Tokens::from_response(&app.refresh(&first.refresh).await);
    assert_eq!(retry.refresh, by_old_replica, "the live token again");
    let next = Tokens::from_response(&app.refresh(&by_old_replica).await);
    assert_ne!(
        next.refresh,
        successor(&by_old_replica, &legacy_key),
        "replaced"
    );
    Tokens::from_response(&app.refresh(&next.refresh).await);
}

/// KEK rotation: with `new,old` a start replaces every rotation key by a new one under `new`
/// (not the old key sealed again: a leak of the old KEK then derives nothing live) and every
/// session still refreshes; then `new` alone suffices. The `keys` command replaces them too.
async fn kek_rotation_reseals_rotation_keys_and_logs_nobody_out(backend: crate::helpers::Backend) {
    let (db, url) = TestDb::create(backend).await;
    let first = TestApp::on_database(db, url.clone(), |_| {}).await;
    let (_, a) = first.logged_in_user().await;
    let (_, b) = first.logged_in_user().await;
    let a_before = opened(&first, &a.sid(), &raw_session(&url, &a.sid()).await);
    let b_before = opened(&first, &b.sid(), &raw_session(&url, &b.sid()).await);

    // `keys list` with the new KEK first: the operator's re-seal, no server start.
    let both = format!("{NEW_KEK},{}", test_support::TEST_KEK);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_auth-api"))
        .args(["keys", "list"])
        .env("AUTH_DATABASE_URL", &url)
        .env("AUTH_KEY_ENCRYPTION_KEYS", &both)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("2 sessions' rotation keys re-sealed under kek-2"),
        "{stdout}"
    );
    for (tokens, before) in [(&a, &a_before), (&b, &b_before)] {
        let raw = raw_session(&url, &tokens.sid()).await;
        assert_eq!(raw.rotation_key_kek.as_deref(), Some("kek-2"));
        let moved = both
            .parse::<auth_api::kek::KeyEncryptionKeys>()
            .unwrap()
            .open_rotation_key(&tokens.sid(), &sealed_of(&raw))
            .unwrap();
        assert_ne!(
            *moved, *before,
            "a new key, not the old one sealed under kek-2"
        );
    }

    // A session opened meanwhile under the old KEK is re-sealed by the next start.
    let (_, c) = first.logged_in_user().await;
    assert_eq!(
        raw_session(&url, &c.sid())
            .await
            .rotation_key_kek
            .as_deref(),
        Some("test-kek")
    );
    let second = restart(&url, &both).await;
    assert_eq!(
        raw_session(&url, &c.sid())
            .await
            .rotation_key_kek
            .as_deref(),
        Some("kek-2")
    );
    let a = Tokens::from_response(&second.refresh(&a.refresh).await);

    let third = restart(&url, NEW_KEK).await;
    for tokens in [&a, &b, &c] {
        Tokens::from_response(&third.refresh(&tokens.refresh).await);
    }
}

crate::on_every_store!(
    stored_rotation_keys_are_sealed_under_the_kek,
    a_dump_and_an_old_refresh_token_do_not_derive_the_live_successor,
    a_grace_retry_after_a_key_replacement_is_refused_and_the_session_lives,
    a_grace_retry_of_a_legacy_rotation_answers_the_live_token,
    a_rotation_key_moved_to_another_session_does_not_open,
    an_old_token_ends_the_session_even_where_the_key_does_not_open,
);

mod own_config {
    use super::*;

    crate::on_every_backend!(
        refresh_works_across_a_restart,
        a_rotation_key_that_does_not_open_is_refused_cleanly,
        legacy_plaintext_rotation_keys_are_replaced_and_still_refresh,
        kek_rotation_reseals_rotation_keys_and_logs_nobody_out,
    );
}
