//! `cargo xtask bench api`'s own load generator for token validation: `Validate` over gRPC (which
//! wrk cannot speak) and, so that the two protocols are compared by the same client, `GET
//! /validate` over HTTP/1.1.
//!
//! It runs as a child process of the benchmark (`xtask bench validate-load …`, hidden), pinned
//! with taskset to wrk's CPU and on a single-threaded tokio runtime, so that it gets what wrk
//! gets: one thread on one CPU. Both protocols keep `--concurrency` calls in flight for
//! `--seconds`, each task sending its next call as soon as its answer is in, cycling through the
//! access tokens of `--tokens` (one a line, each task from its own offset):
//!
//! - **HTTP**: one keep-alive HTTP/1.1 connection per task (hyper's client; HTTP/1.1 has one
//!   request in flight per connection), as wrk's connections;
//! - **gRPC**: auth-api's generated tonic client (`auth_api::grpc::pb`, the same types Rust
//!   callers use), the token in the `authorization` metadata as HTTP sends it in the header, the
//!   tasks spread over `--connections` HTTP/2 connections (one tonic `Channel` each).
//!
//! Every answer must be a success (HTTP 200 read to its end; gRPC OK with the response decoded):
//! the first other answer fails the run. The result is one JSON line on stdout: the calls
//! completed, the seconds they took, and p50 and p99 in microseconds.

use std::{
    path::PathBuf,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use auth_api::grpc::pb::{auth_service_client::AuthServiceClient, ValidateRequest};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    body::Bytes,
    header::{HeaderValue, AUTHORIZATION, HOST},
    Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::bench_load::process_cpu_seconds;

/// The protocol of a validation load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Protocol {
    /// `GET /validate` over keep-alive HTTP/1.1.
    Http,
    /// `auth.v1.AuthService/Validate` over HTTP/2.
    Grpc,
}

/// Options of the hidden `bench validate-load` (what `bench api` passes).
#[derive(Debug, Args)]
pub(crate) struct LoadArgs {
    #[arg(long, value_enum)]
    protocol: Protocol,
    /// auth-api's HTTP port (`--protocol http`) or gRPC port (`--protocol grpc`) on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The access tokens, one a line.
    #[arg(long)]
    tokens: PathBuf,
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Calls in flight at once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// HTTP/2 connections the gRPC calls share (HTTP/1.1 opens one per call in flight).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
}

/// What one load run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOutput {
    pub(crate) calls: u64,
    pub(crate) rps: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// The load generator's own CPU time per call (user + system, connecting included).
    pub(crate) client_cpu_us: f64,
}

impl LoadOutput {
    fn to_json(self, seconds: f64) -> Value {
        json!({
            "calls": self.calls,
            "seconds": seconds,
            "rps": self.rps,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "client_cpu_us": self.client_cpu_us,
        })
    }

    /// Reads the JSON line the child printed.
    pub(crate) fn from_json(line: &str) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("not the load generator's result: {line}"))?;
        let number = |name: &str| {
            value[name]
                .as_f64()
                .with_context(|| format!("no {name} in {line}"))
        };
        Ok(Self {
            calls: value["calls"]
                .as_u64()
                .with_context(|| format!("no calls in {line}"))?,
            rps: number("rps")?,
            p50_us: number("p50_us")?,
            p99_us: number("p99_us")?,
            client_cpu_us: number("client_cpu_us")?,
        })
    }
}

/// The hidden subcommand: runs the load and prints its result as one JSON line.
pub(crate) fn main(args: &LoadArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("cannot read {}", args.tokens.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!tokens.is_empty(), "no token in {}", args.tokens.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let duration = Duration::from_secs(args.seconds.into());
    let concurrency = usize::try_from(args.concurrency)?;
    let cpu_before = process_cpu_seconds(std::process::id())?;
    let started = Instant::now();
    let latencies = runtime.block_on(async {
        match args.protocol {
            Protocol::Http => http_load(args.port, &tokens, duration, concurrency).await,
            Protocol::Grpc => {
                let connections = usize::try_from(args.connections)?;
                grpc_load(args.port, &tokens, duration, concurrency, connections).await
            }
        }
    })?;
    let elapsed = started.elapsed();
    let cpu = process_cpu_seconds(std::process::id())? - cpu_before;
    let mut out = summary(latencies, elapsed);
    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
    {
        out.client_cpu_us = cpu * 1e6 / out.calls.max(1) as f64;
    }
    println!("{}", out.to_json(elapsed.as_secs_f64()));
    Ok(())
}

/// Calls per second, p50 and p99 of `latencies` completed in `elapsed`.
fn summary(mut latencies: Vec<Duration>, elapsed: Duration) -> LoadOutput {
    let summary = crate::bench_load::latency_summary(&mut latencies, elapsed);
    LoadOutput {
        calls: latencies.len() as u64,
        rps: summary.rps,
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        client_cpu_us: f64::NAN,
    }
}

/// One `Validate` of `token` over gRPC (in the request message this time), which must answer OK
/// with a user id.
pub(crate) async fn check_grpc(port: u16, token: &str) -> anyhow::Result<()> {
    let mut client = AuthServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .context("cannot connect to auth-api's gRPC port")?;
    let answer = client
        .validate(ValidateRequest {
            access_token: Some(token.to_owned()),
        })
        .await
        .map_err(|status| anyhow::anyhow!("Validate answered {status:?}"))?;
    anyhow::ensure!(
        !answer.get_ref().user_id.is_empty(),
        "Validate answered no user id"
    );
    Ok(())
}

/// One task per state in `states` until `duration` has passed, each calling `call(state, task,
/// n)` for its `n`-th call, which hands the state (its connection or client) back; the latencies
/// of all calls, or the first error.
async fn drive<S, F, Fut>(
    duration: Duration,
    states: Vec<S>,
    call: F,
) -> anyhow::Result<Vec<Duration>>
where
    S: 'static,
    F: Fn(S, usize, usize) -> Fut + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<S>> + 'static,
{
    let deadline = Instant::now() + duration;
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = states
        .into_iter()
        .enumerate()
        .map(|(task, mut state)| {
            let call = call.clone();
            local.spawn_local(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    state = call(state, task, n).await?;
                    latencies.push(t0.elapsed());
                    n += 1;
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    local
        .run_until(async move {
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.context("a load task panicked")??);
            }
            Ok(all)
        })
        .await
}

/// The token task `task` of `tasks` sends in its `n`-th call: each task walks the list from its
/// own offset.
fn pick<T>(list: &[T], task: usize, tasks: usize, n: usize) -> &T {
    let offset = task * list.len() / tasks.max(1);
    &list[(offset + n) % list.len()]
}

async fn http_load(
    port: u16,
    tokens: &[String],
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    let headers: Vec<HeaderValue> = tokens
        .iter()
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
        .collect::<Result<_, _>>()
        .context("a token that is no header value")?;
    let headers = Rc::new(headers);
    let host = HeaderValue::from_str(&format!("127.0.0.1:{port}"))?;
    // Connect every task first, so that the run measures calls only.
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .context("cannot connect to auth-api's HTTP port")?;
        tcp.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        senders.push(sender);
    }
    drive(duration, senders, move |mut sender, task, n| {
        let token = pick(&headers, task, concurrency, n).clone();
        let host = host.clone();
        async move {
            let request = Request::get("/validate")
                .header(HOST, host)
                .header(AUTHORIZATION, token)
                .body(Empty::<Bytes>::new())?;
            sender.ready().await.context("the connection closed")?;
            let answer = sender
                .send_request(request)
                .await
                .context("GET /validate")?;
            let status = answer.status();
            let body = answer.into_body().collect().await?.to_bytes();
            if status != StatusCode::OK {
                bail!(
                    "GET /validate answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Ok(sender)
        }
    })
    .await
}

async fn grpc_load(
    port: u16,
    tokens: &[String],
    duration: Duration,
    concurrency: usize,
    connections: usize,
) -> anyhow::Result<Vec<Duration>> {
    let values: Vec<MetadataValue<Ascii>> = tokens
        .iter()
        .map(|t| format!("Bearer {t}").parse())
        .collect::<Result<_, _>>()
        .context("a token that is no metadata value")?;
    let values = Rc::new(values);
    let mut channels: Vec<Channel> = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .context("cannot connect to auth-api's gRPC port")?;
        channels.push(channel);
    }
    let clients: Vec<_> = (0..concurrency)
        .map(|i| AuthServiceClient::new(channels[i % channels.len()].clone()))
        .collect();
    drive(duration, clients, move |mut client, task, n| {
        let value = pick(&values, task, concurrency, n).clone();
        async move {
            let mut request = tonic::Request::new(ValidateRequest { access_token: None });
            request.metadata_mut().insert("authorization", value);
            let answer = client
                .validate(request)
                .await
                .map_err(|status| anyhow::anyhow!("Validate answered {status:?}"))?;
            anyhow::ensure!(
                !answer.get_ref().user_id.is_empty(),
                "Validate answered no user id"
            );
            Ok(client)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_survive_their_json_line() {
        let latencies: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let mut out = summary(latencies, Duration::from_secs(1));
        out.client_cpu_us = 12.5;
        let line = out.to_json(1.0).to_string();
        let back = LoadOutput::from_json(&line).unwrap();
        assert_eq!(back.calls, 100);
        assert!((back.rps - 100.0).abs() < 1e-9);
        assert!((back.p50_us - 51.0).abs() < 1e-9);
        assert!((back.p99_us - 100.0).abs() < 1e-9);
        assert!((back.client_cpu_us - 12.5).abs() < 1e-9);
        assert!(LoadOutput::from_json("wrk says hi").is_err());
    }

    #[test]
    fn tasks_start_at_their_own_offsets_and_wrap() {
        let list: Vec<u32> = (0..10).collect();
        assert_eq!(*pick(&list, 0, 2, 0), 0);
        assert_eq!(*pick(&list, 1, 2, 0), 5);
        assert_eq!(*pick(&list, 1, 2, 7), 2);
        assert_eq!(*pick(&[7], 3, 4, 9), 7);
    }
}
