//! `cargo xtask <command>`: the project's scripts, in Rust.
//!
//! - `test`: everything CI runs, from a fresh clone: the wasm target, PostgreSQL, `cargo fmt`,
//!   clippy (native and wasm), the wasm build of the shared JWT crate, and every test.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

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
}

/// Where the development machines run PostgreSQL (trust auth, user `postgres`).
const POSTGRES_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 5432);
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Task::Test => test(&root),
    }
}

fn test(root: &Path) -> anyhow::Result<()> {
    step("wasm target", || {
        run(root, "rustup", &["target", "add", "wasm32-wasip1"])
    })?;
    step("PostgreSQL", ensure_postgres)?;
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
        run(
            root,
            "cargo",
            &[
                "clippy",
                "-p",
                "auth-jwt",
                "--target",
                "wasm32-wasip1",
                "--locked",
                "--",
                "-D",
                "warnings",
            ],
        )
    })?;
    step("build auth-jwt for wasm32-wasip1", || {
        run(
            root,
            "cargo",
            &[
                "build",
                "-p",
                "auth-jwt",
                "--target",
                "wasm32-wasip1",
                "--release",
                "--locked",
            ],
        )
    })?;
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
            .env("AUTH_TEST_POSTGRES_URL", &postgres_url);
        status(cmd)
    })?;
    // nextest does not run doctests.
    step("doctests", || {
        run(root, "cargo", &["test", "--workspace", "--doc", "--locked"])
    })
}

/// Starts the local PostgreSQL cluster if nothing listens on 127.0.0.1:5432, or fails naming
/// what is missing.
fn ensure_postgres() -> anyhow::Result<()> {
    if std::env::var_os("AUTH_TEST_POSTGRES_URL").is_some() {
        println!("using AUTH_TEST_POSTGRES_URL");
        return Ok(());
    }
    let addr = SocketAddr::from(POSTGRES_ADDR);
    if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
        return Ok(());
    }
    let versions = std::fs::read_dir("/etc/postgresql").context(
        "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster was found in \
         /etc/postgresql: install PostgreSQL or set AUTH_TEST_POSTGRES_URL",
    )?;
    for version in versions.flatten() {
        let version = version.file_name().to_string_lossy().into_owned();
        println!("starting PostgreSQL {version}");
        let _ = Command::new("pg_ctlcluster")
            .args(["--skip-systemctl-redirect", &version, "main", "start"])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    bail!("PostgreSQL did not come up on 127.0.0.1:5432 (tried pg_ctlcluster … main start)")
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    f().with_context(|| format!("step failed: {name}"))?;
    println!("    {name}: ok ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn run(root: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut cmd = Command::new(program);
    cmd.current_dir(root).args(args);
    status(cmd)
}

fn status(mut cmd: Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {shown}"))?;
    if !status.success() {
        bail!("{shown} exited with {status}");
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}
