//! The gRPC listener: tonic over HTTP/2, with the limits of the HTTP listeners
//! ([`crate::server`]): a cap on open connections, a deadline on every call, a size limit on
//! every message, and a graceful drain with a deadline.

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
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::{
    auth_service::Auth,
    ext_authz::ExtAuthz,
    pb::{self, auth_service_server::AuthServiceServer},
    MAX_CHECK_REQUEST_BYTES, MAX_MESSAGE_BYTES,
};
use crate::{server::Limits, state::AppState};

/// Streams per HTTP/2 connection, as the gateway's own listener allows.
const MAX_CONCURRENT_STREAMS: u32 = 100;
/// Keep-alive pings on an idle connection, and how long a ping may go unanswered before the
/// connection is closed (a peer that vanished without a FIN).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the gRPC services on `listener` until `stop` turns true, then lets calls in flight
/// finish for at most [`Limits::drain_timeout`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServiceServer<Auth>>().await;
    health.set_serving::<AuthorizationServer<ExtAuthz>>().await;
    // v1 and the older v1alpha, which some grpcurl and Postman versions still ask first.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let auth = AuthServiceServer::new(Auth {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let ext_authz = AuthorizationServer::new(ExtAuthz { state })
        .max_decoding_message_size(MAX_CHECK_REQUEST_BYTES);

    let incoming = capped(listener, limits.max_connections);
    let mut stopped = stop.clone();
    let server = tonic::transport::Server::builder()
        // A call not answered within AUTH_REQUEST_TIMEOUT_SECS ends with DEADLINE_EXCEEDED
        // (a client's shorter grpc-timeout wins), as the HTTP API's 408.
        .timeout(limits.write_timeout)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // Bounds the reset-stream flood of CVE-2023-44487 ("rapid reset").
        .http2_max_pending_accept_reset_streams(Some(MAX_CONCURRENT_STREAMS as usize))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(ext_authz)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            tracing::info!("gRPC listener stopping");
        });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        _ = stop.wait_for(|stop| *stop) => {}
    }
    health.set_not_serving::<AuthServiceServer<Auth>>().await;
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
    max: u32,
) -> impl futures_util::Stream<Item = io::Result<CappedStream>> {
    let permits = Arc::new(Semaphore::new(max as usize));
    futures_util::stream::unfold((listener, permits), |(listener, permits)| async move {
        let permit = Arc::clone(&permits).acquire_owned().await.ok()?;
        loop {
            match listener.accept().await {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let stream = CappedStream {
                        tcp,
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

/// A connection holding one permit of its listener's cap until it closes.
#[derive(Debug)]
struct CappedStream {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for CappedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}
