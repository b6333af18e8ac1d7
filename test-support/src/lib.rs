//! Test support shared by auth-api's API tests and the end-to-end tests: a database per test on
//! either store, and compact JWS forging for tokens our encoder would never produce.
//!
//! Tests panic on set-up failures, loudly and naming what is missing: a missing PostgreSQL is a
//! failure, never a skip.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use sqlx::{Connection, Executor, PgConnection};

/// The PostgreSQL server tests create their databases on: `AUTH_TEST_POSTGRES_URL`, default
/// the development machines' `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_admin_url() -> String {
    std::env::var("AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on [`postgres_admin_url`].
    Postgres,
}

/// A database that exists for one test and is removed when dropped.
#[derive(Debug)]
pub enum TestDb {
    /// Held for its `Drop`, which deletes the directory and the file in it.
    Sqlite {
        /// The directory holding `auth.db`.
        _dir: tempfile::TempDir,
    },
    /// Dropped with `DROP DATABASE … WITH (FORCE)`.
    Postgres {
        /// The database name.
        name: String,
    },
}

impl TestDb {
    /// Creates an empty database and returns it with its URL.
    ///
    /// # Panics
    /// When the database cannot be created, naming the server and how to start it.
    pub async fn create(backend: Backend) -> (Self, String) {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("cannot create a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("auth.db").display());
                (Self::Sqlite { _dir: dir }, url)
            }
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin} ({e}): start it with \
                         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                         or set AUTH_TEST_POSTGRES_URL"
                    )
                });
                let name = format!("auth_test_{}", uuid::Uuid::new_v4().simple());
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("cannot create the test database");
                let Some((server, _)) = admin.rsplit_once('/') else {
                    panic!("AUTH_TEST_POSTGRES_URL needs a database path");
                };
                let url = format!("{server}/{name}");
                (Self::Postgres { name }, url)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Self::Postgres { name } = self else {
            return;
        };
        let name = name.clone();
        // Drop may run inside or outside a runtime: a thread with its own is safe in both.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = conn.execute(drop.as_str()).await;
                }
            });
        })
        .join();
    }
}

/// A compact JWS of exactly these header and payload JSON texts, HMAC-SHA-256'd with `secret`:
/// for tokens our encoder would never produce (duplicate members, `alg: none` headers, claims of
/// the wrong type), signed with the real key so that only the property under test is wrong.
pub fn sign_raw(secret: &[u8], header_json: &str, payload_json: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(payload_json)
    );
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// `alg: none` with an empty signature: the classic unsigned token.
pub fn unsigned(payload_json: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"at+jwt"}"#);
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(payload_json))
}

/// The decoded JSON of one part (0 header, 1 claims) of a JWT, unverified.
///
/// # Panics
/// When `token` is not a JWT.
pub fn jwt_part(token: &str, index: usize) -> serde_json::Value {
    let part = token.split('.').nth(index).expect("not a JWT");
    let bytes = URL_SAFE_NO_PAD.decode(part).expect("not base64url");
    serde_json::from_slice(&bytes).expect("not JSON")
}
