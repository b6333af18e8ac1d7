//! The third-party libraries the e2e interop tests check us against: PyJWT (with `cryptography`)
//! in `.venv` and `jose` from npm in `tests/interop/node_modules` for our tokens and JWKS
//! (`tests/tests/e2e/interop.rs`), and Python's `grpcio` with `grpcio-reflection` for the gRPC
//! API by reflection (`grpc_reflection.rs`), at the versions pinned here and in its
//! `package-lock.json`.

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::tools::status;

/// The PyJWT release the interop tests use (PyPI), with its `crypto` extra.
const PYJWT_VERSION: &str = "2.15.1";
/// The Python gRPC runtime and its reflection client (PyPI), for the reflection e2e test.
const GRPCIO_VERSION: &str = "1.85.3";
const GRPCIO_REFLECTION_VERSION: &str = "1.85.1";

/// Installs PyJWT into `.venv` (which `ensure_envoy` created) and `jose` with `npm ci`, each only
/// when missing or of another version.
pub(crate) fn ensure(root: &Path) -> anyhow::Result<()> {
    let venv = root.join(".venv");
    let installed = Command::new(venv.join("bin/python"))
        .args(["-c", "import jwt, cryptography; print(jwt.__version__)"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == PYJWT_VERSION
        });
    if !installed {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args([
            "install",
            "--quiet",
            &format!("PyJWT[crypto]=={PYJWT_VERSION}"),
        ]);
        status(pip).context("cannot install PyJWT from PyPI into .venv")?;
    }

    // The generic gRPC client of `tests/tests/e2e/grpc_reflection.rs` (what grpcurl does).
    let grpc_installed = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import grpc, grpc_reflection; print(grpc.__version__)",
        ])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == GRPCIO_VERSION
        });
    if !grpc_installed {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args([
            "install",
            "--quiet",
            &format!("grpcio=={GRPCIO_VERSION}"),
            &format!("grpcio-reflection=={GRPCIO_REFLECTION_VERSION}"),
        ]);
        status(pip).context("cannot install grpcio and grpcio-reflection from PyPI into .venv")?;
    }

    let dir = root.join("tests/interop");
    let lock =
        std::fs::read(dir.join("package-lock.json")).context("tests/interop/package-lock.json")?;
    // npm ci wipes and reinstalls node_modules; skip it when the installed tree matches the lock.
    let installed_lock = std::fs::read(dir.join("node_modules/.package-lock.json")).ok();
    let current = installed_lock.is_some_and(|installed| same_packages(&installed, &lock));
    if !current {
        let mut npm = Command::new("npm");
        npm.current_dir(&dir)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        status(npm).context("cannot install jose from npm (needs Node.js and npm)")?;
    }
    Ok(())
}

/// Whether npm's record of what it installed lists the same packages as the lock file.
fn same_packages(installed: &[u8], lock: &[u8]) -> bool {
    let packages = |json: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .map(|v| v["packages"].clone())
    };
    let (Some(installed), Some(mut locked)) = (packages(installed), packages(lock)) else {
        return false;
    };
    // The lock lists the project itself under ""; npm's record of node_modules does not.
    if let Some(locked) = locked.as_object_mut() {
        locked.remove("");
    }
    installed == locked
}
