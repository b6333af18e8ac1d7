//! `cargo xtask <command>`: the project's scripts, in Rust.
//!
//! - `test`: everything CI runs, from a fresh clone.
//! - `up`: the whole dev stack on one machine (auth-api on SQLite, the echo upstream, Envoy
//!   loading the filter), until Ctrl-C.
//! - `bench edge`: the filter's cost per request in Envoy, next to native `jwt_authn`.
//! - `fuzz`: the long fuzzing run (CI replays the seeds and fuzzes briefly in `test`).

mod bench;
mod contract;
mod fuzz;
mod interop;
mod tools;
mod up;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::tools::{
    ensure_envoy, ensure_nextest, ensure_postgres, ensure_redis, run, status, step,
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
    /// Fuzz every target (or the named ones) for a while, growing fuzz/corpus/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Only these targets.
        targets: Vec<String>,
    },
}

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Task::Test => test(&root),
        Task::Up => up::up(&root),
        Task::Bench(bench) => bench::bench(&root, &bench),
        Task::Fuzz { seconds, targets } => fuzz::fuzz(&root, seconds, &targets),
    }
}

fn test(root: &Path) -> anyhow::Result<()> {
    step("wasm target", || {
        run(root, "rustup", &["target", "add", "wasm32-wasip1"])
    })?;
    step("cargo-nextest", ensure_nextest)?;
    step("PostgreSQL", ensure_postgres)?;
    step("Redis", ensure_redis)?;
    let envoy = step("Envoy", || ensure_envoy(root))?;
    step("PyJWT and jose (interop tests)", || interop::ensure(root))?;
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
    let postgres_url =
        std::env::var("AUTH_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
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
            .env("AUTH_FILTER_WASM", &wasm)
            .env("ENVOY_BIN", &envoy);
        status(cmd)
    })?;
    // nextest does not run doctests.
    step("doctests", || {
        run(root, "cargo", &["test", "--workspace", "--doc", "--locked"])
    })?;
    step("API contract (schemathesis against /openapi.json)", || {
        contract::check(root)
    })?;
    step(
        "fuzz: replay the seeds and fuzz each target briefly",
        || {
            fuzz::ensure_cargo_fuzz()?;
            let scratch = std::env::temp_dir().join(format!("auth-fuzz-{}", std::process::id()));
            for (target, runs) in fuzz::TARGETS {
                // A fixed seed and run count: the same inputs every time, a few seconds each.
                let options = [format!("-runs={runs}"), "-seed=1".to_owned()];
                fuzz::run(root, target, &scratch.join(target), &options)?;
            }
            let _ = std::fs::remove_dir_all(&scratch);
            Ok(())
        },
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
