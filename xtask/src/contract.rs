//! The API contract check: a running auth-api against its own OpenAPI document, with
//! schemathesis (property-based: it generates valid and invalid requests from the document).
//! It fails on any 5xx, any undocumented status, content type or header, and any response
//! body that does not match the documented schema.

use std::{
    net::{SocketAddr, TcpListener},
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use anyhow::Context as _;

use crate::tools::{run, status, wait_for_port};

/// The schemathesis release we check with (PyPI).
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The checks that say "the API keeps its documented contract" (not "every generated input is
/// accepted": an email of random characters is rightly refused).
const CHECKS: &str = concat!(
    "not_a_server_error,status_code_conformance,content_type_conformance,",
    "response_headers_conformance,response_schema_conformance"
);

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Installs schemathesis into `.venv` when missing, starts auth-api on a free port with a
/// fresh SQLite database, and runs schemathesis against `/openapi.json`.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let venv = root.join(".venv");
    let schemathesis = venv.join("bin/schemathesis");
    let installed = Command::new(&schemathesis)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS_VERSION)
        });
    if !installed {
        let mut pip = Command::new(venv.join("bin/pip"));
        pip.args([
            "install",
            "--quiet",
            &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
        ]);
        status(pip).context("cannot install schemathesis from PyPI into .venv")?;
    }
    run(root, "cargo", &["build", "-p", "auth-api", "--locked"])?;
    let target = crate::tools::target_dir(root);
    let dir = std::env::temp_dir().join(format!("auth-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let server = Server(
        Command::new(target.join("debug/auth-api"))
            .arg("serve")
            .env(
                "AUTH_DATABASE_URL",
                format!("sqlite://{}", dir.join("auth.db").display()),
            )
            .env("AUTH_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("AUTH_INTERNAL_TOKEN")
            .env("AUTH_BCRYPT_COST", "10")
            // The generator sends hundreds of requests from one address: let them through, so
            // that the operations behind the limits are exercised too.
            .env("AUTH_IP_LIMIT_PER_MINUTE", "1000000")
            .env("AUTH_LOGIN_FREE_ATTEMPTS", "1000000")
            .env("AUTH_HASH_QUEUE", "1000")
            .env("RUST_LOG", "warn")
            .spawn()
            .context("cannot start auth-api")?,
    );
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(30),
    )?;
    let mut st = Command::new(&schemathesis);
    st.args([
        "run",
        &format!("http://127.0.0.1:{port}/openapi.json"),
        "--checks",
        CHECKS,
    ])
    .args(["--max-examples", "50", "--seed", "1", "--no-color"]);
    let result = status(st);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
