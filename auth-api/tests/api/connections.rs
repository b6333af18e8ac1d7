//! Slow and numerous clients over real sockets (SECURITY.md I 97): the header-read timeout, the
//! request timeout, the write timeout, the connection cap of each listener (the gRPC one too),
//! and the graceful drain and its deadline.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

use crate::helpers::{test_config, Backend, TestDb};

/// A running `App` over real sockets on a fresh SQLite database.
struct Served {
    public: SocketAddr,
    internal: SocketAddr,
    grpc: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    _db: TestDb,
}

impl Served {
    async fn start(adjust: impl FnOnce(&mut auth_api::Config)) -> Self {
        let (db, url) = TestDb::create(Backend::Sqlite).await;
        let mut config = test_config(url);
        adjust(&mut config);
        let app = auth_api::App::build(config).await.unwrap();
        let public = app.public_addr().unwrap();
        let internal = app.internal_addr().unwrap().unwrap();
        let grpc = app.grpc_addr().unwrap().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            public,
            internal,
            grpc,
            stop: Some(stop),
            server,
            _db: db,
        }
    }

    fn stop(&mut self) {
        let _ = self.stop.take().expect("stopped twice").send(());
    }
}

/// Reads one HTTP/1.1 response (head, then a `Content-Length` body) and returns it as text.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                return text.into_owned();
            }
        }
        let n = stream.read(&mut chunk).await.expect("cannot read");
        assert!(n > 0, "closed before a whole response: {text:?}");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// `GET /healthz` on an open connection, kept alive; returns the response.
async fn get_healthz(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: auth\r\n\r\n")
        .await
        .unwrap();
    read_response(stream).await
}

/// Whether the server closes `stream` (end of stream or reset) within `limit`, with nothing sent.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0_u8; 256];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "expected no answer, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(_elapsed) => false,
    }
}

/// SECURITY.md I 97: a connection that never finishes its request head is closed after
/// `AUTH_HEADER_READ_TIMEOUT_SECS`, on both listeners; so is one left idle after a response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_half_a_request_head_is_disconnected_by_auth_api() {
    let timeout = Duration::from_millis(400);
    let mut served = Served::start(|c| c.header_read_timeout = timeout).await;
    for addr in [served.public, served.internal] {
        let started = Instant::now();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"POST /login HTTP/1.1\r\nHost: auth\r\nContent-Ty")
            .await
            .unwrap();
        assert!(
            closed_within(&mut slow, Duration::from_secs(5)).await,
            "{addr}: the half-sent head keeps its connection"
        );
        let waited = started.elapsed();
        assert!(waited >= timeout - Duration::from_millis(50), "{waited:?}");
    }
    // An idle keep-alive connection cannot hold its place either.
    let mut idle = TcpStream::connect(served.public).await.unwrap();
    assert!(get_healthz(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    // A client that sends its head in time is served.
    let mut prompt = TcpStream::connect(served.public).await.unwrap();
    assert!(get_healthz(&mut prompt).await.starts_with("HTTP/1.1 200"));
    served.stop();
    served.server.await.unwrap().unwrap();
}

/// SECURITY.md I 97: with `AUTH_MAX_CONNECTIONS` = N, the N+1th connection of a listener is not
/// served until one of the N closes; each listener has its own cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_cap_waits_until_one_closes() {
    const CAP: usize = 2;
    let mut served = Served::start(|c| {
        c.max_connections = CAP as u32;
        // Long enough that no idle connection is closed during the test.
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    for addr in [served.public, served.internal] {
        let mut open = Vec::new();
        for _ in 0..CAP {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            assert!(get_healthz(&mut stream).await.starts_with("HTTP/1.1 "));
            open.push(stream);
        }
        // The kernel completes the handshake (backlog), but auth-api does not accept it.
        let mut waiting = TcpStream::connect(addr).await.unwrap();
        waiting
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: auth\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0_u8; 64];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut buf))
                .await
                .is_err(),
            "{addr}: the connection past the cap was served"
        );
        if addr == served.public {
            // The internal listener is not starved by a full public one.
            let mut internal = TcpStream::connect(served.internal).await.unwrap();
            assert!(get_healthz(&mut internal).await.starts_with("HTTP/1.1 "));
        }
        drop(open.pop());
        let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut waiting))
            .await
            .expect("served once a connection closed");
        assert!(answer.starts_with("HTTP/1.1 "), "{answer}");
    }
    served.stop();
    served.server.await.unwrap().unwrap();
}

/// SECURITY.md I 97: a request whose body trickles in gets `408 request_timeout` (JSON) after
/// `AUTH_REQUEST_TIMEOUT_SECS`, and its connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_after_the_request_timeout() {
    let timeout = Duration::from_millis(400);
    let mut served = Served::start(|c| c.request_timeout = timeout).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(served.public).await.unwrap();
    slow.write_all(
        b"POST /login HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut slow))
        .await
        .expect("no answer within 5 s");
    assert!(started.elapsed() >= timeout - Duration::from_millis(50));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request_timeout""#), "{answer}");
    assert!(closed_within(&mut slow, Duration::from_secs(5)).await);
    served.stop();
    served.server.await.unwrap().unwrap();
}

/// Graceful shutdown under the new accept loop: the listener closes at once, a request in
/// flight is still answered, then the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_still_completes_a_request_in_flight() {
    let mut served = Served::start(|_| {}).await;
    let body = br#"{"email":"in-flight@example.com","password":"correct horse battery staple"}"#;
    let (first, rest) = body.split_at(20);
    let mut in_flight = TcpStream::connect(served.public).await.unwrap();
    in_flight
        .write_all(
            format!(
                "POST /login HTTP/1.1\r\nHost: auth\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    in_flight.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    served.stop();
    // The listener closes; the in-flight request keeps the server running.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(served.public).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the listener still accepts after the stop");
    assert!(!served.server.is_finished(), "stopped before answering");
    in_flight.write_all(rest).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut in_flight))
        .await
        .expect("the request in flight is answered");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("invalid_credentials"), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), &mut served.server)
        .await
        .expect("the drain ends")
        .unwrap()
        .unwrap();
}

/// A client with a tiny receive window that pipelines `GET /openapi.json` (tens of KiB each)
/// without reading: auth-api soon has more to write than the socket buffers hold. Returns the
/// read half, never read by the caller unless it wants to, and the writer task.
async fn pipelining_slow_reader(
    addr: SocketAddr,
) -> (tokio::net::tcp::OwnedReadHalf, JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let request = b"GET /openapi.json HTTP/1.1\r\nHost: auth\r\n\r\n".repeat(50);
        for _ in 0..20 {
            // Blocks once auth-api stops reading (its answers are stuck); errors once closed.
            if write.write_all(&request).await.is_err() {
                break;
            }
        }
    });
    (read, writer)
}

/// Reads `stream` until it ends (end of stream or reset), for at most `limit`; whether it did.
async fn drained_until_closed(
    stream: &mut tokio::net::tcp::OwnedReadHalf,
    limit: Duration,
) -> bool {
    let mut buf = [0_u8; 65536];
    tokio::time::timeout(limit, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await
    .is_ok()
}

/// SECURITY.md I 97 (finding F1): a client that pipelines requests and never reads its answers
/// loses its connection once a write has made no progress for `AUTH_REQUEST_TIMEOUT_SECS`, and
/// its permit is back: at `AUTH_MAX_CONNECTIONS` = 1 the next client is served. (Public listener:
/// the internal one has no large answer without its token; both run the same accept loop.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_loses_its_connection_after_the_write_timeout() {
    let write_timeout = Duration::from_secs(1);
    let mut served = Served::start(|c| {
        c.max_connections = 1;
        c.request_timeout = write_timeout;
        // Not the header-read timeout that frees the connection.
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let (mut stuck, writer) = pipelining_slow_reader(served.public).await;
    // Let auth-api take the connection and fill the socket buffers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut next = TcpStream::connect(served.public).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), get_healthz(&mut next))
        .await
        .expect("the client that never reads keeps the only permit");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() >= write_timeout / 2,
        "served at once: was the cap reached?"
    );
    // The stuck connection was closed by auth-api (what it had sent, then the end).
    assert!(
        drained_until_closed(&mut stuck, Duration::from_secs(10)).await,
        "the stuck connection is still open"
    );
    writer.abort();
    served.stop();
    tokio::time::timeout(Duration::from_secs(10), &mut served.server)
        .await
        .expect("the drain ends")
        .unwrap()
        .unwrap();
}

/// SECURITY.md I 97 (finding F1): after the stop signal each connection has
/// `AUTH_REQUEST_TIMEOUT_SECS` + 5 s to finish, whatever holds it, then it is dropped and the
/// server stops. Held here by a client that pipelines and never reads (its writes stall) and by
/// one whose first request head is unfinished under a long `AUTH_HEADER_READ_TIMEOUT_SECS`
/// (hyper's graceful shutdown waits for that head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_within_the_drain_deadline_while_clients_hold_their_connections() {
    let request_timeout = Duration::from_secs(1);
    let drain_deadline = request_timeout + Duration::from_secs(5);
    let mut served = Served::start(|c| {
        c.request_timeout = request_timeout;
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let (mut stuck, writer) = pipelining_slow_reader(served.public).await;
    let mut half = TcpStream::connect(served.public).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: au")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    served.stop();
    let stopped = Instant::now();
    tokio::time::sleep(request_timeout * 2).await;
    assert!(
        !served.server.is_finished(),
        "stopped before the deadline: nothing held a connection, the test shows nothing"
    );
    tokio::time::timeout(
        (drain_deadline + Duration::from_secs(3)).saturating_sub(stopped.elapsed()),
        &mut served.server,
    )
    .await
    .expect("the drain has no deadline")
    .unwrap()
    .unwrap();
    let took = stopped.elapsed();
    assert!(
        took >= drain_deadline - Duration::from_millis(500),
        "{took:?}"
    );
    assert!(closed_within(&mut half, Duration::from_secs(1)).await);
    assert!(drained_until_closed(&mut stuck, Duration::from_secs(10)).await);
    writer.abort();
}

/// The HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first.
const H2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Whether the server answers an HTTP/2 preface on `stream` with its SETTINGS frame within
/// `limit` (the connection is being served).
async fn h2_served_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.write_all(H2_PREFACE_AND_SETTINGS).await.unwrap();
    let mut frame_head = [0_u8; 9];
    match tokio::time::timeout(limit, stream.read_exact(&mut frame_head)).await {
        Ok(Ok(_)) => {
            assert_eq!(frame_head[3], 4, "the server's first frame is not SETTINGS");
            true
        }
        Ok(Err(e)) => panic!("the connection failed: {e}"),
        Err(_elapsed) => false,
    }
}

/// A gRPC connection that never sends the HTTP/2 preface is closed after
/// `AUTH_HEADER_READ_TIMEOUT_SECS`, as an HTTP one that never sends its head: it cannot hold a
/// permit of the connection cap for ever. One that sends it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_that_sends_nothing_is_closed_after_the_read_timeout() {
    let timeout = Duration::from_secs(1);
    let mut served = Served::start(|c| c.header_read_timeout = timeout).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(served.grpc).await.unwrap();
    // The server speaks first (its SETTINGS frame, HTTP/2's server preface), then waits.
    let mut buf = [0_u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "still open after 5 s");
    assert!(
        started.elapsed() >= timeout - Duration::from_millis(100),
        "closed after {:?}, before the timeout",
        started.elapsed()
    );
    let mut client = TcpStream::connect(served.grpc).await.unwrap();
    assert!(h2_served_within(&mut client, Duration::from_secs(5)).await);
    served.stop();
    served.server.await.unwrap().unwrap();
}

/// The gRPC listener has its own `AUTH_MAX_CONNECTIONS` cap: the connection past it is not
/// served until one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_beyond_the_cap_waits_until_one_closes() {
    let mut served = Served::start(|c| {
        c.max_connections = 1;
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let mut first = TcpStream::connect(served.grpc).await.unwrap();
    assert!(h2_served_within(&mut first, Duration::from_secs(5)).await);
    let mut waiting = TcpStream::connect(served.grpc).await.unwrap();
    assert!(
        !h2_served_within(&mut waiting, Duration::from_millis(500)).await,
        "the connection past the cap was served"
    );
    drop(first);
    let mut frame_head = [0_u8; 9];
    tokio::time::timeout(Duration::from_secs(5), waiting.read_exact(&mut frame_head))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert_eq!(frame_head[3], 4);
    // A raw client does not answer the GOAWAY of a graceful stop: close it first.
    drop(waiting);
    served.stop();
    served.server.await.unwrap().unwrap();
}
