//! The accept loop of each listener: HTTP/1.1 by hyper, with a header-read timeout, a
//! write-progress timeout, a cap on open connections and a graceful drain with a deadline
//! (SECURITY.md I 97).
//!
//! `axum::serve` sets no timeout and no cap: a client sending half a request head, or opening
//! connections and never using them, kept each connection (and its file descriptor) forever.
//! Here:
//! - **Header-read timeout** ([`Limits::header_read_timeout`], hyper's own): a connection that
//!   has not sent a whole request head that long after it opened, or after its last response
//!   (an idle keep-alive connection), is closed without an answer.
//! - **Connection cap** ([`Limits::max_connections`], per listener): each connection holds a
//!   permit of a semaphore until it closes; with none left the loop stops accepting, so further
//!   connections wait in the kernel's backlog (and a proxy's connect timeout applies) instead of
//!   being accepted and dropped. An idle client frees its permit within the header-read timeout.
//! - **Request timeout**: the routers' own layer (`AUTH_REQUEST_TIMEOUT_SECS`, in `routes`), so that its `408` is
//!   JSON and counted like every other answer. It ends when the answer is handed to hyper, not
//!   when it has been sent.
//! - **Write timeout** ([`Limits::write_timeout`], `AUTH_REQUEST_TIMEOUT_SECS` again, by
//!   `tokio-io-timeout`): a write to the client that makes no progress that long (a client that
//!   pipelines requests and never reads its answers, with a small receive window) fails and the
//!   connection is closed, freeing its permit. It bounds each stall, not a whole answer: a client
//!   that keeps reading slowly keeps its connection (auth-api's answers are small; the drain
//!   deadline still bounds a shutdown).
//! - **Graceful shutdown**: the listener closes at once; each open connection finishes the
//!   request it is serving and is then closed (idle ones at once), but gets at most
//!   [`Limits::drain_timeout`] (`AUTH_REQUEST_TIMEOUT_SECS` + 5 s) from the stop signal before it
//!   is dropped; the drain ends when the last permit is back.
//!
//! HTTP/1.1 only, as before (axum's `http1` feature; HTTP/2 was never enabled): the gateway
//! speaks HTTP/1.1 to auth-api.

use std::{sync::Arc, time::Duration};

use axum::{body::Body, extract::ConnectInfo, http::Request, Router};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
};
use tokio_io_timeout::TimeoutStream;
use tower::ServiceExt as _;

use crate::config::Config;

/// How long past the request timeout a connection may still take to finish after the stop
/// signal (its answer is then being written) before it is dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// What a listener allows a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `AUTH_HEADER_READ_TIMEOUT_SECS`: longest wait for a whole request head.
    pub header_read_timeout: Duration,
    /// `AUTH_REQUEST_TIMEOUT_SECS`: longest a write to the client may make no progress.
    pub write_timeout: Duration,
    /// `AUTH_REQUEST_TIMEOUT_SECS` + `DRAIN_GRACE`: how long each connection has, after the
    /// stop signal, to finish.
    pub drain_timeout: Duration,
    /// `AUTH_MAX_CONNECTIONS`: open connections at once.
    pub max_connections: u32,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &Config) -> Self {
        Self {
            header_read_timeout: config.header_read_timeout,
            write_timeout: config.request_timeout,
            drain_timeout: config.request_timeout.saturating_add(DRAIN_GRACE),
            max_connections: config.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `stop` turns true, then drains the open connections.
/// Requests carry the peer's address as `ConnectInfo<SocketAddr>` (the per-address limits use
/// it), as `into_make_service_with_connect_info` did.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // A permit first: at the cap, nothing more is accepted until a connection closes.
        let permit = tokio::select! {
            biased;
            () = stopped(stop.clone()) => break,
            permit = Arc::clone(&permits).acquire_owned() => permit?,
        };
        let (stream, peer) = tokio::select! {
            biased;
            () = stopped(stop.clone()) => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            });
        // A write that makes no progress for `write_timeout` (a client that stopped reading)
        // fails with `TimedOut`, which ends the connection. Reads are left to hyper's
        // header-read timeout and the request timeout.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.write_timeout));
        let connection = builder.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(service),
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            // Held until the connection is closed: the cap counts open connections.
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(stop) => {
                    // Finish the request in flight (if any), then close; past the deadline the
                    // connection is dropped (closed) whatever it was doing.
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(limits.drain_timeout, connection).await {
                        Ok(result) => result,
                        Err(_elapsed) => {
                            tracing::info!(%peer, "connection dropped at the drain deadline");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                // A header-read timeout, a write timeout, a client that went away, a malformed
                // head.
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);
    // Every connection holds a permit until it closes: all of them back means drained.
    let _all = permits.acquire_many(limits.max_connections).await?;
    Ok(())
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// An error from `accept`: a connection that failed before we saw it is ignored; anything else
/// (out of file descriptors) is logged and the loop pauses, as hyper and axum do, instead of
/// spinning.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept a connection; pausing for a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
