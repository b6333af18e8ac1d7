//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (cargo-fuzz), on the stable toolchain.
//!
//! `cargo-fuzz` is installed from crates.io when missing. The targets are built without a
//! sanitizer (`-s none`): AddressSanitizer needs a nightly toolchain, and our code forbids
//! `unsafe`, so what is left to find is panics, which libFuzzer reports without one.
//! `fuzz/seeds/` holds the committed seed inputs; what a run discovers goes to `fuzz/corpus/`
//! (not committed) and crashes to `fuzz/artifacts/`.
//!
//! `api_bodies` drives the whole router on a SQLite file, or on the database in
//! `AUTH_FUZZ_DATABASE_URL`: `cargo xtask test` runs it on all three stores (SQLite, then
//! PostgreSQL, then MariaDB), since an input one engine accepts another may refuse (a NUL byte,
//! a key past PostgreSQL's index row limit, text past a MySQL column or index length).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::Context as _;

use crate::tools::{status, step, DbServer, ThrowawayDb};

/// Every fuzz target, with the runs `cargo xtask test` gives it (a few seconds each).
pub(crate) const TARGETS: [(&str, u32); 5] = [
    ("jwt_decode", 300_000),
    ("filter_config", 300_000),
    ("filter_request", 300_000),
    ("api_inputs", 300_000),
    // The whole router on SQLite: about ten times slower an input.
    ("api_bodies", 30_000),
];

/// The runs `cargo xtask test` gives `api_bodies` on PostgreSQL and on MariaDB each, after
/// replaying the seeds and what the earlier runs found.
const API_BODIES_SERVER_RUNS: u32 = 20_000;

/// The variable that points `api_bodies` at a database instead of a fresh SQLite file.
const API_BODIES_DATABASE_VAR: &str = "AUTH_FUZZ_DATABASE_URL";

/// Installs cargo-fuzz when `cargo fuzz` does not answer.
pub(crate) fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let present = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    let mut install = Command::new("cargo");
    install.args(["install", "--locked", "cargo-fuzz"]);
    status(install).context("cannot install cargo-fuzz from crates.io")
}

/// The fuzz targets being built in the background while the tests run (see [`prebuild`]).
pub(crate) struct Prebuild {
    child: Child,
    log: PathBuf,
    started: Instant,
}

/// Starts building every fuzz target in the background at the lowest CPU priority, with the
/// flags `cargo fuzz run` builds them with, so that [`check`] finds them built: the
/// instrumented release build of auth-api is five minutes on two cores, and the tests leave
/// CPU idle while they wait on Envoy, browsers and databases. `nice` works here because the
/// build is in the tests' own session (Linux's autogroup weighs sessions, not processes).
/// Its output goes to `target/fuzz-prebuild.log`; `None` when it cannot start (the fuzz step then
/// builds as before).
pub(crate) fn prebuild(root: &Path) -> Option<Prebuild> {
    if let Err(e) = ensure_cargo_fuzz() {
        println!("    fuzz targets not prebuilt: {e:#}");
        return None;
    }
    let log = crate::tools::target_dir(root).join("fuzz-prebuild.log");
    let file = std::fs::create_dir_all(log.parent()?)
        .and_then(|()| std::fs::File::create(&log))
        .ok()?;
    let mut cmd = Command::new("nice");
    cmd.current_dir(root.join("fuzz"))
        .args(["-n", "19", "cargo", "fuzz", "build", "--sanitizer", "none"])
        .stdin(Stdio::null())
        .stdout(file.try_clone().ok()?)
        .stderr(file);
    match cmd.spawn() {
        Ok(child) => {
            println!(
                "    building the fuzz targets in the background (nice 19): {}",
                log.display()
            );
            Some(Prebuild {
                child,
                log,
                started: Instant::now(),
            })
        }
        Err(e) => {
            println!("    fuzz targets not prebuilt: cannot run nice: {e}");
            None
        }
    }
}

/// A step that fails before the fuzz step leaves no build running behind it.
impl Drop for Prebuild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Prebuild {
    /// Waits for the build. A failed build is only reported: `cargo fuzz run` then builds
    /// again in the foreground, where its errors fail the step.
    pub(crate) fn wait(mut self) {
        match self.child.wait() {
            Ok(status) if status.success() => println!(
                "    fuzz targets prebuilt in the background ({:.0}s since started)",
                self.started.elapsed().as_secs_f64()
            ),
            Ok(status) => println!(
                "    the background fuzz build failed ({status}; {}): building again",
                self.log.display()
            ),
            Err(e) => println!("    the background fuzz build was lost ({e}): building again"),
        }
    }
}

/// What `cargo xtask test` runs: each target (or the named ones) from its seeds with a fixed
/// seed and run count, the same inputs every time and a few seconds each; then `api_bodies`
/// again on a throwaway PostgreSQL database and then on a throwaway MariaDB database, each from
/// its seeds and what the earlier runs found.
pub(crate) fn check(root: &Path, only: &[String]) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    let scratch = std::env::temp_dir().join(format!("auth-fuzz-{}", std::process::id()));
    let selected = |target: &str| only.is_empty() || only.iter().any(|o| o == target);
    for (target, runs) in TARGETS.iter().filter(|(t, _)| selected(t)) {
        step(&format!("fuzz {target}"), || {
            let options = [format!("-runs={runs}"), "-seed=1".to_owned()];
            // The SQLite pass is on SQLite even where the caller's environment says otherwise.
            let env = [(API_BODIES_DATABASE_VAR, None)];
            run(root, target, &scratch.join(target), &[], &options, &env)
        })?;
    }
    if selected("api_bodies") {
        let mut found = vec![scratch.join("api_bodies")];
        for server in [DbServer::Postgres, DbServer::Mysql] {
            let corpus = scratch.join(format!("api_bodies-{}", server.name()));
            step(&format!("fuzz api_bodies on {}", server.name()), || {
                let db = ThrowawayDb::create(server, "fuzz")?;
                let options = [
                    format!("-runs={API_BODIES_SERVER_RUNS}"),
                    "-seed=1".to_owned(),
                ];
                let inputs: Vec<&Path> = found.iter().map(PathBuf::as_path).collect();
                run(
                    root,
                    "api_bodies",
                    &corpus,
                    &inputs,
                    &options,
                    &[(API_BODIES_DATABASE_VAR, Some(&db.url))],
                )
            })?;
            found.push(corpus);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// Runs `target` from its seeds, the grown corpus and `inputs`, writing new inputs to `corpus`,
/// with libFuzzer `options` (e.g. `-runs=N` or `-max_total_time=S`) and the variables of `env`
/// set (or removed, for `None`).
pub(crate) fn run(
    root: &Path,
    target: &str,
    corpus: &Path,
    inputs: &[&Path],
    options: &[String],
    env: &[(&str, Option<&str>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(corpus)?;
    let fuzz = root.join("fuzz");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&fuzz)
        .args(["fuzz", "run", "--sanitizer", "none", target])
        .arg(corpus)
        .args(inputs.iter().filter(|dir| dir.exists()))
        .arg(fuzz.join("seeds").join(target))
        .arg("--")
        .args(options);
    for (name, value) in env {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    status(cmd)
        .with_context(|| format!("fuzz target {target} failed: see fuzz/artifacts/{target}/"))
}

/// The long run: each target for `seconds`, growing `fuzz/corpus/`.
pub(crate) fn fuzz(root: &Path, seconds: u64, only: &[String]) -> anyhow::Result<()> {
    ensure_cargo_fuzz()?;
    for (target, _) in TARGETS
        .iter()
        .filter(|(t, _)| only.is_empty() || only.iter().any(|o| o == t))
    {
        println!("==> fuzz {target} for {seconds}s");
        let corpus: PathBuf = root.join("fuzz/corpus").join(target);
        run(
            root,
            target,
            &corpus,
            &[],
            &[format!("-max_total_time={seconds}")],
            &[],
        )?;
    }
    Ok(())
}
