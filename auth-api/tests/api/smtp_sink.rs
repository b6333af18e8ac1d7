//! `SmtpSink`: a real SMTP server (`aiosmtpd`, run by `tests/smtp/sink.py` from `.venv`) on a
//! loopback port, and the messages it received as Python's `email` parser read them.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// One running sink; stopped (its stdin closed, then killed) when dropped.
pub struct SmtpSink {
    child: Child,
    // Held so that the sink's stdin stays open: the sink stops when it closes.
    _stdin: ChildStdin,
    dir: tempfile::TempDir,
    pub port: u16,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("auth-api is inside the workspace")
        .to_owned()
}

/// A loopback port nothing listens on (for a relay that is down, or to start a sink on later).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl SmtpSink {
    /// A sink on a free port.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// A sink on `port`.
    pub fn start_on(port: u16) -> Self {
        Self::launch(Some(port))
    }

    fn launch(port: Option<u16>) -> Self {
        let root = workspace_root();
        let python = root.join(".venv/bin/python");
        let installed = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            installed,
            "{} with aiosmtpd is missing: run `cargo xtask test` once (it installs the pinned \
             aiosmtpd into .venv)",
            python.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(&python);
        command
            .arg(root.join("tests/smtp/sink.py"))
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(port) = port {
            command.args(["--port", &port.to_string()]);
        }
        let mut child = command.spawn().expect("cannot start tests/smtp/sink.py");
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP sink did not start: {line:?}"));
        Self {
            child,
            _stdin: stdin,
            dir,
            port,
        }
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }

    /// The messages once there are at least `n`, waiting up to `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sink received {} messages within {within:?}, expected {n}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
