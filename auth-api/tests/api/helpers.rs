//! `TestApp`: the real router on a fresh database of any store, one method per endpoint;
//! `RawDb`: the same database as stored, for what the API cannot do; and the macros that run
//! each test on every store.

use std::time::Duration;

use auth_api::{clock::Clock, AppState, Config};
use axum::{
    body::Body,
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub use test_support::{Backend, TestDb};

/// The internal token every test app is configured with.
pub const INTERNAL_TOKEN: &str = "test-internal-token-0123456789abcdef";

/// The admin token of every test app (`AUTH_ADMIN_TOKEN`, the Admin API's).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";

/// The configuration of every test app: cheap bcrypt, ports 0, an internal token, a
/// key-encryption key (PostgreSQL and MySQL need one; SQLite would otherwise use a key file).
pub fn test_config(database_url: String) -> Config {
    Config {
        database_url,
        listen: "127.0.0.1:0".parse().unwrap(),
        internal_listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: Some("127.0.0.1:0".parse().unwrap()),
        internal_token: Some(INTERNAL_TOKEN.to_owned().into()),
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        bcrypt_cost: 4,
        hash_concurrency: 2,
        hash_queue: 64,
        key_encryption_keys: Some(test_support::TEST_KEK.parse().unwrap()),
        ..Config::default()
    }
}

/// A response, with its body parsed as JSON (`Value::Null` when empty).
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error` code of an error body.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field} in {}", self.body))
            .to_owned()
    }
}

/// The app under test: both routers over one state.
pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub internal: Router,
    pub clock: Clock,
    pub database_url: String,
    // Dropped last: the database outlives the pool that uses it.
    _db: TestDb,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A test app whose configuration `adjust` changes first.
    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let (db, url) = TestDb::create(backend).await;
        Self::on_database(db, url, adjust).await
    }

    /// A test app on an existing database (to restart an app over the same data).
    pub async fn on_database(db: TestDb, url: String, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(url.clone());
        adjust(&mut config);
        // Frozen: a second ticking over between two requests must not change an answer.
        let clock = Clock::frozen();
        let state = AppState::new(config, clock.clone())
            .await
            .expect("the app does not start");
        Self {
            router: auth_api::router(state.clone()),
            internal: auth_api::internal_router(state.clone()),
            state,
            clock,
            database_url: url,
            _db: db,
        }
    }

    /// A pool of its own on the app's database.
    pub async fn raw(&self) -> RawDb {
        RawDb::connect(&self.database_url).await
    }

    /// Moves the app's clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn request(&self, request: Request<Body>) -> TestResponse {
        send(&self.router, request).await
    }

    pub async fn post_json(&self, path: &str, body: Value) -> TestResponse {
        self.request(
            Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str, authorization: Option<&str>) -> TestResponse {
        let mut builder = Request::builder().method(Method::GET).uri(path);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        self.request(builder.body(Body::empty()).unwrap()).await
    }

    pub async fn get_internal(&self, path: &str, authorization: Option<&str>) -> TestResponse {
        let mut builder = Request::get(path);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        send(&self.internal, builder.body(Body::empty()).unwrap()).await
    }

    pub async fn signup(&self, email: &str, password: &str) -> TestResponse {
        self.post_json("/signup", json!({"email": email, "password": password}))
            .await
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.post_json("/login", json!({"email": email, "password": password}))
            .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> TestResponse {
        self.post_json("/refresh", json!({"refresh_token": refresh_token}))
            .await
    }

    pub async fn logout_refresh(&self, refresh_token: &str, all: bool) -> TestResponse {
        self.post_json(
            "/logout",
            json!({"refresh_token": refresh_token, "all": all}),
        )
        .await
    }

    pub async fn logout_bearer(&self, access_token: &str, all: bool) -> TestResponse {
        let mut builder = Request::post("/logout")
            .header(header::AUTHORIZATION, format!("Bearer {access_token}"));
        let body = if all {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(json!({"all": true}).to_string())
        } else {
            Body::empty()
        };
        self.request(builder.body(body).unwrap()).await
    }

    /// `GET /internal/revocations` with the internal token.
    pub async fn revocation_feed(&self) -> TestResponse {
        self.get_internal(
            "/internal/revocations",
            Some(&format!("Bearer {INTERNAL_TOKEN}")),
        )
        .await
    }

    /// The session ids the revocation feed lists now.
    pub async fn revoked_sids(&self) -> Vec<String> {
        sids(&self.revocation_feed().await)
    }

    pub async fn validate(&self, access_token: &str) -> TestResponse {
        self.get("/validate", Some(&format!("Bearer {access_token}")))
            .await
    }

    /// The stored row of the user with this email.
    pub async fn user(&self, email: &str) -> auth_api::store::UserRow {
        self.state
            .store
            .user_by_email(email)
            .await
            .unwrap()
            .expect("no such user")
    }

    /// Signs up and logs in a fresh user.
    pub async fn logged_in_user(&self) -> (TestUser, Tokens) {
        let user = TestUser::random();
        user.register(self).await;
        let tokens = user.login(self).await;
        (user, tokens)
    }

    /// A compact JWS of exactly these header and payload JSON texts, signed with the key that
    /// signs now: for tokens our encoder would never produce (duplicate members, `alg: none`).
    pub fn sign_raw(&self, header_json: &str, payload_json: &str) -> String {
        test_support::sign_raw_with(&self.signer().key, header_json, payload_json)
    }

    /// The key that signs now.
    pub fn signer(&self) -> auth_api::keyring::RingKey {
        self.state.ring.signer(self.clock.now()).expect("no signer")
    }

    /// `GET /internal/keys` with the internal token.
    pub async fn internal_keys(&self) -> TestResponse {
        self.get_internal("/internal/keys", Some(&format!("Bearer {INTERNAL_TOKEN}")))
            .await
    }

    /// The kid of the key that signs now.
    pub fn signer_kid(&self) -> String {
        self.signer().stored.kid
    }
}

pub async fn send(router: &Router, request: Request<Body>) -> TestResponse {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("cannot read the body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    TestResponse {
        status,
        headers,
        body,
    }
}

/// A user's credentials.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub email: String,
    pub password: String,
}

/// A login's tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    /// The session id of the access token.
    pub fn sid(&self) -> String {
        claims_of(&self.access)["sid"].as_str().unwrap().to_owned()
    }

    pub fn from_response(response: &TestResponse) -> Self {
        assert_eq!(response.status, StatusCode::OK, "{}", response.body);
        Self {
            access: response.str("access_token"),
            refresh: response.str("refresh_token"),
        }
    }
}

impl TestUser {
    pub fn random() -> Self {
        Self {
            email: format!("user-{}@example.com", uuid::Uuid::new_v4().simple()),
            password: "correct horse battery staple".to_owned(),
        }
    }

    pub async fn register(&self, app: &TestApp) {
        let response = app.signup(&self.email, &self.password).await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.body);
    }

    pub async fn login(&self, app: &TestApp) -> Tokens {
        Tokens::from_response(&app.login(&self.email, &self.password).await)
    }
}

/// The session ids listed in a revocation feed answer.
pub fn sids(feed: &TestResponse) -> Vec<String> {
    feed.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_owned())
        .collect()
}

/// The decoded claims of a JWT, without verification (for assertions only).
pub fn claims_of(token: &str) -> Value {
    test_support::jwt_part(token, 1)
}

/// The decoded header of a JWT.
pub fn header_of(token: &str) -> Value {
    test_support::jwt_part(token, 0)
}

/// The kids of a JWK Set answer, in order.
pub fn kids(jwks: &TestResponse) -> Vec<String> {
    jwks.body["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("not a JWK Set: {}", jwks.body))
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// A pool of its own on a test database, through sqlx's `Any` driver as the store: for what the
/// API cannot do (reading rows as stored, seeding, tampering, holding a lock).
///
/// Statements are written out per engine as the store's are ([`RawDb::sql`]): PostgreSQL and
/// SQLite share `$n` placeholders, MySQL takes `?`, and some statements differ beyond that.
/// Two things of the MySQL schema matter here: `until` is a reserved word (quote it), and text
/// columns are `VARBINARY`, which the `Any` driver reads as text, so a binary value kept in one
/// (a refresh token's hash) is read as `HEX(…)` ([`RawDb::bytes`]).
pub struct RawDb {
    pub pool: sqlx::AnyPool,
    pub backend: Backend,
}

impl RawDb {
    pub async fn connect(url: &str) -> Self {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url);
        // The SQLite file of a test app exists already; a URL of our own may need creating.
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => format!("{url}?mode=rwc"),
            _ => url.replacen("mariadb://", "mysql://", 1),
        };
        let pool = sqlx::AnyPool::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        Self { pool, backend }
    }

    /// The text of a statement on this store: `dollar` on PostgreSQL and SQLite (`$1` … `$n`,
    /// once each, in order), `mysql` on MySQL, with a `?` for each, so that one chain of binds,
    /// in that order, serves both. Checked by the store's own check of `sql!`.
    ///
    /// # Panics
    /// When the two texts take different binds.
    #[track_caller]
    pub fn sql<'a>(&self, dollar: &'a str, mysql: &'a str) -> &'a str {
        auth_api::store::checked_binds(dollar, mysql);
        match self.backend {
            Backend::Mysql => mysql,
            Backend::Sqlite | Backend::Postgres => dollar,
        }
    }

    /// Every value of the one binary column `column` of `table`, read back as bytes whatever
    /// the column's type on this engine.
    pub async fn bytes(&self, table: &str, column: &str) -> Vec<Vec<u8>> {
        let sql = match self.backend {
            // VARBINARY reads as text through `Any`: read its hex, cast to a bounded CHAR so
            // that the hex of a BLOB (a long result MariaDB types as a BLOB) reads as text too.
            Backend::Mysql => format!("SELECT CAST(HEX({column}) AS CHAR(8192)) FROM {table}"),
            Backend::Sqlite => format!("SELECT hex({column}) FROM {table}"),
            Backend::Postgres => format!("SELECT encode({column}, 'hex') FROM {table}"),
        };
        let hex: Vec<String> = sqlx::query_scalar(&sql)
            .fetch_all(&self.pool)
            .await
            .unwrap();
        hex.iter()
            .map(|h| {
                (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect()
            })
            .collect()
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// Runs each function of `names` once on each listed store, in a module per store
/// (`<module>::<store>::<name>`): `app` functions take a `TestApp` on a fresh database of that
/// store, `backend` functions the `Backend`. `store_tests!(backend on [sqlite, postgres]: (f))`;
/// the macros below name the usual lists.
#[macro_export]
macro_rules! store_tests {
    ($kind:ident on [$($store:ident),*]: $names:tt) => {
        $( $crate::store_tests!(@module $kind $store $names); )*
    };
    (@module $kind:ident sqlite $names:tt) => {
        $crate::store_tests!(@tests $kind sqlite Sqlite $names);
    };
    (@module $kind:ident postgres $names:tt) => {
        $crate::store_tests!(@tests $kind postgres Postgres $names);
    };
    (@module $kind:ident mysql $names:tt) => {
        $crate::store_tests!(@tests $kind mysql Mysql $names);
    };
    (@tests app $store:ident $backend:ident ($($name:ident),* $(,)?)) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(
                        $crate::helpers::TestApp::spawn($crate::helpers::Backend::$backend).await,
                    )
                    .await
                }
            )*
        }
    };
    (@tests backend $store:ident $backend:ident ($($name:ident),* $(,)?)) => {
        mod $store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::$backend).await
                }
            )*
        }
    };
}

/// Runs each listed `async fn(TestApp)` once on each store, as `<module>::sqlite::<name>`,
/// `<module>::postgres::<name>` and `<module>::mysql::<name>`.
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        $crate::store_tests!(app on [sqlite, postgres, mysql]: ($($name),*));
    };
}

/// Runs each listed `async fn(Backend)` once on each store, as `<module>::sqlite::<name>`,
/// `<module>::postgres::<name>` and `<module>::mysql::<name>`: for tests that build their own
/// apps (their own configuration, restarts).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        $crate::store_tests!(backend on [sqlite, postgres, mysql]: ($($name),*));
    };
}

/// Runs each listed `async fn(Backend)` on the stores that run as servers, PostgreSQL and MySQL,
/// as `<module>::postgres::<name>` and `<module>::mysql::<name>`: for what SQLite has no form
/// of (row locks held by another connection, a network between the app and its database, a
/// key-encryption key that must come from the environment).
#[macro_export]
macro_rules! on_server_backends {
    ($($name:ident),* $(,)?) => {
        $crate::store_tests!(backend on [postgres, mysql]: ($($name),*));
    };
}
