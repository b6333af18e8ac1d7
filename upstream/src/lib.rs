//! The example upstream behind the gateway: answers every request, whatever its method and path,
//! with `200 {"method", "path", "headers": {name: value}, "non_utf8_headers": {name: hex}}` of
//! what it received, so that a client
//! (or a test) sees exactly which identity headers the gateway forwarded.

use axum::{extract::Request, Json};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

/// Serves the echo on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(echo);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn echo(request: Request) -> Json<Value> {
    let mut headers = Map::new();
    // Values that are not UTF-8 also appear here, byte for byte in hex, so that a test can tell
    // them from a copy whose bytes were replaced on the way.
    let mut raw = Map::new();
    for (name, value) in request.headers() {
        if std::str::from_utf8(value.as_bytes()).is_err() {
            let hex = value
                .as_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            raw.insert(name.as_str().to_owned(), Value::String(hex));
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        // Repeated headers are joined, as a proxy would fold them.
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    Json(json!({
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
        "non_utf8_headers": raw,
    }))
}
