//! `cargo xtask bench api`: auth-api's login, refresh and `/validate` rates, each beside the
//! bound it could reach, on each store (`--store sqlite,postgres,mysql`; all three by default).
//!
//! auth-api runs as the real release binary (`target/release/auth-api serve`, configured by
//! environment as in production, bcrypt cost 12 unless `--bcrypt-cost` says otherwise), one per
//! store, all started at once: fresh PostgreSQL and MariaDB databases (dropped after) and a SQLite
//! file in a temporary directory. The per-address limiter is raised out of the way
//! (`AUTH_IP_LIMIT_PER_MINUTE`), and logins cycle through many accounts, so that neither the
//! limiter nor the per-email throttle shapes the numbers. In each round, for each store in turn,
//! it measures:
//!
//! - **logins/s** with enough concurrent clients to keep every bcrypt slot busy, beside the
//!   **bcrypt bound** measured just before in this process with the same `bcrypt` crate: the
//!   CPUs auth-api runs on ÷ the median time of one verify at the configured cost (target ≥ 90%),
//!   and, for the record, the verifies/s one thread per CPU got at once (what a shared machine
//!   actually gives bcrypt at that moment);
//! - **refreshes/s** over HTTP, beside the same store queries a refresh issues (find the token,
//!   rotate it, read the user and its roles) driven directly through auth-api's own `Store` in
//!   this process with as many concurrent tasks as wrk has connections: the bound the store
//!   allows (target ≥ 50%); and, for the record, auth-api's whole refresh service in-process
//!   (`service::sessions::refresh`: the store, the rotation key, signing; no HTTP);
//! - **`/validate`/s** (target ≥ 20k/s on 2 cores on PostgreSQL) replaying one access token,
//!   and cycling through `--validate-tokens` (1000) tokens of as many sessions (what a real mix
//!   of clients sends: auth-api remembers verified signatures, so one token replayed measures
//!   that memo and the session read only); and, as the HTTP stack's own ceiling on the same
//!   cores, `GET /healthz`;
//! - **`Validate` over gRPC beside `/validate` over HTTP**: the same many tokens, sent by this
//!   benchmark's own Rust load generator ([`crate::bench_client`], since wrk cannot speak gRPC)
//!   over keep-alive HTTP/1.1 and then over gRPC (`auth.v1.AuthService/Validate` on
//!   `AUTH_GRPC_LISTEN`, a free port), with the same calls in flight, so that the two protocols
//!   are compared by one client; the gRPC/HTTP ratio is paired round by round;
//!
//! each with p50 and p99. Rounds alternate the measurements (login, refresh and its bounds,
//! validate, then the next store, then the next round) so that a noisy neighbour hits them
//! alike; the report gives medians over rounds, ratios paired round by round.
//!
//! The load is wrk's, pinned with taskset as in `bench edge` (one thread, so that a Lua script
//! has one state), with Lua scripts for the POST bodies: logins walk through the accounts, and
//! refreshes keep a queue of live refresh tokens, seeded with one token per session and fed by
//! each answer's successor (each refresh consumes its token). wrk can do that cleanly because
//! its `response()` callback runs before the connection asks `request()` for its next body, so
//! the queue never runs dry while every answer is a 200 (it is seeded with twice as many
//! sessions as connections: wrk calls `request()` once more to check the script, and that token
//! is never sent); a token cut off by the end of a run is lost, so every refresh run starts from
//! fresh sessions (opened in-process, as a login does after the password check, without
//! bcrypt). So every HTTP load comes from the same, pinned wrk; only the gRPC comparison needs
//! the Rust load generator, which runs as a child process pinned to wrk's CPU on one thread.
//!
//! The in-process bounds need auth-api's library and a tokio runtime, which the everyday xtask
//! does not build: `bench api` builds `auth-api` and xtask (feature `api-bench`) in release and
//! re-runs itself as that binary, so the bounds run optimised like the server.

use std::path::Path;

use clap::{Args, ValueEnum};

use crate::tools::{run, step};

/// A store auth-api can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the local PostgreSQL (`AUTH_TEST_POSTGRES_URL`, default
    /// `postgres://postgres@127.0.0.1:5432/postgres`), dropped after.
    Postgres,
    /// A fresh database on the local MariaDB or a MySQL (`AUTH_TEST_MYSQL_URL`, default
    /// `mysql://root@127.0.0.1:3306/mysql`), dropped after.
    #[value(alias = "mariadb")]
    Mysql,
}

impl StoreKind {
    #[cfg_attr(not(feature = "api-bench"), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "SQLite",
            StoreKind::Postgres => "PostgreSQL",
            StoreKind::Mysql => "MariaDB",
        }
    }
}

/// Options of `cargo xtask bench api`.
#[derive(Debug, Args)]
#[cfg_attr(not(feature = "api-bench"), allow(dead_code))]
pub(crate) struct ApiArgs {
    /// The stores, comma-separated; each round measures them in this order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StoreKind::Sqlite, StoreKind::Postgres, StoreKind::Mysql])]
    store: Vec<StoreKind>,
    /// Seconds of load per refresh and `/validate` measurement (and per in-process bound).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=600))]
    seconds: u32,
    /// Seconds of load per login measurement: longer, since a run's first and last bcrypt
    /// computations are only partly counted.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=600))]
    login_seconds: u32,
    /// Rounds; each round runs every measurement on every store once, in the same order.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Seconds of unrecorded load per measurement before the first round; 0 skips the warm-up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=600))]
    warmup: u32,
    /// Connections for `/refresh` and `/validate`, and tasks of the in-process bounds.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// Connections for `/login`; default three per CPU auth-api runs on (more than the bcrypt
    /// slots, so that a slot never waits for a client).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    login_connections: Option<u32>,
    /// `AUTH_BCRYPT_COST` (12 is the default, as in production).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(10..=31))]
    bcrypt_cost: u32,
    /// Accounts the logins cycle through (at least twice the login connections, so that no
    /// email is ever logged into twice at once).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    users: u32,
    /// Only `/healthz` and `/validate` (one token, then many): no bcrypt, login or refresh.
    #[arg(long)]
    validate_only: bool,
    /// Access tokens, each of its own session, that the many-token `/validate` run cycles
    /// through.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    validate_tokens: u32,
    /// HTTP/2 connections that the `--connections` concurrent gRPC `Validate` calls of the Rust
    /// load generator share (its HTTP/1.1 run opens one connection per call in flight).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    grpc_connections: u32,
    /// The auth-api binary to measure instead of `target/release/auth-api` (e.g. a copy built
    /// from an earlier commit, to compare).
    #[arg(long)]
    binary: Option<std::path::PathBuf>,
}

#[cfg(feature = "api-bench")]
pub(crate) fn api(root: &Path, args: &ApiArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        return release_run(root);
    }
    measure::run(root, args)
}

#[cfg(not(feature = "api-bench"))]
pub(crate) fn api(root: &Path, _args: &ApiArgs) -> anyhow::Result<()> {
    release_run(root)
}

/// Builds auth-api and the release xtask with the `api-bench` feature: one command for both
/// benchmarks (`bench edge` runs this auth-api for `ext_authz`), since with another feature set
/// they would rebuild auth-api in turn.
pub(crate) fn build_release(root: &Path) -> anyhow::Result<()> {
    run(
        root,
        "cargo",
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            "auth-api",
            "-p",
            "xtask",
            "--features",
            "xtask/api-bench",
        ],
    )
}

/// Builds auth-api and this benchmark in release, then replaces this process with the release
/// xtask, given the same arguments.
fn release_run(root: &Path) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    step("build auth-api and the benchmark (release)", || {
        build_release(root)
    })?;
    let xtask = crate::tools::target_dir(root).join("release/xtask");
    let error = std::process::Command::new(&xtask)
        .current_dir(root)
        .args(std::env::args_os().skip(1))
        .exec();
    Err(anyhow::Error::new(error).context(format!("cannot run {}", xtask.display())))
}

#[cfg(feature = "api-bench")]
mod measure {
    use std::{
        fs::File,
        future::Future,
        net::{SocketAddr, TcpStream},
        path::{Path, PathBuf},
        process::{Child, Command},
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::{Duration, Instant},
    };

    use anyhow::{bail, Context as _};
    use auth_api::{clock::Clock, store::NewSession, tokens::RefreshToken, AppState, Config};
    use rand_core::{OsRng, RngCore as _};
    use reqwest::blocking::Client;
    use serde_json::Value;

    use super::{ApiArgs, StoreKind};
    use crate::{
        bench_client::{check_grpc, LoadOutput, Protocol},
        bench_load::{
            allowed_cpus, ensure_load_tools, interrupted, median, or_interrupted,
            process_cpu_seconds, Wrk, WrkOutput,
        },
        report::{machine, publish, push_notes, source_commit},
        tools::{ensure_mariadb, ensure_postgres, step, target_dir, DbServer, ThrowawayDb},
    };

    /// The key-encryption key of every store (32 bytes, base64url): only ever used on loopback
    /// by this benchmark. PostgreSQL refuses to start without one; SQLite gets it too, so that
    /// both seal alike.
    const KEK: &str = "bench-api:YXV0aC1zZXJ2aWNlIGFwaSBiZW5jaG1hcmsga2VrISE";
    /// The password of every benchmark account.
    const PASSWORD: &str = "loopback-Bench-password-4f9c2e71";
    /// Targets of issue 11.
    const TARGET_LOGIN: f64 = 0.90;
    const TARGET_REFRESH: f64 = 0.50;
    const TARGET_VALIDATE: f64 = 20_000.0;

    fn email(i: u32) -> String {
        format!("bench-{i}@example.com")
    }

    /// The SQLite store's directory, removed when dropped (also when the run fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn create() -> anyhow::Result<Self> {
            let dir = std::env::temp_dir().join(format!("auth-bench-api-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok(Self(dir))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A running auth-api, killed when dropped.
    struct Server {
        child: Child,
        log: PathBuf,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Server {
        /// The end of its log, for an error message.
        fn log_tail(&self) -> String {
            crate::tools::log_tail("auth-api", &self.log)
        }

        fn ensure_running(&mut self) -> anyhow::Result<()> {
            if let Some(exit) = self.child.try_wait()? {
                bail!("auth-api exited with {exit}{}", self.log_tail());
            }
            Ok(())
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct Sample {
        rps: f64,
        p50_us: f64,
        p99_us: f64,
    }

    impl From<&LoadOutput> for Sample {
        fn from(out: &LoadOutput) -> Self {
            Self {
                rps: out.rps,
                p50_us: out.p50_us,
                p99_us: out.p99_us,
            }
        }
    }

    impl From<&WrkOutput> for Sample {
        fn from(out: &WrkOutput) -> Self {
            Self {
                rps: out.rps,
                p50_us: out.p50_us,
                p99_us: out.p99_us,
            }
        }
    }

    /// Samples of one store, one per round.
    #[derive(Default)]
    struct Samples {
        /// Median seconds of one bcrypt verify.
        bcrypt_verify: Vec<f64>,
        /// bcrypt verifies per second with one thread per CPU of auth-api, all at once.
        bcrypt_parallel: Vec<f64>,
        login: Vec<Sample>,
        refresh: Vec<Sample>,
        store_bound: Vec<Sample>,
        service: Vec<Sample>,
        validate: Vec<Sample>,
        validate_mix: Vec<Sample>,
        /// The many-token `/validate` by this benchmark's own Rust client, over HTTP/1.1 and
        /// over gRPC.
        validate_http_rust: Vec<Sample>,
        validate_grpc_rust: Vec<Sample>,
        /// CPU time per call of the many-token runs: wrk's, the Rust client's over HTTP, over
        /// gRPC.
        validate_mix_cpu: Vec<CpuPerCall>,
        http_rust_cpu: Vec<CpuPerCall>,
        grpc_rust_cpu: Vec<CpuPerCall>,
        healthz: Vec<Sample>,
    }

    /// CPU microseconds per call: auth-api's, and the load generator's (NaN for wrk, whose CPU
    /// time is not read).
    #[derive(Clone, Copy, Debug)]
    struct CpuPerCall {
        server_us: f64,
        client_us: f64,
    }

    impl Target {
        /// auth-api's user + system time so far, in seconds.
        fn server_cpu_seconds(&self) -> anyhow::Result<f64> {
            process_cpu_seconds(self.server.child.id())
        }
    }

    /// One store under test. Fields drop in order: the server, then the in-process state,
    /// then the database.
    struct Target {
        kind: StoreKind,
        server: Server,
        port: u16,
        /// auth-api's gRPC port (`AUTH_GRPC_LISTEN`).
        grpc_port: u16,
        state: AppState,
        /// Fresh refresh tokens, one batch of twice `connections` per wrk run.
        sessions: Vec<String>,
        /// The live token hash of each chain of the store-queries bound.
        store_chains: Vec<Vec<u8>>,
        /// The live refresh token of each chain of the in-process service bound.
        service_chains: Vec<String>,
        access_token: String,
        /// Access tokens of as many sessions, one a line, for the many-token `/validate`.
        validate_tokens: PathBuf,
        samples: Samples,
        _db: Option<ThrowawayDb>,
    }

    /// CPUs: auth-api's, and wrk's.
    struct Cpus {
        server: Vec<u32>,
        load: Option<u32>,
        /// Whether auth-api is pinned (only with three CPUs or more).
        server_pinned: bool,
    }

    fn cpus() -> Cpus {
        let all = allowed_cpus();
        match all.split_last() {
            Some((&last, rest)) if rest.len() >= 2 => Cpus {
                server: rest.to_vec(),
                load: Some(last),
                server_pinned: true,
            },
            Some((&last, _)) => Cpus {
                server: all.clone(),
                load: Some(last),
                server_pinned: false,
            },
            None => Cpus {
                server: vec![0],
                load: None,
                server_pinned: false,
            },
        }
    }

    pub(super) fn run(root: &Path, args: &ApiArgs) -> anyhow::Result<()> {
        step("wrk and taskset", ensure_load_tools)?;
        if args.store.contains(&StoreKind::Postgres) {
            step("PostgreSQL", ensure_postgres)?;
        }
        if args.store.contains(&StoreKind::Mysql) {
            step("MariaDB", ensure_mariadb)?;
        }
        let mut stores = args.store.clone();
        stores.dedup();
        anyhow::ensure!(!stores.is_empty(), "no store to measure");
        let binary = args
            .binary
            .clone()
            .unwrap_or_else(|| target_dir(root).join("release/auth-api"));
        anyhow::ensure!(binary.exists(), "{} is missing", binary.display());
        let source = if args.binary.is_some() {
            format!("`{}` (`--binary`)", binary.display())
        } else {
            source_commit(root, &["auth-api", "jwt", "migrations"])
        };
        let work = target_dir(root).join("bench-api");
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let temp = TempDir::create()?;
        let temp = &temp.0;
        let cpus = cpus();
        let cores = cpus.server.len();
        let login_connections = args
            .login_connections
            .unwrap_or(u32::try_from(cores * 3).unwrap_or(6));
        anyhow::ensure!(
            args.users >= login_connections * 2,
            "--users {} must be at least twice --login-connections ({login_connections})",
            args.users
        );
        println!(
            "    auth-api on CPUs {:?}{}, wrk on {:?}",
            cpus.server,
            if cpus.server_pinned {
                ""
            } else {
                " (not pinned: fewer than three CPUs)"
            },
            cpus.load
        );

        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("cannot catch Ctrl-C")?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores)
            .enable_all()
            .build()?;
        let _entered = runtime.enter();

        let wrk_runs = usize::try_from(args.rounds + u32::from(args.warmup > 0))?;
        let connections = usize::try_from(args.connections)?;
        // Sessions for the refresh runs and the in-process bounds (none for `--validate-only`).
        let (wrk_sessions, chains) = if args.validate_only {
            (0, 0)
        } else {
            (wrk_runs * 2 * connections, connections)
        };
        let mut targets = Vec::new();
        for &kind in &stores {
            let target = step(&format!("start auth-api on {}", kind.name()), || {
                start(
                    &runtime,
                    kind,
                    &binary,
                    &work,
                    temp,
                    &cpus,
                    args,
                    wrk_sessions,
                    chains,
                )
            })?;
            targets.push(target);
        }

        let bcrypt_input = "x".repeat(64);
        let bcrypt_hash = bcrypt::non_truncating_hash(&bcrypt_input, args.bcrypt_cost)?;
        let scripts = Scripts::write(&work, args.users)?;
        let client = control_client()?;
        for target in &mut targets {
            step(&format!("check {} over HTTP", target.kind.name()), || {
                check(&client, target)
            })?;
            step(&format!("check {} over gRPC", target.kind.name()), || {
                runtime.block_on(check_grpc(target.grpc_port, &target.access_token))
            })?;
        }
        drop(client);

        let mut notes = Vec::new();
        let login_and_refresh = |round: Option<u32>,
                                 target: &mut Target,
                                 notes: &mut Vec<String>|
         -> anyhow::Result<()> {
            let (seconds, login_seconds) = match round {
                Some(_) => (args.seconds, args.login_seconds),
                None => (args.warmup, args.warmup),
            };
            let store = target.kind.name();
            let label = |what: &str| match round {
                Some(r) => format!("round {r}/{}, {store}, {what}", args.rounds),
                None => format!("warm-up, {store}, {what}"),
            };
            let verify = bcrypt_verify_secs(&bcrypt_input, &bcrypt_hash, 5)?;
            #[allow(clippy::cast_precision_loss)] // a core count
            let bound = cores as f64 / verify;
            println!(
                "    {:<40} one verify {:>7.1} ms → {bound:>7.1} logins/s on {cores} CPU(s)",
                label("bcrypt bound"),
                verify * 1e3
            );
            let parallel = bcrypt_parallel_rate(&bcrypt_input, &bcrypt_hash, cores, 3)?;
            println!(
                "    {:<40} {parallel:>7.1} verifies/s",
                label("bcrypt, all CPUs at once")
            );

            interrupted(&stop)?;
            let login = wrk(
                target,
                &cpus,
                "/login",
                login_seconds,
                login_connections,
                Some(&scripts.login),
                Vec::new(),
            )
            .with_context(|| label("login"))?;
            report_line(&label("login"), &login, notes);

            interrupted(&stop)?;
            let batch: Vec<String> = target.sessions.drain(..2 * connections).collect();
            let tokens = scripts.dir.join(format!("tokens-{store}.txt"));
            std::fs::write(&tokens, batch.join("\n"))?;
            let refresh = wrk(
                target,
                &cpus,
                "/refresh",
                seconds,
                args.connections,
                Some(&scripts.refresh(&tokens)?),
                Vec::new(),
            )
            .with_context(|| label("refresh"))?;
            report_line(&label("refresh"), &refresh, notes);

            interrupted(&stop)?;
            let store_bound = runtime
                .block_on(store_bound(
                    &target.state,
                    &mut target.store_chains,
                    seconds,
                ))
                .with_context(|| label("refresh, store queries in-process"))?;
            print_sample(&label("refresh, store in-process"), &store_bound);

            interrupted(&stop)?;
            let service = runtime
                .block_on(service_bound(
                    &target.state,
                    &mut target.service_chains,
                    seconds,
                ))
                .with_context(|| label("refresh, service in-process"))?;
            print_sample(&label("refresh, service in-process"), &service);

            if round.is_some() {
                let s = &mut target.samples;
                s.bcrypt_verify.push(verify);
                s.bcrypt_parallel.push(parallel);
                s.login.push(Sample::from(&login));
                s.refresh.push(Sample::from(&refresh));
                s.store_bound.push(store_bound);
                s.service.push(service);
            }
            Ok(())
        };
        let one_round = |round: Option<u32>,
                         targets: &mut Vec<Target>,
                         notes: &mut Vec<String>|
         -> anyhow::Result<()> {
            let seconds = match round {
                Some(_) => args.seconds,
                None => args.warmup,
            };
            for target in targets.iter_mut() {
                let store = target.kind.name();
                let label = |what: &str| match round {
                    Some(r) => format!("round {r}/{}, {store}, {what}", args.rounds),
                    None => format!("warm-up, {store}, {what}"),
                };
                interrupted(&stop)?;
                if !args.validate_only {
                    login_and_refresh(round, target, notes)?;
                }

                interrupted(&stop)?;
                let healthz = wrk(
                    target,
                    &cpus,
                    "/healthz",
                    seconds,
                    args.connections,
                    None,
                    Vec::new(),
                )
                .with_context(|| label("healthz"))?;
                report_line(&label("healthz"), &healthz, notes);

                interrupted(&stop)?;
                let validate = wrk(
                    target,
                    &cpus,
                    "/validate",
                    seconds,
                    args.connections,
                    None,
                    vec![format!("authorization: Bearer {}", target.access_token)],
                )
                .with_context(|| label("validate"))?;
                report_line(&label("validate, one token"), &validate, notes);

                interrupted(&stop)?;
                let script = scripts.validate_mix(&target.validate_tokens)?;
                let cpu_before = target.server_cpu_seconds()?;
                let validate_mix = wrk(
                    target,
                    &cpus,
                    "/validate",
                    seconds,
                    args.connections,
                    Some(&script),
                    Vec::new(),
                )
                .with_context(|| label("validate, many tokens"))?;
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let mix_cpu = CpuPerCall {
                    server_us: (target.server_cpu_seconds()? - cpu_before) * 1e6
                        / validate_mix.requests.max(1) as f64,
                    client_us: f64::NAN,
                };
                report_line(
                    &label(&format!("validate, {} tokens", args.validate_tokens)),
                    &validate_mix,
                    notes,
                );

                // The same many-token load by this benchmark's own client, over HTTP/1.1 and
                // then over gRPC (wrk cannot speak gRPC).
                let mut rust = Vec::new();
                let mut rust_cpu = Vec::new();
                for (protocol, what) in [
                    (Protocol::Http, "validate, HTTP (Rust client)"),
                    (Protocol::Grpc, "validate, gRPC (Rust client)"),
                ] {
                    interrupted(&stop)?;
                    let (out, cpu) = rust_load(target, &cpus, protocol, seconds, args)
                        .with_context(|| label(what))?;
                    let sample = Sample::from(&out);
                    print_sample(&label(what), &sample);
                    println!(
                        "    {:<40} CPU per call: auth-api {:.1} µs, client {:.1} µs",
                        "", cpu.server_us, cpu.client_us
                    );
                    rust.push(sample);
                    rust_cpu.push(cpu);
                }

                if round.is_some() {
                    let s = &mut target.samples;
                    s.healthz.push(Sample::from(&healthz));
                    s.validate.push(Sample::from(&validate));
                    s.validate_mix.push(Sample::from(&validate_mix));
                    s.validate_http_rust.extend(rust.first().copied());
                    s.validate_grpc_rust.extend(rust.get(1).copied());
                    s.validate_mix_cpu.push(mix_cpu);
                    s.http_rust_cpu.extend(rust_cpu.first().copied());
                    s.grpc_rust_cpu.extend(rust_cpu.get(1).copied());
                }
            }
            Ok(())
        };
        if args.warmup > 0 {
            step("warm-up", || one_round(None, &mut targets, &mut notes))
                .map_err(|e| or_interrupted(e, &stop))?;
        }
        step("measure", || {
            for round in 1..=args.rounds {
                one_round(Some(round), &mut targets, &mut notes)?;
            }
            Ok(())
        })
        .map_err(|e| or_interrupted(e, &stop))?;

        let setup = Setup {
            args,
            cores,
            login_connections,
            cpus: &cpus,
            source,
        };
        let report = report(&setup, &targets, &notes);
        for target in &targets {
            runtime.block_on(target.state.store.close());
        }
        drop(targets);
        publish(&report, &target_dir(root).join("bench-api.md"))
    }

    /// The environment of auth-api: production defaults except for the benchmark's needs.
    fn server_env(
        database_url: &str,
        port: u16,
        grpc_port: u16,
        args: &ApiArgs,
        cores: usize,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("AUTH_DATABASE_URL", database_url.to_owned()),
            ("AUTH_LISTEN", format!("127.0.0.1:{port}")),
            ("AUTH_GRPC_LISTEN", format!("127.0.0.1:{grpc_port}")),
            ("AUTH_KEY_ENCRYPTION_KEYS", KEK.to_owned()),
            ("AUTH_BCRYPT_COST", args.bcrypt_cost.to_string()),
            ("AUTH_HASH_CONCURRENCY", cores.to_string()),
            // Every login client waits for a slot rather than being turned away.
            ("AUTH_HASH_QUEUE", "1000".to_owned()),
            // wrk is one address: the per-address limit must not be what is measured.
            ("AUTH_IP_LIMIT_PER_MINUTE", "1000000000".to_owned()),
            // The `/validate` token must outlive the run.
            ("AUTH_ACCESS_TOKEN_TTL_SECS", "86400".to_owned()),
            ("AUTH_LOG_FORMAT", "text".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        runtime: &tokio::runtime::Runtime,
        kind: StoreKind,
        binary: &Path,
        work: &Path,
        temp: &Path,
        cpus: &Cpus,
        args: &ApiArgs,
        wrk_sessions: usize,
        connections: usize,
    ) -> anyhow::Result<Target> {
        let (db, database_url) = match kind {
            StoreKind::Postgres | StoreKind::Mysql => {
                let server = if kind == StoreKind::Postgres {
                    DbServer::Postgres
                } else {
                    DbServer::Mysql
                };
                let db = ThrowawayDb::create(server, "bench_api")?;
                let url = db.url.clone();
                (Some(db), url)
            }
            StoreKind::Sqlite => (None, format!("sqlite://{}", temp.join("auth.db").display())),
        };
        let port = crate::ports::free_port();
        let grpc_port = loop {
            let candidate = crate::ports::free_port();
            if candidate != port {
                break candidate;
            }
        };
        let env = server_env(&database_url, port, grpc_port, args, cpus.server.len());
        let log = work.join(format!("auth-api-{}.log", kind.name()));
        let file = File::create(&log)?;
        let mut cmd = if cpus.server_pinned {
            let list: Vec<String> = cpus.server.iter().map(u32::to_string).collect();
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", &list.join(",")]).arg(binary);
            cmd
        } else {
            Command::new(binary)
        };
        cmd.arg("serve").stdout(file.try_clone()?).stderr(file);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AUTH_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut server = Server {
            child: cmd.spawn().context("cannot start auth-api")?,
            log,
        };
        wait_until_serving(&mut server, port, grpc_port)?;

        // The same configuration in this process, on the same database.
        let config = Config::from_lookup(|name| {
            env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone())
        })?;
        let state = runtime.block_on(AppState::new(config, Clock::default()))?;
        let users = runtime.block_on(sign_up(&state, args.users))?;
        println!("    {} accounts", users.len());
        let sessions = runtime.block_on(open_sessions(&state, &users, wrk_sessions))?;
        let store_chains = runtime
            .block_on(open_sessions(&state, &users, connections))?
            .iter()
            .map(|token| RefreshToken::parse(token).map(|t| t.hash()))
            .collect::<Option<Vec<_>>>()
            .context("a refresh token that does not parse")?;
        let service_chains = runtime.block_on(open_sessions(&state, &users, connections))?;
        let access_tokens = runtime.block_on(access_tokens(
            &state,
            &users,
            usize::try_from(args.validate_tokens)?,
        ))?;
        let validate_tokens = work.join(format!("validate-tokens-{}.txt", kind.name()));
        std::fs::write(&validate_tokens, access_tokens.join("\n"))?;
        println!(
            "    {} sessions",
            sessions.len() + store_chains.len() + service_chains.len() + access_tokens.len()
        );
        Ok(Target {
            kind,
            server,
            port,
            grpc_port,
            state,
            sessions,
            store_chains,
            service_chains,
            access_token: String::new(),
            validate_tokens,
            samples: Samples::default(),
            _db: db,
        })
    }

    /// Waits until auth-api answers `/readyz` with a 200 and its gRPC port accepts connections.
    /// Its HTTP port accepts connections earlier: it binds before it migrates, and this process
    /// opens the same database next, which must not race those migrations.
    fn wait_until_serving(server: &mut Server, port: u16, grpc_port: u16) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let grpc = SocketAddr::from(([127, 0, 0, 1], grpc_port));
        let client = control_client()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            server.ensure_running()?;
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
                && client
                    .get(format!("http://{addr}/readyz"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                && TcpStream::connect_timeout(&grpc, Duration::from_millis(500)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "auth-api is not ready on {addr} after 60s{}",
            server.log_tail()
        )
    }

    /// Signs up `count` accounts through auth-api's own service (bcrypt at the configured
    /// cost, as many at once as the hasher allows); their ids and password hashes.
    async fn sign_up(state: &AppState, count: u32) -> anyhow::Result<Vec<(String, String)>> {
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let state = state.clone();
                tokio::spawn(async move {
                    // The bench's configuration has email verification off: every signup
                    // creates its account.
                    auth_api::service::accounts::signup(&state, &email(i), PASSWORD)
                        .await
                        .map_err(|e| anyhow::anyhow!("signup of {}: {e}", email(i)))?;
                    let user = state
                        .store
                        .user_by_email(&email(i))
                        .await?
                        .context("a new account is not found")?;
                    Ok::<_, anyhow::Error>((user.id, user.password_hash))
                })
            })
            .collect();
        let mut users = Vec::new();
        for task in tasks {
            users.push(task.await??);
        }
        Ok(users)
    }

    /// Opens `count` sessions over `users` directly through the store, as a login does after
    /// the password check (a sealed rotation key, the first token's hash); their refresh tokens.
    async fn open_sessions(
        state: &AppState,
        users: &[(String, String)],
        count: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(count);
        for (user_id, password_hash) in users.iter().cycle().take(count) {
            let id = uuid_v4();
            let key = auth_api::tokens::new_rotation_key();
            let rotation_key = state.ring.keks().seal_rotation_key(&id, &key)?;
            let token = RefreshToken::generate();
            let now = state.clock.now();
            let session = NewSession {
                id,
                user_id: user_id.clone(),
                created_at: now,
                expires_at: now + state.lifetimes.session_secs,
                rotation_key,
                first_token_hash: token.hash(),
                auth_method: auth_api::domain::AuthMethod::Password,
            };
            state
                .store
                .create_session(&session, password_hash)
                .await?
                .context("the store refused to open a session")?;
            tokens.push(token.expose().to_owned());
        }
        Ok(tokens)
    }

    /// Opens `count` sessions as [`open_sessions`] does and refreshes each once in-process: an
    /// access token of each.
    async fn access_tokens(
        state: &AppState,
        users: &[(String, String)],
        count: usize,
    ) -> anyhow::Result<Vec<String>> {
        let mut tokens = Vec::with_capacity(count);
        for refresh in open_sessions(state, users, count).await? {
            let pair = auth_api::service::sessions::refresh(state, &refresh)
                .await
                .map_err(|e| anyhow::anyhow!("refresh: {e}"))?;
            tokens.push(pair.access_token);
        }
        Ok(tokens)
    }

    fn uuid_v4() -> String {
        let mut b = [0_u8; 16];
        OsRng.fill_bytes(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }

    /// The median time of `n` bcrypt verifies of `input` against `hash`, in seconds, on this
    /// thread.
    fn bcrypt_verify_secs(input: &str, hash: &str, n: usize) -> anyhow::Result<f64> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            let ok = bcrypt::non_truncating_verify(input, hash)?;
            times.push(started.elapsed().as_secs_f64());
            anyhow::ensure!(ok, "bcrypt verify refused its own hash");
        }
        Ok(median(times))
    }

    /// Verifies per second with `threads` threads doing `each` verifies at once: what the
    /// machine gives bcrypt right now, neighbours included (for the record beside the bound).
    fn bcrypt_parallel_rate(
        input: &str,
        hash: &str,
        threads: usize,
        each: usize,
    ) -> anyhow::Result<f64> {
        let started = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| scope.spawn(|| bcrypt_verify_secs(input, hash, each)))
                .collect();
            for handle in handles {
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a bcrypt thread panicked"))??;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        #[allow(clippy::cast_precision_loss)] // small counts
        Ok((threads * each) as f64 / started.elapsed().as_secs_f64())
    }

    /// The queries of one refresh through auth-api's `Store`, by `chains.len()` concurrent
    /// tasks for `seconds`: find the presented token's session, record the successor and move
    /// the generation, read the user and its roles. Successor hashes are random here (the same
    /// 32 bytes a real successor's SHA-256 has); the rotation key and signing are left out.
    async fn store_bound(
        state: &AppState,
        chains: &mut [Vec<u8>],
        seconds: u32,
    ) -> anyhow::Result<Sample> {
        chained_bound(state, chains, seconds, |state, hash| async move {
            let store = &state.store;
            let found = store
                .find_refresh_token(&hash)
                .await?
                .context("a chain's live token is gone")?;
            let mut next = vec![0_u8; 32];
            OsRng.fill_bytes(&mut next);
            let won = store
                .rotate_refresh_token(
                    &found.session.id,
                    found.session.generation,
                    &next,
                    state.clock.now(),
                )
                .await?;
            anyhow::ensure!(won, "a chain's rotation lost");
            let user = store
                .user_by_id(&found.session.user_id)
                .await?
                .context("a session's user is gone")?;
            store.roles(&user.id).await?;
            Ok((state, next))
        })
        .await
    }

    /// auth-api's whole refresh (`service::sessions::refresh`) in this process, without HTTP.
    async fn service_bound(
        state: &AppState,
        chains: &mut [String],
        seconds: u32,
    ) -> anyhow::Result<Sample> {
        chained_bound(state, chains, seconds, |state, token| async move {
            let pair = auth_api::service::sessions::refresh(&state, &token)
                .await
                .map_err(|e| anyhow::anyhow!("refresh: {e}"))?;
            let next = pair.refresh_token.expose().to_owned();
            Ok((state, next))
        })
        .await
    }

    /// One task per chain for `seconds`, each calling `step` over and over with its own clone of
    /// `state` and its chain's live token, which the step hands back with the next one (so that
    /// no call clones the state, and only the step is timed). Each chain ends at the token its
    /// task left live.
    async fn chained_bound<T, F, Fut>(
        state: &AppState,
        chains: &mut [T],
        seconds: u32,
        step: F,
    ) -> anyhow::Result<Sample>
    where
        T: Clone + Send + 'static,
        F: Fn(AppState, T) -> Fut + Copy + Send + 'static,
        Fut: Future<Output = anyhow::Result<(AppState, T)>> + Send,
    {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds.into());
        let tasks: Vec<_> = chains
            .iter()
            .map(|live| {
                let mut state = state.clone();
                let mut live = live.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        (state, live) = step(state, live).await?;
                        latencies.push(t0.elapsed());
                    }
                    Ok::<_, anyhow::Error>((live, latencies))
                })
            })
            .collect();
        let mut all = Vec::new();
        for (chain, task) in chains.iter_mut().zip(tasks) {
            let (live, latencies) = task.await??;
            *chain = live;
            all.extend(latencies);
        }
        Ok(sample_of(all, started.elapsed()))
    }

    fn sample_of(mut latencies: Vec<Duration>, elapsed: Duration) -> Sample {
        let summary = crate::bench_load::latency_summary(&mut latencies, elapsed);
        Sample {
            rps: summary.rps,
            p50_us: summary.p50_us,
            p99_us: summary.p99_us,
        }
    }

    /// The Lua scripts of wrk.
    struct Scripts {
        dir: PathBuf,
        login: PathBuf,
    }

    impl Scripts {
        fn write(work: &Path, users: u32) -> anyhow::Result<Self> {
            let login = work.join("login.lua");
            let script = r#"-- Logins of USERS accounts in turn, so that no email is logged into twice at once.
local users = USERS
local n = 0
local headers = { ["Content-Type"] = "application/json" }
request = function()
  n = n + 1
  local body = string.format('{"email":"bench-%d@example.com","password":"PASSWORD"}', n % users)
  return wrk.format("POST", "/login", headers, body)
end
"#
            .replace("USERS", &users.to_string())
            .replace("PASSWORD", PASSWORD);
            std::fs::write(&login, script)?;
            Ok(Self {
                dir: work.to_path_buf(),
                login,
            })
        }

        /// A `/validate` script that cycles through the access tokens in `tokens` (one a line),
        /// each request formatted once and then reused, so that wrk's Lua costs little more
        /// than a fixed request.
        fn validate_mix(&self, tokens: &Path) -> anyhow::Result<PathBuf> {
            let path = tokens.to_string_lossy();
            anyhow::ensure!(!path.contains("]]"), "an unusual path: {path}");
            let script = r#"-- One access token after the other, each of its own session.
local tokens = {}
for line in io.lines([[TOKENS]]) do
  if #line > 0 then tokens[#tokens + 1] = line end
end
local requests, n = {}, 0
request = function()
  n = n % #tokens + 1
  local r = requests[n]
  if r == nil then
    r = wrk.format("GET", "/validate", { ["Authorization"] = "Bearer " .. tokens[n] })
    requests[n] = r
  end
  return r
end
-- No response(): wrk counts the answers that are not 2xx, and a Lua call per answer would
-- take CPU from the server on a shared machine.
"#
            .replace("TOKENS", &path);
            let file = self.dir.join("validate-mix.lua");
            std::fs::write(&file, script)?;
            Ok(file)
        }

        /// A refresh script that starts from the tokens in `tokens` (one a line).
        fn refresh(&self, tokens: &Path) -> anyhow::Result<PathBuf> {
            let path = tokens.to_string_lossy();
            anyhow::ensure!(!path.contains("]]"), "an unusual path: {path}");
            let script = r#"-- Refresh tokens rotate: each refresh consumes its token. A queue of live tokens, seeded
-- with one per session (twice as many as connections: wrk also calls request() once to check
-- the script, and that token is never sent) and fed by each answer's successor; response()
-- runs before the connection asks request() for its next body, so the queue never runs dry
-- while every answer is a 200 (any other answer fails the run).
local queue, head, tail = {}, 1, 0
for line in io.lines([[TOKENS]]) do
  if #line > 0 then tail = tail + 1; queue[tail] = line end
end
local headers = { ["Content-Type"] = "application/json" }
request = function()
  local token = "exhausted"
  if head <= tail then
    token = queue[head]; queue[head] = nil; head = head + 1
  end
  return wrk.format("POST", "/refresh", headers, '{"refresh_token":"' .. token .. '"}')
end
local refused = 0
response = function(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then tail = tail + 1; queue[tail] = token end
  elseif refused < 3 then
    -- The first few refusals, for the error message.
    refused = refused + 1
    io.write("refused: ", status, " ", body, "\n")
  end
end
"#
            .replace("TOKENS", &path);
            let file = self.dir.join("refresh.lua");
            std::fs::write(&file, script)?;
            Ok(file)
        }
    }

    fn wrk(
        target: &mut Target,
        cpus: &Cpus,
        path: &str,
        seconds: u32,
        connections: u32,
        script: Option<&Path>,
        headers: Vec<String>,
    ) -> anyhow::Result<WrkOutput> {
        let out = Wrk {
            load_cpu: cpus.load,
            url: format!("http://127.0.0.1:{}{path}", target.port),
            seconds,
            connections,
            headers,
            script,
            // A login waits for a bcrypt slot behind the other connections: seconds on a
            // busy machine, which must still count in the latencies.
            timeout_secs: Some(60),
        }
        .run()?;
        target.server.ensure_running()?;
        if out.requests == 0 {
            bail!("wrk completed no request{}", target.server.log_tail());
        }
        if out.non_2xx > 0 {
            let refused: Vec<&str> = out
                .stdout
                .lines()
                .filter(|l| l.starts_with("refused: "))
                .collect();
            bail!(
                "{} of {} answers to {path} were not 2xx{}{}",
                out.non_2xx,
                out.requests,
                if refused.is_empty() {
                    String::new()
                } else {
                    format!(" (the first: {})", refused.join("; "))
                },
                target.server.log_tail()
            );
        }
        Ok(out)
    }

    /// The many-token validation load of `bench_client` over `protocol`: this xtask binary
    /// again (`bench validate-load`), pinned to wrk's CPU, with as many calls in flight as wrk
    /// has connections.
    fn rust_load(
        target: &mut Target,
        cpus: &Cpus,
        protocol: Protocol,
        seconds: u32,
        args: &ApiArgs,
    ) -> anyhow::Result<(LoadOutput, CpuPerCall)> {
        let exe = std::env::current_exe().context("cannot find this xtask binary")?;
        let mut cmd = match cpus.load {
            Some(cpu) => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &cpu.to_string()]).arg(&exe);
                cmd
            }
            None => Command::new(&exe),
        };
        let (name, port) = match protocol {
            Protocol::Http => ("http", target.port),
            Protocol::Grpc => ("grpc", target.grpc_port),
        };
        cmd.args(["bench", "validate-load", "--protocol", name])
            .args(["--port", &port.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .args(["--concurrency", &args.connections.to_string()])
            .args(["--connections", &args.grpc_connections.to_string()])
            .arg("--tokens")
            .arg(&target.validate_tokens);
        let cpu_before = target.server_cpu_seconds()?;
        let output = cmd.output().context("cannot run the load generator")?;
        target.server.ensure_running()?;
        let server_cpu = target.server_cpu_seconds()? - cpu_before;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "the load generator ({name}) exited with {}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                target.server.log_tail()
            );
        }
        let out = LoadOutput::from_json(stdout.lines().last().unwrap_or_default())?;
        if out.calls == 0 {
            bail!(
                "the load generator ({name}) completed no call{}",
                target.server.log_tail()
            );
        }
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let cpu = CpuPerCall {
            server_us: server_cpu * 1e6 / out.calls as f64,
            client_us: out.client_cpu_us,
        };
        Ok((out, cpu))
    }

    fn report_line(label: &str, out: &WrkOutput, notes: &mut Vec<String>) {
        print_sample(label, &Sample::from(out));
        if let Some(errors) = &out.socket_errors {
            notes.push(format!("{label}: socket errors: {errors}"));
        }
    }

    fn print_sample(label: &str, s: &Sample) {
        println!(
            "    {label:<40} {:>9.1} /s  p50 {:>8.2} ms  p99 {:>8.2} ms",
            s.rps,
            s.p50_us / 1e3,
            s.p99_us / 1e3
        );
    }

    fn control_client() -> anyhow::Result<Client> {
        Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .build()
            .context("cannot build an HTTP client")
    }

    /// A login, a refresh and a validation over HTTP, each a 200; keeps the access token.
    fn check(client: &Client, target: &mut Target) -> anyhow::Result<()> {
        let base = format!("http://127.0.0.1:{}", target.port);
        let post = |path: &str, body: Value| -> anyhow::Result<Value> {
            let answer = client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()?;
            let status = answer.status();
            let text = answer.text()?;
            anyhow::ensure!(status == 200, "POST {path}: {status}: {text}");
            Ok(serde_json::from_str(&text)?)
        };
        let login = post(
            "/login",
            serde_json::json!({"email": email(0), "password": PASSWORD}),
        )?;
        let refresh_token = login["refresh_token"]
            .as_str()
            .context("no refresh_token")?;
        let refreshed = post(
            "/refresh",
            serde_json::json!({"refresh_token": refresh_token}),
        )?;
        let access = refreshed["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned();
        let answer = client
            .get(format!("{base}/validate"))
            .bearer_auth(&access)
            .send()?;
        anyhow::ensure!(answer.status() == 200, "GET /validate: {}", answer.status());
        target.access_token = access;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Report.

    struct Setup<'a> {
        args: &'a ApiArgs,
        cores: usize,
        login_connections: u32,
        cpus: &'a Cpus,
        /// Which auth-api was measured (its commit, or the `--binary` given).
        source: String,
    }

    fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
        median(samples.iter().map(f).collect())
    }

    /// A rate with a decimal below 100/s (logins), whole above.
    fn rate(per_second: f64) -> String {
        if per_second < 100.0 {
            format!("{per_second:.1}")
        } else {
            format!("{per_second:.0}")
        }
    }

    fn verdict(value: f64, target: f64) -> &'static str {
        if value >= target {
            "met"
        } else {
            "**missed**"
        }
    }

    /// gRPC `Validate` ÷ HTTP `/validate` requests/s by the same Rust client, paired round by
    /// round.
    fn grpc_over_http(s: &Samples) -> f64 {
        median(
            s.validate_grpc_rust
                .iter()
                .zip(&s.validate_http_rust)
                .map(|(g, h)| g.rps / h.rps)
                .collect(),
        )
    }

    fn report(setup: &Setup<'_>, targets: &[Target], notes: &[String]) -> String {
        let args = setup.args;
        #[allow(clippy::cast_precision_loss)] // a core count
        let cores = setup.cores as f64;
        let mut md = String::new();
        md.push_str("### API benchmark (`cargo xtask bench api`)\n\n");
        md.push_str(&format!(
            "auth-api release build, bcrypt cost {cost}, on {server} (`AUTH_HASH_CONCURRENCY` \
             {n}); wrk (1 thread) {load}. Logins: {lc} connections cycling through {users} \
             accounts, {ls} s per run; refresh and `/validate`: {c} connections, {s} s per run; \
             the in-process bounds: {c} tasks on a {n}-thread tokio runtime, {s} s. {rounds} \
             round(s) after {warmup} s of warm-up per measurement, alternated (per round and \
             store: bcrypt bound, login, refresh, its two in-process bounds, `/healthz`, \
             `/validate` with one token, then with many, then the many by the Rust client over \
             HTTP and over gRPC){only}; \
             medians over rounds, ratios paired round by round. auth-api built from {source}. \
             Machine: {machine}.\n\n",
            cost = args.bcrypt_cost,
            server = if setup.cpus.server_pinned {
                format!("CPUs {:?} (taskset)", setup.cpus.server)
            } else {
                format!("all {} CPUs (not pinned)", setup.cores)
            },
            n = setup.cores,
            load = match setup.cpus.load {
                Some(cpu) => format!("pinned to CPU {cpu}"),
                None => "not pinned".to_owned(),
            },
            lc = setup.login_connections,
            users = args.users,
            ls = args.login_seconds,
            c = args.connections,
            s = args.seconds,
            rounds = args.rounds,
            warmup = args.warmup,
            source = setup.source,
            machine = machine(),
            only = if args.validate_only {
                " (`--validate-only`: the last five alone)"
            } else {
                ""
            },
        ));
        md.push_str(
            "| store | measurement | per second | p50 ms | p99 ms | × bound | target |\n\
             |---|---|---:|---:|---:|---:|---|\n",
        );
        for target in targets {
            let s = &target.samples;
            let store = target.kind.name();
            let verify = median(s.bcrypt_verify.clone());
            let bound = cores / verify;
            let login_ratio = median(
                s.login
                    .iter()
                    .zip(&s.bcrypt_verify)
                    .map(|(l, v)| l.rps / (cores / v))
                    .collect(),
            );
            let refresh_ratio = median(
                s.refresh
                    .iter()
                    .zip(&s.store_bound)
                    .map(|(r, b)| r.rps / b.rps)
                    .collect(),
            );
            let row = |what: &str, samples: &[Sample], ratio: &str, target: &str| {
                format!(
                    "| {store} | {what} | {} | {:.2} | {:.2} | {ratio} | {target} |\n",
                    rate(med(samples, |x| x.rps)),
                    med(samples, |x| x.p50_us) / 1e3,
                    med(samples, |x| x.p99_us) / 1e3,
                )
            };
            if !args.validate_only {
                md.push_str(&format!(
                    "| {store} | bcrypt bound ({} CPU(s) ÷ {:.1} ms per verify) | {bound:.1} | — | — \
                     | 1.00 | |\n",
                    setup.cores,
                    verify * 1e3
                ));
                let parallel = median(s.bcrypt_parallel.clone());
                let parallel_ratio = median(
                    s.login
                        .iter()
                        .zip(&s.bcrypt_parallel)
                        .map(|(l, p)| l.rps / p)
                        .collect(),
                );
                md.push_str(&format!(
                    "| {store} | bcrypt on all {} CPU(s) at once, as measured (neighbours included) \
                     | {parallel:.1} | — | — | login {:.0}% of it | |\n",
                    setup.cores,
                    parallel_ratio * 100.0
                ));
                md.push_str(&row(
                    "`POST /login`",
                    &s.login,
                    &format!("{:.0}%", login_ratio * 100.0),
                    &format!(
                        "≥ {:.0}%: {}",
                        TARGET_LOGIN * 100.0,
                        verdict(login_ratio, TARGET_LOGIN)
                    ),
                ));
                md.push_str(&row(
                    "refresh, store queries in-process (bound)",
                    &s.store_bound,
                    "1.00",
                    "",
                ));
                md.push_str(&row(
                    "`POST /refresh`",
                    &s.refresh,
                    &format!("{:.0}%", refresh_ratio * 100.0),
                    &format!(
                        "≥ {:.0}%: {}",
                        TARGET_REFRESH * 100.0,
                        verdict(refresh_ratio, TARGET_REFRESH)
                    ),
                ));
                let service_ratio = median(
                    s.service
                        .iter()
                        .zip(&s.store_bound)
                        .map(|(r, b)| r.rps / b.rps)
                        .collect(),
                );
                md.push_str(&row(
                    "refresh, whole service in-process (no HTTP)",
                    &s.service,
                    &format!("{:.0}%", service_ratio * 100.0),
                    "",
                ));
            }
            let validate_target = |samples: &[Sample]| {
                if target.kind == StoreKind::Postgres {
                    format!(
                        "≥ {:.0}k/s: {}",
                        TARGET_VALIDATE / 1e3,
                        verdict(med(samples, |x| x.rps), TARGET_VALIDATE)
                    )
                } else {
                    String::new()
                }
            };
            md.push_str(&row(
                "`GET /healthz` (the HTTP stack alone: a ceiling)",
                &s.healthz,
                "—",
                "",
            ));
            md.push_str(&row(
                "`GET /validate`, one token replayed",
                &s.validate,
                "—",
                &validate_target(&s.validate),
            ));
            md.push_str(&row(
                &format!(
                    "`GET /validate`, {n} tokens of {n} sessions in turn",
                    n = args.validate_tokens
                ),
                &s.validate_mix,
                "—",
                &validate_target(&s.validate_mix),
            ));
            let http_over_wrk = median(
                s.validate_http_rust
                    .iter()
                    .zip(&s.validate_mix)
                    .map(|(r, w)| r.rps / w.rps)
                    .collect(),
            );
            md.push_str(&row(
                "validate, HTTP (Rust client): the same tokens, `GET /validate`",
                &s.validate_http_rust,
                &format!("{http_over_wrk:.2}× wrk"),
                "",
            ));
            md.push_str(&row(
                "validate, gRPC (Rust client): the same tokens, `auth.v1.AuthService/Validate`",
                &s.validate_grpc_rust,
                &format!("{:.2}× HTTP", grpc_over_http(s)),
                "",
            ));
        }
        md.push_str(&format!(
            "\n`/validate` over HTTP and `Validate` over gRPC, {n} tokens in turn. The Rust client \
             (`bench_client`) runs on one thread on wrk's CPU with {c} calls in flight: HTTP/1.1 \
             over {c} keep-alive connections, gRPC over {g} HTTP/2 connections, the token in \
             the `authorization` header or metadata, every answer read and checked. CPU per call \
             is user + system time from `/proc` around each run (auth-api's includes its \
             background work; the client's its connecting), medians over rounds.\n\n\
             | store | load | per second | p50 ms | p99 ms | auth-api CPU µs/call | client CPU \
             µs/call |\n|---|---|---:|---:|---:|---:|---:|\n",
            n = args.validate_tokens,
            c = args.connections,
            g = args.grpc_connections,
        ));
        for target in targets {
            let s = &target.samples;
            let cpu_med =
                |cpu: &[CpuPerCall], f: fn(&CpuPerCall) -> f64| median(cpu.iter().map(f).collect());
            for (what, samples, cpu) in [
                ("wrk, HTTP/1.1", &s.validate_mix, &s.validate_mix_cpu),
                (
                    "Rust client, HTTP/1.1",
                    &s.validate_http_rust,
                    &s.http_rust_cpu,
                ),
                ("Rust client, gRPC", &s.validate_grpc_rust, &s.grpc_rust_cpu),
            ] {
                let client = cpu_med(cpu, |c| c.client_us);
                md.push_str(&format!(
                    "| {} | {what} | {} | {:.2} | {:.2} | {:.1} | {} |\n",
                    target.kind.name(),
                    rate(med(samples, |x| x.rps)),
                    med(samples, |x| x.p50_us) / 1e3,
                    med(samples, |x| x.p99_us) / 1e3,
                    cpu_med(cpu, |c| c.server_us),
                    if client.is_nan() {
                        "—".to_owned()
                    } else {
                        format!("{client:.1}")
                    },
                ));
            }
        }
        md.push_str("\ngRPC ÷ HTTP, the same Rust client, paired round by round:");
        for target in targets {
            let s = &target.samples;
            let server_cpu = median(
                s.grpc_rust_cpu
                    .iter()
                    .zip(&s.http_rust_cpu)
                    .map(|(g, h)| g.server_us / h.server_us)
                    .collect(),
            );
            let client_cpu = median(
                s.grpc_rust_cpu
                    .iter()
                    .zip(&s.http_rust_cpu)
                    .map(|(g, h)| g.client_us / h.client_us)
                    .collect(),
            );
            md.push_str(&format!(
                " {}: {:.2}× the calls per second, {server_cpu:.2}× auth-api's CPU per call, \
                 {client_cpu:.2}× the client's.",
                target.kind.name(),
                grpc_over_http(s),
            ));
        }
        md.push('\n');

        md.push_str("\nPer round (per second):\n\n| store | measurement |");
        for round in 1..=args.rounds {
            md.push_str(&format!(" {round} |"));
        }
        md.push_str("\n|---|---|");
        for _ in 1..=args.rounds {
            md.push_str("---:|");
        }
        md.push('\n');
        for target in targets {
            let s = &target.samples;
            let bounds: Vec<Sample> = s
                .bcrypt_verify
                .iter()
                .map(|v| Sample {
                    rps: cores / v,
                    p50_us: v * 1e6,
                    p99_us: f64::NAN,
                })
                .collect();
            let parallel: Vec<Sample> = s
                .bcrypt_parallel
                .iter()
                .map(|&rps| Sample {
                    rps,
                    p50_us: f64::NAN,
                    p99_us: f64::NAN,
                })
                .collect();
            let mut rows = vec![
                ("bcrypt bound", &bounds),
                ("bcrypt, all CPUs at once", &parallel),
                ("login", &s.login),
                ("refresh, store in-process", &s.store_bound),
                ("refresh", &s.refresh),
                ("refresh, service in-process", &s.service),
            ];
            if args.validate_only {
                rows.clear();
            }
            rows.extend([
                ("healthz", &s.healthz),
                ("validate, one token", &s.validate),
                ("validate, many tokens", &s.validate_mix),
                ("validate, HTTP (Rust client)", &s.validate_http_rust),
                ("validate, gRPC (Rust client)", &s.validate_grpc_rust),
            ]);
            for (what, samples) in rows {
                md.push_str(&format!("| {} | {what} |", target.kind.name()));
                for sample in samples {
                    md.push_str(&format!(" {} |", rate(sample.rps)));
                }
                md.push('\n');
            }
        }
        push_notes(&mut md, notes);
        md
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn percentiles_and_rate_of_latencies() {
            let latencies: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
            let s = sample_of(latencies, Duration::from_secs(2));
            assert!((s.rps - 50.0).abs() < 1e-9);
            assert!((s.p50_us - 51_000.0).abs() < 1e-6);
            assert!((s.p99_us - 100_000.0).abs() < 1e-6);
            assert!(sample_of(Vec::new(), Duration::from_secs(1))
                .p50_us
                .is_nan());
        }

        #[test]
        fn session_ids_are_version_4_uuids() {
            let id = uuid_v4();
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12]
            );
            assert!(parts[2].starts_with('4'));
            assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
            assert_ne!(uuid_v4(), id);
        }

        #[test]
        fn the_scripts_name_their_accounts_and_tokens() {
            let dir = std::env::temp_dir().join(format!("bench-api-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let scripts = Scripts::write(&dir, 64).unwrap();
            let login = std::fs::read_to_string(&scripts.login).unwrap();
            assert!(login.contains("local users = 64"));
            assert!(login.contains(PASSWORD));
            let tokens = dir.join("tokens.txt");
            let refresh = std::fs::read_to_string(scripts.refresh(&tokens).unwrap()).unwrap();
            assert!(refresh.contains(&format!("io.lines([[{}]])", tokens.display())));
            assert!(scripts.refresh(&dir.join("a]]b")).is_err());
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ApiArgs,
    }

    #[test]
    fn every_store_by_default_and_any_list_of_them() {
        let cli = Cli::try_parse_from(["bench-api"]).unwrap();
        assert_eq!(
            cli.args.store,
            [StoreKind::Sqlite, StoreKind::Postgres, StoreKind::Mysql]
        );
        assert_eq!(cli.args.bcrypt_cost, 12);
        let cli = Cli::try_parse_from(["bench-api", "--store", "postgres"]).unwrap();
        assert_eq!(cli.args.store, [StoreKind::Postgres]);
        let cli = Cli::try_parse_from(["bench-api", "--store", "postgres,sqlite"]).unwrap();
        assert_eq!(cli.args.store, [StoreKind::Postgres, StoreKind::Sqlite]);
        let cli = Cli::try_parse_from(["bench-api", "--store", "mariadb,sqlite"]).unwrap();
        assert_eq!(cli.args.store, [StoreKind::Mysql, StoreKind::Sqlite]);
        assert!(Cli::try_parse_from(["bench-api", "--store", "oracle"]).is_err());
        // auth-api refuses a cost below 10 from the environment.
        assert!(Cli::try_parse_from(["bench-api", "--bcrypt-cost", "9"]).is_err());
    }
}
