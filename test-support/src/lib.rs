//! Test support shared by auth-api's API tests and the end-to-end tests: a database per test on
//! any of the three stores (a SQLite file, a fresh PostgreSQL database, a fresh MySQL/MariaDB
//! database, each removed when the test ends), and compact JWS forging, with any of our
//! algorithms, for tokens our encoder would never produce; and a real SMTP server to deliver
//! mail to ([`smtp_sink`]).
//!
//! Tests panic on set-up failures, loudly and naming what is missing: a missing PostgreSQL or
//! MariaDB is a failure, never a skip.

pub mod captured_log;
pub mod ports;
pub mod smtp_sink;

pub use captured_log::CapturedLog;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use sqlx::{Connection, Executor, MySqlConnection, PgConnection};

/// The PostgreSQL server tests create their databases on: `AUTH_TEST_POSTGRES_URL`, default
/// the development machines' `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_admin_url() -> String {
    std::env::var("AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The MySQL or MariaDB server tests create their databases on: `AUTH_TEST_MYSQL_URL`, default
/// the development machines' MariaDB, `mysql://root@127.0.0.1:3306/mysql` (a user allowed to
/// create and drop databases; the path names any database it may connect to).
pub fn mysql_admin_url() -> String {
    std::env::var("AUTH_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/mysql".to_owned())
}

/// A key-encryption key for tests (`AUTH_KEY_ENCRYPTION_KEYS` syntax): PostgreSQL and MySQL
/// refuse to start without one. Parse it into auth-api's `Config::key_encryption_keys`.
pub const TEST_KEK: &str = "test-kek:dGVzdC1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM";

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on [`postgres_admin_url`].
    Postgres,
    /// A fresh database on [`mysql_admin_url`] (MariaDB on the development machines).
    Mysql,
}

impl Backend {
    /// The store a database URL names (`sqlite:`, `postgres://`, `postgresql://`, `mysql://`,
    /// `mariadb://`).
    ///
    /// # Panics
    /// On any other scheme.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::Postgres
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Self::Mysql
        } else {
            panic!("not a database URL of ours: {url}")
        }
    }
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
    /// Dropped with `DROP DATABASE IF EXISTS …`, after its connections are killed (MySQL has no
    /// `WITH (FORCE)`, and a connection left inside a transaction would hold the drop up).
    Mysql {
        /// The database name.
        name: String,
    },
}

/// `url` with its database (the last path segment) replaced by `name`, query string kept.
fn with_database(url: &str, name: &str, variable: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(base, query)| (base, Some(query)));
    let Some((server, _)) = base
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//"))
    else {
        panic!("{variable} needs a database path: {url}");
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

impl TestDb {
    /// Creates an empty database and returns it with its URL.
    ///
    /// # Panics
    /// When the database cannot be created, naming the server and how to start it.
    pub async fn create(backend: Backend) -> (Self, String) {
        let name = format!("auth_test_{}", uuid::Uuid::new_v4().simple());
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
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("cannot create the test database");
                let url = with_database(&admin, &name, "AUTH_TEST_POSTGRES_URL");
                (Self::Postgres { name }, url)
            }
            Backend::Mysql => {
                let admin = mysql_admin_url();
                let mut conn = MySqlConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "MariaDB (or MySQL) is not reachable at {admin} ({e}): start it with \
                         `/etc/init.d/mariadb start` (install it with \
                         `apt-get install mariadb-server`) or set AUTH_TEST_MYSQL_URL"
                    )
                });
                // The character set and collation the store expects of a database it is given:
                // 4-byte UTF-8, compared byte for byte.
                conn.execute(
                    format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
                        .as_str(),
                )
                .await
                .expect("cannot create the test database");
                let url = with_database(&admin, &name, "AUTH_TEST_MYSQL_URL");
                (Self::Mysql { name }, url)
            }
        }
    }

    /// Which store this database is on.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Sqlite { .. } => Backend::Sqlite,
            Self::Postgres { .. } => Backend::Postgres,
            Self::Mysql { .. } => Backend::Mysql,
        }
    }
}

/// Drops a PostgreSQL test database, its connections cut.
async fn drop_postgres(name: &str) {
    if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = conn.execute(drop.as_str()).await;
    }
}

/// Drops a MySQL test database: first kills the connections still on it (a pool closing in the
/// background, a transaction a failed test left open), as PostgreSQL's `WITH (FORCE)` does.
/// Failures are printed, not raised: this runs in `Drop`.
async fn drop_mysql(name: &str) {
    let result: Result<(), sqlx::Error> = async {
        let mut conn = MySqlConnection::connect(&mysql_admin_url()).await?;
        // Never wait long on a lock a connection we failed to kill still holds.
        conn.execute("SET SESSION lock_wait_timeout = 10").await?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
        )
        .bind(name)
        .fetch_all(&mut conn)
        .await?;
        for id in ids {
            // The connection may have ended meanwhile.
            let _ = conn.execute(format!("KILL CONNECTION {id}").as_str()).await;
        }
        conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
            .await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("cannot drop the MySQL test database {name}: {e}");
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (backend, name) = match self {
            Self::Sqlite { .. } => return,
            Self::Postgres { name } => (Backend::Postgres, name.clone()),
            Self::Mysql { name } => (Backend::Mysql, name.clone()),
        };
        // Drop may run inside or outside a runtime: a thread with its own is safe in both.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                match backend {
                    Backend::Postgres => drop_postgres(&name).await,
                    Backend::Mysql => drop_mysql(&name).await,
                    Backend::Sqlite => {}
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

/// A compact JWS of exactly these header and payload JSON texts, signed with `key` whatever its
/// algorithm (HS256 MAC, ES256 `r||s`, Ed25519, RS256 PKCS#1 v1.5), independently of
/// `auth-jwt`'s signing code: only the key's material comes from it.
///
/// # Panics
/// When `key` is a public key alone.
pub fn sign_raw_with(key: &auth_jwt::Key, header_json: &str, payload_json: &str) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json),
        URL_SAFE_NO_PAD.encode(payload_json)
    );
    let signature = sign_bytes(key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The JWS signature of `message` with `key`.
///
/// # Panics
/// When `key` is a public key alone.
pub fn sign_bytes(key: &auth_jwt::Key, message: &[u8]) -> Vec<u8> {
    use auth_jwt::Algorithm;
    use p256::pkcs8::DecodePrivateKey as _;
    let private = key.to_private_bytes().expect("signing needs a private key");
    match key.algorithm() {
        Algorithm::HS256 => {
            let mut mac =
                <Hmac<sha2::Sha256> as Mac>::new_from_slice(&private).expect("HMAC takes any key");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        Algorithm::ES256 => {
            use p256::ecdsa::signature::Signer as _;
            let signing = p256::ecdsa::SigningKey::from_pkcs8_der(&private).expect("a P-256 key");
            let signature: p256::ecdsa::Signature = signing.sign(message);
            signature.to_bytes().to_vec()
        }
        Algorithm::EdDSA => {
            use ed25519_dalek::Signer as _;
            let signing =
                ed25519_dalek::SigningKey::from_pkcs8_der(&private).expect("an Ed25519 key");
            signing.sign(message).to_bytes().to_vec()
        }
        Algorithm::RS256 => {
            use rsa::signature::{SignatureEncoding as _, Signer as _};
            let private = rsa::RsaPrivateKey::from_pkcs8_der(&private).expect("an RSA key");
            rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private)
                .sign(message)
                .to_vec()
        }
        other => panic!("no signer for {other}"),
    }
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

/// SECURITY.md B 6-19 and 26 as tokens: each is `valid` (an access token signed with `secret`
/// under `kid`) changed in exactly one way and, where a signature is involved, re-signed with
/// the real key, so that only the property under test is wrong. `refresh_token` is presented
/// as a bearer token too. Every one must be refused with 401 `invalid_token`.
///
/// # Panics
/// When `valid` is not a JWT with a claims object, or `secret` is shorter than 32 bytes.
pub fn forged_tokens(
    valid: &str,
    secret: &[u8],
    kid: &str,
    refresh_token: &str,
) -> Vec<(&'static str, String)> {
    let key = auth_jwt::Key::hs256(kid, secret).expect("an HS256 secret of 32 bytes or more");
    forged_tokens_with(valid, &key, refresh_token)
}

/// [`forged_tokens`] for a key of any algorithm (`key` signed `valid`, and its kid is the
/// header's). Keys of the public-key algorithms add the algorithm-confusion cases: the token
/// re-signed as HS256 with the public key (SubjectPublicKeyInfo DER, then the JWK's bytes) as
/// the HMAC secret, a signature of the wrong shape, and a foreign key of the same algorithm
/// reusing our kid.
///
/// # Panics
/// When `valid` is not a JWT with a claims object, or `key` cannot sign.
pub fn forged_tokens_with(
    valid: &str,
    key: &auth_jwt::Key,
    refresh_token: &str,
) -> Vec<(&'static str, String)> {
    let kid = key.kid();
    let alg = key.algorithm().as_str();
    use serde_json::{json, Value};
    let claims = jwt_part(valid, 1);
    let now = claims["iat"].as_i64().expect("the token has an iat");
    let body = claims.to_string();
    let header = |changes: Value| {
        let mut h = json!({"alg": alg, "typ": "at+jwt", "kid": kid});
        for (name, value) in changes.as_object().expect("an object of changes") {
            match value {
                Value::Null => drop(h.as_object_mut().map(|h| h.remove(name))),
                value => h[name] = value.clone(),
            }
        }
        h.to_string()
    };
    let with = |name: &str, value: Value| {
        let mut c = claims.clone();
        match value {
            Value::Null => drop(c.as_object_mut().map(|c| c.remove(name))),
            value => c[name] = value,
        }
        c.to_string()
    };
    let sign =
        |header_json: String, payload_json: String| sign_raw_with(key, &header_json, &payload_json);
    let issuer = claims["iss"]
        .as_str()
        .expect("the token has an iss")
        .to_owned();
    let ours = header(json!({}));
    let flipped_payload = {
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let mut payload = parts[1].clone().into_bytes();
        payload[5] ^= 0x01;
        parts[1] = String::from_utf8(payload).expect("base64url stays ASCII");
        parts.join(".")
    };
    let mut cases = vec![
        ("B6 alg none, empty signature", unsigned(&body)),
        (
            "B7/8 alg HS384 on the key",
            sign(header(json!({"alg": "HS384"})), body.clone()),
        ),
        (
            "B9 unknown kid",
            sign(header(json!({"kid": "unknown"})), body.clone()),
        ),
        (
            "B9 kid path traversal",
            sign(header(json!({"kid": "../../etc/passwd"})), body.clone()),
        ),
        (
            "B9 kid SQL",
            sign(header(json!({"kid": "' OR 1=1 --"})), body.clone()),
        ),
        (
            "B9 kid NUL",
            sign(header(json!({"kid": "a\u{0}b"})), body.clone()),
        ),
        (
            "B9 kid of 10 KB",
            sign(header(json!({"kid": "k".repeat(10_000)})), body.clone()),
        ),
        (
            "B10 jku and jwk to the attacker's key, signed with it",
            sign_raw(
                b"the attacker's own key, 32 bytes+",
                &header(
                    json!({"jku": "https://evil.example/jwks", "jwk": {"kty": "oct", "k": "YXR0YWNrZXI"}}),
                ),
                &body,
            ),
        ),
        (
            "B11 typ missing",
            sign(header(json!({"typ": null})), body.clone()),
        ),
        (
            "B11 typ JWT",
            sign(header(json!({"typ": "JWT"})), body.clone()),
        ),
        (
            "B11/26 typ rt+jwt",
            sign(header(json!({"typ": "rt+jwt"})), body.clone()),
        ),
        (
            "crit header",
            sign(header(json!({"crit": ["exp"]})), body.clone()),
        ),
        (
            "B12 exp past the leeway",
            sign(ours.clone(), with("exp", json!(now - 3600))),
        ),
        (
            "B12 exp missing",
            sign(ours.clone(), with("exp", Value::Null)),
        ),
        (
            "B12 exp a string",
            sign(ours.clone(), with("exp", json!("never"))),
        ),
        (
            "B13 nbf in the future",
            sign(ours.clone(), with("nbf", json!(now + 3600))),
        ),
        (
            "B14 iat in the future",
            sign(ours.clone(), with("iat", json!(now + 3600))),
        ),
        (
            "B15 aud missing",
            sign(ours.clone(), with("aud", Value::Null)),
        ),
        ("B15 aud empty", sign(ours.clone(), with("aud", json!([])))),
        (
            "B15 aud someone else's",
            sign(ours.clone(), with("aud", json!(["billing"]))),
        ),
        (
            "B16 iss with a trailing slash",
            sign(ours.clone(), with("iss", json!(format!("{issuer}/")))),
        ),
        (
            "B16 iss in another case",
            sign(ours.clone(), with("iss", json!(issuer.to_uppercase()))),
        ),
        (
            "B17 sub missing",
            sign(ours.clone(), with("sub", Value::Null)),
        ),
        (
            "B17 jti missing",
            sign(ours.clone(), with("jti", Value::Null)),
        ),
        (
            "B17 sid missing",
            sign(ours.clone(), with("sid", Value::Null)),
        ),
        (
            "B17 iat missing",
            sign(ours.clone(), with("iat", Value::Null)),
        ),
        (
            "B18 duplicate sub claim",
            sign(
                ours.clone(),
                format!(r#"{{"sub":"someone-else",{}"#, &body[1..]),
            ),
        ),
        (
            "B18 duplicate header member",
            sign(
                format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}","kid":"{kid}"}}"#),
                body.clone(),
            ),
        ),
        ("B19 payload bit flipped", flipped_payload),
        (
            "B19 signature truncated",
            valid[..valid.len() - 4].to_owned(),
        ),
        (
            "B19 two segments",
            valid
                .rsplit_once('.')
                .map_or_else(String::new, |(rest, _)| rest.to_owned()),
        ),
        ("B19 four segments", format!("{valid}.e30")),
        (
            "B19 JWE-shaped, five segments",
            "eyJhbGciOiJkaXIifQ..iv.ct.tag".to_owned(),
        ),
        ("B19 padded base64", format!("{valid}==")),
        (
            "B26 refresh token as a bearer token",
            refresh_token.to_owned(),
        ),
        ("an 8 KiB blob", "a".repeat(9000)),
    ];
    if !key.algorithm().is_symmetric() {
        cases.extend(confusion_cases(valid, key, &claims));
    }
    cases
}

/// The algorithm-confusion and foreign-key forgeries against a public-key `key`.
fn confusion_cases(
    valid: &str,
    key: &auth_jwt::Key,
    claims: &serde_json::Value,
) -> Vec<(&'static str, String)> {
    use auth_jwt::{Algorithm, Jwk};
    use serde_json::json;
    let kid = key.kid();
    let body = claims.to_string();
    let hs256 = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}).to_string();
    let ours = json!({"alg": key.algorithm().as_str(), "typ": "at+jwt", "kid": kid}).to_string();
    let public_der = key
        .public_key_der()
        .expect("a public-key algorithm")
        .to_vec();
    let jwk_json =
        serde_json::to_string(&Jwk::public(key).expect("a public JWK")).expect("a JWK serialises");
    let (signing_input, signature) = valid.rsplit_once('.').expect("a JWT");
    let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
    let foreign = auth_jwt::Key::generate(kid, key.algorithm(), &mut rand::rngs::OsRng)
        .expect("a foreign key");
    let mut cases = vec![
        (
            "B7 alg HS256 keyed with the public key's DER",
            sign_raw(&public_der, &hs256, &body),
        ),
        (
            "B7 alg HS256 keyed with the public JWK's JSON",
            sign_raw(jwk_json.as_bytes(), &hs256, &body),
        ),
        (
            "a foreign key of the same algorithm reusing our kid",
            sign_raw_with(&foreign, &ours, &body),
        ),
        (
            "signature one byte short",
            format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(&signature[..signature.len() - 1])
            ),
        ),
        (
            "signature one byte long",
            format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode([signature.as_slice(), &[0]].concat())
            ),
        ),
        ("empty signature", format!("{signing_input}.")),
    ];
    if key.algorithm() == Algorithm::ES256 {
        let der = auth_jwt::es256_signature_to_der(&signature).expect("a 64-byte signature");
        cases.push((
            "ES256 signature DER-encoded instead of r||s",
            format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(der)),
        ));
    }
    cases
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a database of this name exists on the MySQL server.
    async fn mysql_database_exists(name: &str) -> bool {
        let mut conn = MySqlConnection::connect(&mysql_admin_url()).await.unwrap();
        let found: Option<String> = sqlx::query_scalar(
            "SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA \
             WHERE SCHEMA_NAME = ?",
        )
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        found.is_some()
    }

    /// A test that fails while it holds a transaction open (a row lock, a table it altered)
    /// still leaves no database behind: the drop kills its connection first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mysql_test_database_is_dropped_even_under_an_open_transaction() {
        let (db, url) = TestDb::create(Backend::Mysql).await;
        let TestDb::Mysql { name } = &db else {
            panic!("not a MySQL database: {db:?}");
        };
        let name = name.clone();
        let mut conn = MySqlConnection::connect(&url).await.unwrap();
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY) ENGINE = InnoDB")
            .await
            .unwrap();
        conn.execute("BEGIN").await.unwrap();
        conn.execute("INSERT INTO t VALUES (1)").await.unwrap();
        assert!(mysql_database_exists(&name).await);

        drop(db);

        assert!(!mysql_database_exists(&name).await, "{name} is left");
        assert!(conn.ping().await.is_err(), "the connection was killed");
    }

    #[test]
    fn a_test_database_url_keeps_the_server_and_the_query() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/mysql", "t1", "V"),
            "mysql://root@127.0.0.1:3306/t1"
        );
        assert_eq!(
            with_database("mysql://u:p@db:3307/x?ssl-mode=disabled", "t2", "V"),
            "mysql://u:p@db:3307/t2?ssl-mode=disabled"
        );
        assert_eq!(Backend::of_url("mariadb://h/db"), Backend::Mysql);
        assert_eq!(Backend::of_url("sqlite:///tmp/a.db"), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgresql://h/db"), Backend::Postgres);
    }
}
