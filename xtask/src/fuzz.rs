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
    process::Command,
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
