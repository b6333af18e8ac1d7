//! `cargo xtask fuzz`: the libFuzzer targets of `fuzz/` (cargo-fuzz), on the stable toolchain.
//!
//! `cargo-fuzz` is installed from crates.io when missing. The targets are built without a
//! sanitizer (`-s none`): AddressSanitizer needs a nightly toolchain, and our code forbids
//! `unsafe`, so what is left to find is panics, which libFuzzer reports without one.
//! `fuzz/seeds/` holds the committed seed inputs; what a run discovers goes to `fuzz/corpus/`
//! (not committed) and crashes to `fuzz/artifacts/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::tools::status;

/// Every fuzz target, with the runs `cargo xtask test` gives it (a few seconds each).
pub(crate) const TARGETS: [(&str, u32); 5] = [
    ("jwt_decode", 300_000),
    ("filter_config", 300_000),
    ("filter_request", 300_000),
    ("api_inputs", 300_000),
    // The whole router on SQLite: about ten times slower an input.
    ("api_bodies", 30_000),
];

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

/// Runs `target` from its seeds and the grown corpus, writing new inputs to `corpus`, with
/// libFuzzer `options` (e.g. `-runs=N` or `-max_total_time=S`).
pub(crate) fn run(
    root: &Path,
    target: &str,
    corpus: &Path,
    options: &[String],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(corpus)?;
    let fuzz = root.join("fuzz");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&fuzz)
        .args(["fuzz", "run", "--sanitizer", "none", target])
        .arg(corpus)
        .arg(fuzz.join("seeds").join(target))
        .arg("--")
        .args(options);
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
            &[format!("-max_total_time={seconds}")],
        )?;
    }
    Ok(())
}
