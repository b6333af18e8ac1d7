//! Any request body, sent to every JSON endpoint of the real auth-api router (cheap bcrypt):
//! never a 5xx, never a panic. `/password` gets a signed-in user's access token, so that the
//! body reaches the password checks.
//!
//! The store is a SQLite file in a temporary directory, or the database named by
//! `AUTH_FUZZ_DATABASE_URL`: an empty PostgreSQL (`postgres://…`) or MySQL/MariaDB
//! (`mysql://…`, `mariadb://…`) database, which `cargo xtask test` creates per run and drops
//! afterwards, since an input one engine accepts another may refuse (NUL bytes, over-long text,
//! text past an index's limit): each must be a 4xx on every store, never a 5xx.
#![no_main]

use std::sync::OnceLock;

use auth_api::{clock::Clock, AppState, Config};
use axum::{
    body::Body,
    http::{header, Request},
    Router,
};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// The database to fuzz against instead of a fresh SQLite file.
const DATABASE_VAR: &str = "AUTH_FUZZ_DATABASE_URL";
/// A key-encryption key (`id:base64url`) for the signing keys of a server store.
const FUZZ_KEK: &str = "fuzz-kek:ZnV6ei1rZXktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM";

struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// `Authorization` for `/password`.
    bearer: String,
    _dir: tempfile::TempDir,
}

/// POSTs JSON `body` to `path`, with `bearer` if given.
fn post(path: &str, body: Vec<u8>, bearer: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(bearer) = bearer {
        request = request.header(header::AUTHORIZATION, bearer);
    }
    request.body(Body::from(body)).unwrap()
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (database_url, key_encryption_keys) = match std::env::var(DATABASE_VAR) {
            // A server store refuses to start without a key-encryption key; any fixed one will do.
            Ok(url) => (url, Some(FUZZ_KEK.parse().unwrap())),
            Err(std::env::VarError::NotPresent) => (
                format!("sqlite://{}", dir.path().join("auth.db").display()),
                None,
            ),
            Err(e) => panic!("{DATABASE_VAR}: {e}"),
        };
        let config = Config {
            database_url,
            key_encryption_keys,
            bcrypt_cost: 4,
            login_free_attempts: i64::MAX,
            ..Config::default()
        };
        let (router, bearer) = runtime.block_on(async {
            let state = AppState::new(config, Clock::default()).await.unwrap();
            let router = auth_api::router(state);
            let credentials =
                br#"{"email":"fuzz@example.com","password":"correct horse battery staple"}"#;
            router
                .clone()
                .oneshot(post("/signup", credentials.to_vec(), None))
                .await
                .unwrap();
            let login = router
                .clone()
                .oneshot(post("/login", credentials.to_vec(), None))
                .await
                .unwrap();
            let body = axum::body::to_bytes(login.into_body(), 1 << 16)
                .await
                .unwrap();
            let tokens: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let access = tokens["access_token"].as_str().unwrap().to_owned();
            (router, format!("Bearer {access}"))
        });
        App {
            runtime,
            router,
            bearer,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let app = app();
    for path in ["/signup", "/login", "/refresh", "/logout", "/password"] {
        let bearer = (path == "/password").then_some(app.bearer.as_str());
        let request = post(path, data.to_vec(), bearer);
        let response = app
            .runtime
            .block_on(app.router.clone().oneshot(request))
            .unwrap();
        assert!(
            !response.status().is_server_error(),
            "{path}: {}",
            response.status()
        );
    }
});
