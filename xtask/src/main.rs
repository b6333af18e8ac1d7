//! `cargo xtask <command>`: the project's scripts, in Rust.
//!
//! - `test`: everything CI runs, from a fresh clone.
//! - `up`: the whole dev stack on one machine (auth-api on SQLite, or on the PostgreSQL or
//!   MariaDB database `AUTH_DATABASE_URL` names; the echo upstream; Envoy loading the filter),
//!   until Ctrl-C.
//! - `bench edge`: the filter's cost per request in Envoy, next to native `jwt_authn`.
//! - `bench api`: auth-api's logins, refreshes and validations per second on each store, beside
//!   the bcrypt bound and the store's in-process bound.
//! - `contract`: the API contract check alone (schemathesis, auth-api on SQLite, PostgreSQL and
//!   MariaDB), as `test` runs it.
//! - `fuzz`: the long fuzzing run; `fuzz --ci` is what `test` runs (the seeds replayed and each
//!   target fuzzed briefly, `api_bodies` on SQLite, then on PostgreSQL, then on MariaDB).
//! - `manifests`: the Kubernetes manifests rendered and checked against their schemas,
//!   docker-compose.yml against the Compose schema, the Dockerfile linted; no cluster or Docker
//!   needed (as `test` runs it).
//! - `wasm-image`: the filter as an OCI image for Istio's WasmPlugin and Envoy Gateway.
//! - `check-observability`: the alert rules and the Grafana dashboard of deploy/observability
//!   checked (structure, PromQL, the filter's metric names), as `test` runs it.

mod bench;
mod bench_api;
#[cfg(feature = "api-bench")]
mod bench_client;
mod bench_load;
mod contract;
mod fuzz;
mod interop;
mod manifests;
mod observability;
mod observability_catalog;
/// Ports picked outside the ephemeral range, shared with the tests (`pub` there, for the test
/// crates).
#[path = "../../test-support/src/ports.rs"]
#[allow(unreachable_pub)]
mod ports;
mod promtool;
mod report;
mod tools;
mod up;
mod wasm_image;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::tools::{
    ensure_envoy, ensure_mariadb, ensure_nextest, ensure_postgres, ensure_redis, mysql_admin_url,
    postgres_admin_url, run, status, step,
};

/// The project's scripts.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run every check and test (what CI runs).
    Test,
    /// Run the whole stack: auth-api, the echo upstream and Envoy with the filter.
    Up,
    /// Run a benchmark.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Run the API contract check (schemathesis) against auth-api on SQLite, PostgreSQL and
    /// MariaDB.
    Contract,
    /// Fuzz every target (or the named ones) for a while, growing fuzz/corpus/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Instead, what `cargo xtask test` runs: the seeds replayed and a fixed, brief run per
        /// target (`api_bodies` on SQLite, then on throwaway PostgreSQL and MariaDB databases).
        #[arg(long, conflicts_with = "seconds")]
        ci: bool,
        /// Only these targets.
        targets: Vec<String>,
    },
    /// Render the Kubernetes manifests (deploy/kubernetes) and check them against the
    /// Kubernetes and CRD schemas, docker-compose.yml against the Compose schema, and lint the
    /// Dockerfile; no cluster or Docker needed.
    Manifests,
    /// Check deploy/observability: the alert rules' structure, the dashboard, every PromQL
    /// expression parsed, the filter's metric names (no promtool needed).
    CheckObservability {
        /// Also check the auth-api names against this saved scrape of auth-api's /metrics
        /// (`curl -s localhost:8080/metrics > scrape.txt`).
        #[arg(long)]
        exposition: Option<PathBuf>,
    },
    /// Build the filter's OCI image (Wasm "compat" variant) as an OCI layout and its tar.
    WasmImage {
        /// The .wasm to package; default: the filter, built with the `wasm` profile.
        #[arg(long)]
        wasm: Option<PathBuf>,
        /// Where to write `auth-filter/` (the layout) and `auth-filter.oci.tar`; default
        /// target/wasm-image.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The tag recorded in the layout (`org.opencontainers.image.ref.name`).
        #[arg(long, default_value = "latest")]
        tag: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Task::Test => test(&root),
        Task::Up => up::up(&root),
        Task::Bench(bench) => bench::bench(&root, &bench),
        Task::Contract => {
            step("PostgreSQL", ensure_postgres)?;
            step("MariaDB", ensure_mariadb)?;
            contract_step(&root)
        }
        Task::Fuzz {
            ci: true, targets, ..
        } => {
            step("PostgreSQL", ensure_postgres)?;
            step("MariaDB", ensure_mariadb)?;
            fuzz_step(&root, &targets)
        }
        Task::Fuzz {
            seconds, targets, ..
        } => fuzz::fuzz(&root, seconds, &targets),
        Task::Manifests => manifests::run_step(&root),
        Task::CheckObservability { exposition } => {
            observability::check(&root, exposition.as_deref())?;
            promtool::check(&root)
        }
        Task::WasmImage { wasm, out, tag } => wasm_image::build(&root, wasm, out.as_deref(), &tag),
    }
}

fn test(root: &Path) -> anyhow::Result<()> {
    step("wasm target", || {
        run(root, "rustup", &["target", "add", "wasm32-wasip1"])
    })?;
    step("cargo-nextest", ensure_nextest)?;
    step("PostgreSQL", ensure_postgres)?;
    step("MariaDB", ensure_mariadb)?;
    step("Redis", ensure_redis)?;
    let envoy = step("Envoy", || ensure_envoy(root))?;
    step(
        "PyJWT, grpcio, aiosmtpd, jose, oidc-provider, playwright-core and Chromium (interop, mail and browser tests)",
        || interop::ensure(root),
    )?;
    step("format", || {
        run(root, "cargo", &["fmt", "--all", "--", "--check"])
    })?;
    step("clippy", || {
        run(
            root,
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    // `cargo xtask bench api` is xtask behind a feature: the workspace clippy above does not
    // build it, and a change to auth-api's types once broke it unseen.
    step("clippy (xtask with api-bench)", || {
        run(
            root,
            "cargo",
            &[
                "clippy",
                "-p",
                "xtask",
                "--features",
                "api-bench",
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    step("clippy (wasm32-wasip1)", || {
        let args = [
            "clippy",
            "-p",
            "auth-jwt",
            "-p",
            "auth-filter",
            "--target",
            "wasm32-wasip1",
            "--locked",
        ];
        run(
            root,
            "cargo",
            &[&args[..], &["--", "-D", "warnings"]].concat(),
        )
    })?;
    let wasm = step("build the filter (wasm32-wasip1)", || build_filter(root))?;
    manifests::run_step(root)?;
    step(
        "deploy/observability (alert rules, dashboard, PromQL; promtool check and test rules)",
        || {
            observability::check(root, None)?;
            promtool::check(root)
        },
    )?;
    let postgres_url = postgres_admin_url();
    let mysql_url = mysql_admin_url();
    let fuzz_build = fuzz::prebuild(root);
    step("tests", || {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root)
            .args([
                "nextest",
                "run",
                "--workspace",
                "--locked",
                "--no-fail-fast",
            ])
            .env("AUTH_TEST_POSTGRES_URL", &postgres_url)
            .env("AUTH_TEST_MYSQL_URL", &mysql_url)
            .env("AUTH_FILTER_WASM", &wasm)
            .env("ENVOY_BIN", &envoy);
        status(cmd)
    })?;
    // nextest does not run doctests.
    step("doctests", || {
        run(root, "cargo", &["test", "--workspace", "--doc", "--locked"])
    })?;
    contract_step(root)?;
    if let Some(build) = fuzz_build {
        build.wait();
    }
    fuzz_step(root, &[])
}

fn contract_step(root: &Path) -> anyhow::Result<()> {
    step(
        "API contract (schemathesis against /openapi.json, SQLite, PostgreSQL and MariaDB at once)",
        || contract::check(root),
    )
}

fn fuzz_step(root: &Path, only: &[String]) -> anyhow::Result<()> {
    step(
        "fuzz: replay the seeds and fuzz each target briefly (api_bodies on each store)",
        || fuzz::check(root, only),
    )
}

/// Builds the filter with the `wasm` profile and returns the `.wasm` path.
fn build_filter(root: &Path) -> anyhow::Result<PathBuf> {
    tools::build_wasm(root, "auth-filter")
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}
