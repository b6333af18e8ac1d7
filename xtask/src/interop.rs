//! The third-party libraries the e2e interop tests check us against: PyJWT (with `cryptography`)
//! in `.venv` and `jose` from npm in `tests/interop/node_modules` for our tokens and JWKS
//! (`tests/tests/e2e/interop.rs`), and Python's `grpcio` with `grpcio-reflection` for the gRPC
//! API by reflection (`grpc_reflection.rs`), at the versions pinned here and in its
//! `package-lock.json`. Also what the browser tests run: `playwright-core` from npm in
//! `tests/browser/node_modules`, pinned by `tests/browser/package-lock.json`, driving Debian's
//! Chromium (`/usr/bin/chromium`) for the account pages' test (`account_pages.rs`) and, through
//! `tests/browser/chromium.mjs`, for the social-login test (`social_login.rs`), which also runs a
//! real OpenID Provider (`oidc-provider`) from npm in `tests/oidc/node_modules`, pinned by
//! `tests/oidc/package-lock.json`. And `aiosmtpd` in
//! `.venv`, the SMTP server of auth-api's email tests and of the account pages' test
//! (`tests/smtp/sink.py`, also the dev stack's mail sink).

use std::{path::Path, process::Command};

use anyhow::Context as _;

use crate::tools::status;

/// The PyJWT release the interop tests use (PyPI), with its `crypto` extra.
const PYJWT_VERSION: &str = "2.15.1";
/// The Python gRPC runtime and its reflection client (PyPI), for the reflection e2e test.
const GRPCIO_VERSION: &str = "1.85.3";
const GRPCIO_REFLECTION_VERSION: &str = "1.85.1";
/// The SMTP server the email outbox tests deliver to (`tests/smtp/sink.py`, PyPI).
const AIOSMTPD_VERSION: &str = "1.4.6";

/// Installs PyJWT, grpcio and aiosmtpd into `.venv` (which `ensure_envoy` created), the npm
/// packages of the interop and browser tests with `npm ci`, each only when missing or of another
/// version, and Debian's Chromium when missing.
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

    ensure_aiosmtpd(&venv)?;
    npm_ci(root, "tests/interop", "jose")?;
    npm_ci(root, "tests/oidc", "oidc-provider")?;
    npm_ci(root, "tests/browser", "playwright-core")?;
    ensure_chromium()
}

/// Installs aiosmtpd into `venv` when missing or of another version: the real SMTP server of
/// the email tests (`test-support`'s `smtp_sink` runs `tests/smtp/sink.py`) and of `cargo xtask
/// up`.
pub(crate) fn ensure_aiosmtpd(venv: &Path) -> anyhow::Result<()> {
    let installed = Command::new(venv.join("bin/python"))
        .args(["-c", "import aiosmtpd; print(aiosmtpd.__version__)"])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == AIOSMTPD_VERSION
        });
    if !installed {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args([
            "install",
            "--quiet",
            &format!("aiosmtpd=={AIOSMTPD_VERSION}"),
        ]);
        status(pip).context("cannot install aiosmtpd from PyPI into .venv")?;
    }
    Ok(())
}

/// The browser of the social-login test, from Debian's packages (Playwright's own browser
/// download cannot work on a closed network, and Debian's is what the machines can install).
const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's packages that bring it; `chromium-driver` lets WebDriver clients drive it too.
const CHROMIUM_PACKAGES: [&str; 2] = ["chromium", "chromium-driver"];

/// Installs Debian's Chromium with apt-get when [`CHROMIUM`] is missing (through sudo when not
/// root).
fn ensure_chromium() -> anyhow::Result<()> {
    crate::tools::ensure_debian_packages(CHROMIUM, &CHROMIUM_PACKAGES)
}

/// `npm ci` in `root/dir`, unless its `node_modules` already holds what the lock file lists;
/// `what` names the packages in the error.
pub(crate) fn npm_ci(root: &Path, dir: &str, what: &str) -> anyhow::Result<()> {
    let path = root.join(dir);
    let lock = std::fs::read(path.join("package-lock.json"))
        .with_context(|| format!("{dir}/package-lock.json"))?;
    // npm ci wipes and reinstalls node_modules; skip it when the installed tree matches the lock.
    let installed_lock = std::fs::read(path.join("node_modules/.package-lock.json")).ok();
    let current = installed_lock.is_some_and(|installed| same_packages(&installed, &lock));
    if !current {
        let mut npm = Command::new("npm");
        npm.current_dir(&path)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"]);
        status(npm)
            .with_context(|| format!("cannot install {what} from npm (needs Node.js and npm)"))?;
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
