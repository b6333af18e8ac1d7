//! A local provider for the tests: an axum router served on `127.0.0.1:0`.

use axum::Router;

/// Serves `router` on a fresh loopback port for the rest of the test; returns its base URL
/// (`http://127.0.0.1:<port>`, no trailing slash).
pub(crate) async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}
