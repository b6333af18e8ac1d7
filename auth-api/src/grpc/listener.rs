//! The gRPC listener: tonic over HTTP/2, with the limits of the HTTP listeners
//! ([`crate::server`]): a cap on open connections, a deadline on every call, a size limit on
//! every message, and a graceful drain with a deadline.
//!
//! A connection that sends nothing for `AUTH_HEADER_READ_TIMEOUT_SECS` is closed: one that
//! never sends the HTTP/2 preface (a slowloris holding a permit of the cap, as the HTTP
//! listeners' header-read timeout closes it), or one whose peer vanished. The server pings a
//! connection that has been quiet for half that time, and a live client's ack keeps it open, so
//! long-lived channels (what gRPC clients keep) and calls waiting for a slow answer are not
//! cut. A write that makes no progress for `AUTH_REQUEST_TIMEOUT_SECS` (a client that stopped
//! reading) ends it too.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use envoy_types::ext_authz::v3::pb::AuthorizationServer;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
};
use tokio_io_timeout::TimeoutStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic_health::pb::health_server::HealthServer;
use tower::{limit::GlobalConcurrencyLimitLayer, util::MapRequestLayer};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use super::{
    auth_service::Auth,
    ext_authz::ExtAuthz,
    health::Health,
    pb::{self, auth_service_server::AuthServiceServer},
    MAX_CHECK_REQUEST_BYTES, MAX_MESSAGE_BYTES,
};
use crate::{correlation, server::Limits, state::AppState};

/// Streams per HTTP/2 connection, as the gateway's own listener allows.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Calls in flight at once across the listener (each holds at most one message of
/// `MAX_CHECK_REQUEST_BYTES`): 1024 × 128 KiB = 128 MiB at worst.
const MAX_CALLS_IN_FLIGHT: usize = 1024;
/// HTTP/2 flow-control windows: per stream as the gateway's, per connection 1 MiB.
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// Largest health-check or reflection request: a service, symbol or file name.
const SMALL_REQUEST_BYTES: usize = 4 * 1024;

/// Serves the gRPC services on `listener` until `stop` turns true, then lets calls in flight
/// finish for at most [`Limits::drain_timeout`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let health = HealthServer::new(Health { stop: stop.clone() })
        .max_decoding_message_size(SMALL_REQUEST_BYTES);
    // v1 and the older v1alpha, which some grpcurl and Postman versions still ask first. Their
    // requests are symbol and file names.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()?
        .max_decoding_message_size(SMALL_REQUEST_BYTES);
    let reflection_v1alpha = reflection()
        .build_v1alpha()?
        .max_decoding_message_size(SMALL_REQUEST_BYTES);

    let auth = AuthServiceServer::new(Auth {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ext_authz = AuthorizationServer::new(ExtAuthz { state })
        .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);

    // Pinged after half the read timeout of quiet; the ack is read before the timeout.
    let keepalive = (limits.header_read_timeout / 2).max(Duration::from_millis(500));
    let incoming = capped(listener, limits);
    // Fired once the stop signal has reached the health service (which then answers
    // NOT_SERVING and ends its `Watch` streams), so that watchers hear it before the listener
    // closes.
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        // A backstop: each RPC of ours ends itself at AUTH_REQUEST_TIMEOUT_SECS with
        // DEADLINE_EXCEEDED `request_timeout` (counted, with ErrorInfo); anything still running a
        // second later (a call of the health or reflection services) is cancelled here.
        .timeout(limits.write_timeout + Duration::from_secs(1))
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // What one connection may have sent and not yet had read: the peer waits for window
        // updates beyond it.
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive))
        // Bounds the reset-stream flood of CVE-2023-44487 ("rapid reset").
        .http2_max_pending_accept_reset_streams(Some(MAX_CONCURRENT_STREAMS as usize))
        // Calls in flight across every connection: past it a call waits for a slot, its stream's
        // data held by HTTP/2 flow control, not in our buffers; so the memory of calls in flight
        // is bounded by this times the largest message, not by connections times streams.
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CALLS_IN_FLIGHT))
        // As on the HTTP listeners (correlation.rs): the call's `x-request-id` metadata checked,
        // made when missing or unusable, returned, and on the call's span with its trace id.
        .layer(MapRequestLayer::new(correlation::drop_invalid_request_id))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(correlation::grpc_span::<tonic::body::Body> as fn(&_) -> _)
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(ext_authz)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = drain_rx.await;
            tracing::info!("gRPC listener stopping");
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        _ = stop.wait_for(|stop| *stop) => {}
    }
    // The health service saw the same signal; give its `Watch` streams a moment to deliver
    // NOT_SERVING before the listener's GOAWAY.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = drain_tx.send(());
    match tokio::time::timeout(limits.drain_timeout, server).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => {
            tracing::warn!("gRPC calls still running at the drain deadline were dropped");
            Ok(())
        }
    }
}

/// Accepted connections, at most `max` open at once: past the cap the listener stops
/// accepting, so new connections wait in the kernel's backlog (as [`crate::server`] does).
fn capped(
    listener: TcpListener,
    limits: Limits,
) -> impl futures_util::Stream<Item = io::Result<CappedStream>> {
    let permits = Arc::new(Semaphore::new(limits.max_connections as usize));
    futures_util::stream::unfold((listener, permits), move |(listener, permits)| async move {
        let permit = Arc::clone(&permits).acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let mut tcp = TimeoutStream::new(tcp);
                    tcp.set_read_timeout(Some(limits.header_read_timeout));
                    tcp.set_write_timeout(Some(limits.write_timeout));
                    let stream = CappedStream {
                        tcp: Box::pin(tcp),
                        _permit: permit,
                    };
                    return Some((Ok(stream), (listener, permits)));
                }
                // Out of file descriptors, a connection reset before it was accepted: not the
                // listener's end. Wait a moment rather than spin.
                Err(err) => {
                    tracing::warn!(error = %err, "gRPC accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// A connection holding one permit of its listener's cap until it closes, with its read and
/// write timeouts.
#[derive(Debug)]
struct CappedStream {
    tcp: Pin<Box<TimeoutStream<TcpStream>>>,
    _permit: OwnedSemaphorePermit,
}

impl Connected for CappedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.get_ref().connect_info()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.tcp.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.tcp.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.tcp.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.get_ref().is_write_vectored()
    }
}
