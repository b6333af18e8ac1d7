//! Private key material at rest (issue 8): sealed under a key-encryption key, so that a
//! database dump alone cannot mint a token; KEK rotation; rows from before are sealed at start,
//! and a row in the clear written later is ignored until then.

use auth_api::{clock::Clock, kek::KeyEncryptionKeys, AppState, Config};
use auth_jwt::Algorithm;
use axum::http::StatusCode;
use sqlx::Row as _;

use crate::helpers::{header_of, kids, test_config, Backend, RawDb, TestApp, TestDb};

/// A second KEK, for rotation tests.
const NEW_KEK: &str = "kek-2:bmV3LWtleS1lbmNyeXB0aW9uLWtleS0zMi1ieXRlcyE";

/// One `signing_keys` row exactly as stored: what a dump holds.
#[derive(Debug)]
struct RawKey {
    kid: String,
    algorithm: String,
    secret: Vec<u8>,
    kek_id: Option<String>,
    nonce: Option<Vec<u8>>,
}

async fn raw_keys(database_url: &str) -> Vec<RawKey> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(database_url).await.unwrap();
    let rows = sqlx::query(
        "SELECT kid, algorithm, secret, kek_id, nonce FROM signing_keys ORDER BY activates_at, kid",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter()
        .map(|row| RawKey {
            kid: row.get("kid"),
            algorithm: row.get("algorithm"),
            secret: row.get("secret"),
            kek_id: row.get("kek_id"),
            nonce: row.get("nonce"),
        })
        .collect()
}

/// Whether any 16-byte run of `needle` appears in `haystack`.
fn shares_a_run(haystack: &[u8], needle: &[u8]) -> bool {
    needle
        .windows(16)
        .any(|run| haystack.windows(16).any(|w| w == run))
}

/// A config on `url` with `keks` (`None`: unset).
fn config_with(url: &str, keks: Option<&str>) -> Config {
    Config {
        key_encryption_keys: keks.map(|k| k.parse().unwrap()),
        ..test_config(url.to_owned())
    }
}

/// The start-up error of an app on `url` with `keks`, all causes joined.
async fn start_error(url: &str, keks: Option<&str>) -> String {
    let err = AppState::new(config_with(url, keks), Clock::frozen())
        .await
        .expect_err("the app started");
    format!("{err:#}")
}

/// The raw rows hold neither the HMAC secret nor any run of the PKCS#8 DER: each is the
/// XChaCha20-Poly1305 ciphertext (plaintext + 16-byte tag) under the KEK named beside it.
async fn stored_key_material_is_ciphertext(app: TestApp) {
    for alg in [Algorithm::HS256, Algorithm::EdDSA, Algorithm::RS256] {
        app.state
            .ring
            .rotate_to(app.clock.now(), alg)
            .await
            .unwrap();
    }
    let snapshot = app.state.ring.snapshot();
    let rows = raw_keys(&app.database_url).await;
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let key = &snapshot
            .keys()
            .iter()
            .find(|k| k.stored.kid == row.kid)
            .unwrap()
            .key;
        assert_eq!(row.algorithm, key.algorithm().as_str());
        let private = key.to_private_bytes().unwrap();
        assert_eq!(row.kek_id.as_deref(), Some("test-kek"), "{}", row.algorithm);
        assert_eq!(row.nonce.as_ref().map(Vec::len), Some(24));
        assert_eq!(row.secret.len(), private.len() + 16);
        assert!(
            !shares_a_run(&row.secret, &private),
            "{}: the stored row holds private material",
            row.algorithm
        );
    }
}

/// A KEK of the right id but the wrong bytes, or a KEK list without the rows' id, stops the
/// start with an error naming the variable and the id; nothing is overwritten.
async fn a_wrong_kek_fails_clearly(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let before = raw_keys(&url).await;

    let (impostor, text) = KeyEncryptionKeys::generate("test-kek").unwrap();
    drop(impostor);
    let wrong_bytes = {
        use secrecy::ExposeSecret as _;
        start_error(&url, Some(text.expose_secret())).await
    };
    assert!(
        wrong_bytes.contains("AUTH_KEY_ENCRYPTION_KEYS"),
        "{wrong_bytes}"
    );
    assert!(wrong_bytes.contains("\"test-kek\""), "{wrong_bytes}");
    assert!(wrong_bytes.contains("different key"), "{wrong_bytes}");

    let unknown_id = start_error(&url, Some(NEW_KEK)).await;
    assert!(
        unknown_id.contains("AUTH_KEY_ENCRYPTION_KEYS"),
        "{unknown_id}"
    );
    assert!(unknown_id.contains("does not hold"), "{unknown_id}");
    assert!(!unknown_id.contains("bmV3LWtleS1l"), "no key in messages");

    let after = raw_keys(&url).await;
    assert_eq!(
        before[0].secret, after[0].secret,
        "a failed start changes nothing"
    );
    let (_, tokens) = app.logged_in_user().await;
    assert_eq!(app.validate(&tokens.access).await.status, StatusCode::OK);
}

/// KEK rotation: with `new,old` every row is re-sealed under `new` at start and every token
/// still validates; then `new` alone suffices and `old` alone no longer opens the ring.
async fn kek_rotation_reseals_every_key_and_logs_nobody_out(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
    let first = TestApp::on_database(db, url.clone(), |_| {}).await;
    first
        .state
        .ring
        .rotate_to(first.clock.now(), Algorithm::HS256)
        .await
        .unwrap();
    let (_, tokens) = first.logged_in_user().await;

    let both = format!("{NEW_KEK},{}", test_support::TEST_KEK);
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let second = TestApp::on_database(placeholder, url.clone(), |c| {
        c.key_encryption_keys = Some(both.parse().unwrap());
    })
    .await;
    let rows = raw_keys(&url).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.kek_id.as_deref(), Some("kek-2"), "{}", row.kid);
    }
    assert_eq!(second.validate(&tokens.access).await.status, StatusCode::OK);

    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let third = TestApp::on_database(placeholder, url.clone(), |c| {
        c.key_encryption_keys = Some(NEW_KEK.parse().unwrap());
    })
    .await;
    assert_eq!(third.validate(&tokens.access).await.status, StatusCode::OK);
    let (_, fresh) = third.logged_in_user().await;
    assert_eq!(first.validate(&fresh.access).await.status, StatusCode::OK);

    let old_only = start_error(&url, Some(test_support::TEST_KEK)).await;
    assert!(old_only.contains("\"kek-2\""), "{old_only}");
}

/// Rows written before encryption at rest (an HMAC secret in the clear) are sealed at the next
/// start, once, even by two replicas starting together; the key and its tokens live on.
async fn plaintext_keys_from_before_are_sealed_at_start(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
    auth_api::store::Store::open(&url).await.unwrap();
    let secret = *b"a legacy HS256 secret of 32 byte";
    let now = Clock::frozen().now();
    let raw = RawDb::connect(&url).await;
    sqlx::query("INSERT INTO key_ring_bootstrap (id) VALUES (1)")
        .execute(&raw.pool)
        .await
        .unwrap();
    sqlx::query(raw.sql(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, activates_at) \
         VALUES ('legacy', 'HS256', $1, $2, $3)",
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, activates_at) \
         VALUES ('legacy', 'HS256', ?, ?, ?)",
    ))
    .bind(secret.to_vec())
    .bind(now - 3600)
    .bind(now - 3600)
    .execute(&raw.pool)
    .await
    .unwrap();
    raw.close().await;

    let (a, b) = tokio::join!(
        AppState::new(
            config_with(&url, Some(test_support::TEST_KEK)),
            Clock::frozen()
        ),
        AppState::new(
            config_with(&url, Some(test_support::TEST_KEK)),
            Clock::frozen()
        ),
    );
    a.unwrap();
    b.unwrap();
    let rows = raw_keys(&url).await;
    assert_eq!(rows.len(), 1, "no new key: the legacy one signs");
    assert_eq!(rows[0].kek_id.as_deref(), Some("test-kek"));
    assert!(!shares_a_run(&rows[0].secret, &secret));

    let app = TestApp::on_database(db, url, |_| {}).await;
    assert_eq!(app.signer_kid(), "legacy");
    let (_, tokens) = app.logged_in_user().await;
    assert_eq!(header_of(&tokens.access)["alg"], "HS256");
    assert_eq!(app.validate(&tokens.access).await.status, StatusCode::OK);
    let claims = crate::helpers::claims_of(&tokens.access).to_string();
    let by_the_old_secret = test_support::sign_raw(
        &secret,
        r#"{"alg":"HS256","typ":"at+jwt","kid":"legacy"}"#,
        &claims,
    );
    assert_eq!(
        app.validate(&by_the_old_secret).await.status,
        StatusCode::OK,
        "the sealed key is the same key"
    );
}

/// Inserts a key in the clear (`kek_id` NULL), as a replica of an earlier version writes one, or
/// as anyone who can write to the database could.
async fn insert_plaintext_key(url: &str, kid: &str, alg: Algorithm, material: &[u8], at: i64) {
    let raw = RawDb::connect(url).await;
    sqlx::query(raw.sql(
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, activates_at) \
         VALUES ($1, $2, $3, $4, $5)",
        "INSERT INTO signing_keys (kid, algorithm, secret, created_at, activates_at) \
         VALUES (?, ?, ?, ?, ?)",
    ))
    .bind(kid)
    .bind(alg.as_str())
    .bind(material.to_vec())
    .bind(at)
    .bind(at)
    .execute(&raw.pool)
    .await
    .unwrap();
    raw.close().await;
}

/// The kids of the public JWKS and of `/internal/keys`.
async fn published_kids(app: &TestApp) -> (Vec<String>, Vec<String>) {
    let public = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(public.status, StatusCode::OK);
    let internal = app.internal_keys().await;
    assert_eq!(internal.status, StatusCode::OK);
    (kids(&public), kids(&internal))
}

/// A key written in the clear after the start (an HS256 secret, an ES256 private key) is not
/// loaded by a ring reload — neither published nor accepted nor signing, though it would be
/// the newest signer — so the AEAD cannot be bypassed by writing to the database. A restart
/// seals it (the start-up re-seal of rows from before encryption at rest), and from then on it
/// is published, verifies and signs.
async fn a_key_written_in_the_clear_is_ignored_until_a_restart_seals_it(backend: Backend) {
    let (db, url) = TestDb::create(backend).await;
    let app = TestApp::on_database(db, url.clone(), |_| {}).await;
    let original = app.signer_kid();
    let (_, tokens) = app.logged_in_user().await;
    let claims = crate::helpers::claims_of(&tokens.access).to_string();

    let secret = *b"an HS256 secret in the clear! 32";
    let es256 =
        auth_jwt::Key::generate("intruder-es", Algorithm::ES256, &mut rand::rngs::OsRng).unwrap();
    let t0 = app.clock.now();
    insert_plaintext_key(&url, "intruder-hs", Algorithm::HS256, &secret, t0 - 60).await;
    let der = es256.to_private_bytes().unwrap();
    insert_plaintext_key(&url, "intruder-es", Algorithm::ES256, &der, t0 + 1).await;
    let by_hs = test_support::sign_raw(
        &secret,
        r#"{"alg":"HS256","typ":"at+jwt","kid":"intruder-hs"}"#,
        &claims,
    );
    let by_es = test_support::sign_raw_with(
        &es256,
        r#"{"alg":"ES256","typ":"at+jwt","kid":"intruder-es"}"#,
        &claims,
    );

    // Once `intruder-es` activates, it would be the newest active key.
    app.advance(std::time::Duration::from_secs(1));
    app.state.ring.reload().await.unwrap();
    let (public, internal) = published_kids(&app).await;
    assert_eq!(public, std::slice::from_ref(&original), "public JWKS");
    assert_eq!(internal, std::slice::from_ref(&original), "/internal/keys");
    assert_eq!(
        app.signer_kid(),
        original,
        "a key in the clear does not sign"
    );
    for (forged, name) in [(&by_hs, "HS256"), (&by_es, "ES256")] {
        let response = app.validate(forged).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{name}");
    }
    assert_eq!(app.validate(&tokens.access).await.status, StatusCode::OK);
    let again = app.state.ring.snapshot();
    assert!(!again.knows("intruder-hs") && !again.knows("intruder-es"));
    let rows = raw_keys(&url).await;
    assert!(
        rows.iter()
            .filter(|r| r.kid.starts_with("intruder"))
            .all(|r| r.kek_id.is_none()),
        "a reload seals nothing"
    );

    // A restart seals them and uses them.
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let restarted = TestApp::on_database(placeholder, url.clone(), |_| {}).await;
    restarted.advance(std::time::Duration::from_secs(
        u64::try_from(t0 + 1 - restarted.clock.now()).unwrap_or(0),
    ));
    for row in raw_keys(&url).await {
        assert_eq!(row.kek_id.as_deref(), Some("test-kek"), "{}", row.kid);
    }
    assert!(!shares_a_run(
        &raw_keys(&url)
            .await
            .into_iter()
            .find(|r| r.kid == "intruder-es")
            .unwrap()
            .secret,
        &der
    ));
    let (public, internal) = published_kids(&restarted).await;
    assert!(public.contains(&"intruder-es".to_owned()), "{public:?}");
    assert!(
        !public.contains(&"intruder-hs".to_owned()),
        "HMAC keys are never public"
    );
    for kid in [&original, "intruder-hs", "intruder-es"] {
        assert!(internal.iter().any(|k| k == kid), "{kid}: {internal:?}");
    }
    assert_eq!(restarted.signer_kid(), "intruder-es");
    for (forged, name) in [(&by_hs, "HS256"), (&by_es, "ES256")] {
        let response = restarted.validate(forged).await;
        assert_eq!(response.status, StatusCode::OK, "{name}: {}", response.body);
    }
}

crate::on_every_store!(stored_key_material_is_ciphertext);

mod own_config {
    use super::*;

    crate::on_every_backend!(
        a_wrong_kek_fails_clearly,
        kek_rotation_reseals_every_key_and_logs_nobody_out,
        plaintext_keys_from_before_are_sealed_at_start,
        a_key_written_in_the_clear_is_ignored_until_a_restart_seals_it,
    );
}

/// The newcomer path: SQLite without `AUTH_KEY_ENCRYPTION_KEYS` creates `auth.db.kek` beside
/// the database (owner-only), and the next start reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_without_a_kek_uses_a_private_key_file_beside_the_database() {
    let (db, url) = TestDb::create(Backend::Sqlite).await;
    let path = std::path::PathBuf::from(format!("{}.kek", url.trim_start_matches("sqlite://")));
    assert!(!path.exists());
    let first = TestApp::on_database(db, url.clone(), |c| c.key_encryption_keys = None).await;
    let text = std::fs::read_to_string(&path).expect("the key file");
    let id = text.split(':').next().unwrap();
    assert!(id.starts_with("file-"), "{text:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(raw_keys(&url).await[0].kek_id.as_deref(), Some(id));
    let (_, tokens) = first.logged_in_user().await;

    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let second =
        TestApp::on_database(placeholder, url.clone(), |c| c.key_encryption_keys = None).await;
    assert_eq!(second.validate(&tokens.access).await.status, StatusCode::OK);

    // Moving to production's variable: the file still opens what it sealed, once.
    let (placeholder, _) = TestDb::create(Backend::Sqlite).await;
    let third = TestApp::on_database(placeholder, url.clone(), |_| {}).await;
    assert_eq!(raw_keys(&url).await[0].kek_id.as_deref(), Some("test-kek"));
    assert_eq!(third.validate(&tokens.access).await.status, StatusCode::OK);
}

/// A server store (PostgreSQL, MySQL) has no file beside it that every replica would share:
/// the variable is required.
async fn a_server_store_without_a_kek_refuses_to_start_naming_the_variable(backend: Backend) {
    let (_db, url) = TestDb::create(backend).await;
    let err = start_error(&url, None).await;
    assert!(err.contains("AUTH_KEY_ENCRYPTION_KEYS is not set"), "{err}");
}

mod server_stores {
    use super::*;

    crate::on_server_backends!(a_server_store_without_a_kek_refuses_to_start_naming_the_variable);
}
