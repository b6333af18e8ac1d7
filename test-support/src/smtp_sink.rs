//! `SmtpSink`: a real SMTP server (`aiosmtpd`, run by `tests/smtp/sink.py` from `.venv`) on a
//! loopback port, and the messages it received as Python's `email` parser read them. auth-api's
//! email tests deliver to it, and so do the end-to-end tests of the account pages.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

/// One running sink; stopped (its stdin closed, then killed) when dropped.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    // Held so that the sink's stdin stays open: the sink stops when it closes.
    _stdin: ChildStdin,
    dir: tempfile::TempDir,
    /// The loopback port it accepts mail on.
    pub port: u16,
}

/// The workspace's root directory (test-support is one of its members).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support is inside the workspace")
        .to_owned()
}

/// A loopback port nothing listens on (for a relay that is down, or to start a sink on later).
pub use crate::ports::free_port;

impl SmtpSink {
    /// A sink on a free port.
    ///
    /// # Panics
    /// When `.venv` has no aiosmtpd (saying how to install it) or the sink does not start.
    pub fn start() -> Self {
        // Not the sink's own bind(0): a port of the ephemeral range can be taken by any client
        // connection between its choice and the server binding it (see `ports`).
        Self::launch(free_port())
    }

    /// A sink on `port`.
    ///
    /// # Panics
    /// As [`SmtpSink::start`].
    pub fn start_on(port: u16) -> Self {
        Self::launch(port)
    }

    fn launch(port: u16) -> Self {
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
        command.args(["--port", &port.to_string()]);
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

    /// The directory it writes the messages into (`<n>.eml` and `<n>.json` each).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every message received so far, in order.
    ///
    /// # Panics
    /// When the directory or a message cannot be read.
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
    ///
    /// # Panics
    /// When fewer than `n` arrived in time.
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

/// The decoded body of `message`'s first part of type `content_type` (`text/plain`,
/// `text/html`), as the sink's JSON holds it.
///
/// # Panics
/// When it has none.
pub fn body_of<'m>(message: &'m Value, content_type: &str) -> &'m str {
    message["parts"]
        .as_array()
        .and_then(|parts| {
            parts
                .iter()
                .find(|part| part["content_type"] == content_type)
        })
        .and_then(|part| part["body"].as_str())
        .unwrap_or_else(|| panic!("no {content_type} part in {message:#}"))
}

/// The token of the link to the account page `page` (`…/account/{page}?token=<token>`) in
/// `message`'s text part: 43 base64url characters (256 bits), the HTML part carrying the same
/// link.
///
/// # Panics
/// When there is no such link, or the token or the HTML part disagree.
pub fn link_token(message: &Value, page: &str) -> String {
    let text = body_of(message, "text/plain");
    let prefix = format!("/account/{page}?token=");
    let start = text
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {page} link in {text}"))
        + prefix.len();
    let token: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "{text}");
    assert!(
        body_of(message, "text/html").contains(&format!("{prefix}{token}")),
        "the HTML part carries the same link: {message:#}"
    );
    token
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
