//! A store that cannot be reached: every route that needs it answers `503 unavailable` with
//! `Retry-After` and the JSON error body (never a 500, never a 204 for a logout that ended
//! nothing), and the service recovers when the database is back.

use std::{net::SocketAddr, time::Duration};

use axum::http::StatusCode;
use serde_json::json;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::helpers::{Backend, TestApp, TestDb, TestResponse, TestUser, Tokens};

/// What every route answers while the store is gone: 503 `unavailable`, `Retry-After`, JSON.
fn assert_unavailable(route: &str, response: &TestResponse) {
    assert_eq!(
        response.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{route}: {}",
        response.body
    );
    assert_eq!(
        response.error(),
        "unavailable",
        "{route}: {}",
        response.body
    );
    assert!(
        response.body["message"].is_string(),
        "{route}: {}",
        response.body
    );
    let retry_after: u64 = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("{route}: no Retry-After"))
        .parse()
        .unwrap();
    assert!(retry_after > 0, "{route}");
}

/// Calls every route that needs the store, all at once (each may wait out the pool's acquire
/// timeout), and checks that each answers 503 `unavailable`.
async fn every_route_is_unavailable(app: &TestApp, user: &TestUser, tokens: &Tokens) {
    let password_change = app.request(
        axum::http::Request::post("/password")
            .header("authorization", format!("Bearer {}", tokens.access))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"current_password": user.password, "new_password": "a brand new passphrase"})
                    .to_string(),
            ))
            .unwrap(),
    );
    let (signup, login, refresh, logout_refresh, logout_bearer, validate, password) = tokio::join!(
        app.signup("newcomer@example.com", "correct horse battery staple"),
        app.login(&user.email, &user.password),
        app.refresh(&tokens.refresh),
        app.logout_refresh(&tokens.refresh, false),
        app.logout_bearer(&tokens.access, true),
        app.validate(&tokens.access),
        password_change,
    );
    for (route, response) in [
        ("signup", &signup),
        ("login", &login),
        ("refresh", &refresh),
        ("logout with a refresh token", &logout_refresh),
        ("logout with a bearer token", &logout_bearer),
        ("validate", &validate),
        ("password", &password),
    ] {
        assert_unavailable(route, response);
    }
}

async fn every_route_answers_503_unavailable_once_the_pool_is_closed(app: TestApp) {
    // Arrange
    let (user, tokens) = app.logged_in_user().await;
    // Act
    app.state.store.close().await;
    // Assert
    every_route_is_unavailable(&app, &user, &tokens).await;
}

crate::on_every_store!(every_route_answers_503_unavailable_once_the_pool_is_closed);

/// A TCP forwarder to the database server that the test can stop (connections cut, port closed, as when
/// the server stops) and start again on the same port.
struct Proxy {
    addr: SocketAddr,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(addr: SocketAddr, upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .expect("cannot bind the proxy");
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            // Dropped with the accept loop when it is aborted: every forwarded connection ends.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            accept: Some(accept),
        }
    }

    /// Cuts every connection and closes the port.
    async fn stop(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
            let _ = accept.await;
        }
    }
}

/// The database as the app reaches it through a [`Proxy`]: the test database's URL with the
/// proxy's port.
fn through(url: &str, proxy: SocketAddr) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_port(Some(proxy.port())).unwrap();
    url.set_host(Some(&proxy.ip().to_string())).unwrap();
    url.to_string()
}

/// The database server going away (PostgreSQL, MySQL): every route answers 503, and once the
/// server is back the service resumes where it was.
async fn the_server_going_away_is_503_unavailable_on_every_route_and_service_resumes(
    backend: Backend,
) {
    // Arrange: an app whose only way to its database server is a proxy the test controls.
    let (db, url) = TestDb::create(backend).await;
    let parsed = url::Url::parse(&url).unwrap();
    let default_port = match backend {
        Backend::Mysql => 3306,
        Backend::Postgres | Backend::Sqlite => 5432,
    };
    let upstream = tokio::net::lookup_host((
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(default_port),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let mut proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), upstream).await;
    let app = TestApp::on_database(db, through(&url, proxy.addr), |_| {}).await;
    let (user, tokens) = app.logged_in_user().await;
    // Act: the database goes away (connections cut, connections refused).
    proxy.stop().await;
    // Assert
    every_route_is_unavailable(&app, &user, &tokens).await;
    // And back: the same session refreshes, nothing was lost.
    let _proxy = Proxy::start(proxy.addr, upstream).await;
    let mut refreshed = None;
    for _ in 0..50 {
        let response = app.refresh(&tokens.refresh).await;
        if response.status == StatusCode::OK {
            refreshed = Some(response);
            break;
        }
        assert_unavailable("refresh while reconnecting", &response);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refreshed = refreshed.expect("the database is back, the session refreshes");
    let access = refreshed.str("access_token");
    assert_eq!(app.validate(&access).await.status, StatusCode::OK);
}

mod server_stores {
    use super::*;

    crate::on_server_backends!(
        the_server_going_away_is_503_unavailable_on_every_route_and_service_resumes
    );
}
