//! Any request body, sent to every JSON endpoint of the real auth-api router (SQLite, cheap
//! bcrypt): never a 5xx, never a panic.
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

struct App {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _dir: tempfile::TempDir,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            database_url: format!("sqlite://{}", dir.path().join("auth.db").display()),
            bcrypt_cost: 4,
            login_free_attempts: i64::MAX,
            ..Config::default()
        };
        let router = runtime.block_on(async {
            let state = AppState::new(config, Clock::default()).await.unwrap();
            auth_api::router(state)
        });
        App {
            runtime,
            router,
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let app = app();
    for path in ["/signup", "/login", "/refresh", "/logout"] {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(data.to_vec()))
            .unwrap();
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
