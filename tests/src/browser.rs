//! A real, headless Chromium (Debian's) driven by `playwright-core` through a Node.js script, one
//! JSON command a line: [`Driver`] runs such a script and speaks its protocol
//! (`tests/browser/chromium.mjs`, which every driver script imports); [`Browser`] is
//! `tests/browser/accounts.mjs`, which opens pages, fills and submits their forms, and reports
//! each page it lands on ([`Page`]) and its cookies. One browser lives through a scenario; each
//! named context is another browser's cookie jar.
//!
//! `cargo xtask test` installs what this needs (`npm ci` in `tests/browser`, Debian's
//! `chromium`); a missing part fails the test with the command that installs it.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::envoy::workspace_root;

/// How long the browser may take for one command (a form post is well under a second).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// The page a navigation ended on.
#[derive(Debug, Clone)]
pub struct Page {
    /// Where it ended, after any redirects.
    pub url: String,
    /// The status of its document.
    pub status: Option<u16>,
    /// Its document's response headers, names in lower case.
    pub headers: HashMap<String, String>,
    /// Every document URL requested on the way, redirects included.
    pub navigations: Vec<String>,
    /// The text of each element with an id (an input's value), by id.
    pub ids: HashMap<String, String>,
    /// The start of the body's text.
    pub text: String,
}

impl Page {
    /// The page a driver's answer to a navigation describes.
    ///
    /// # Panics
    /// When the answer is not one.
    pub fn of_answer(answer: &Value) -> Self {
        let strings = |value: &Value| -> HashMap<String, String> {
            value
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        };
        let url = answer["url"].as_str();
        Self {
            url: url
                .unwrap_or_else(|| panic!("not a page: {answer:#}"))
                .to_owned(),
            status: answer["status"].as_u64().map(|s| u16::try_from(s).unwrap()),
            headers: strings(&answer["headers"]),
            navigations: answer["navigations"]
                .as_array()
                .unwrap_or_else(|| panic!("not a page: {answer:#}"))
                .iter()
                .map(|url| url.as_str().unwrap().to_owned())
                .collect(),
            ids: strings(&answer["ids"]),
            text: answer["text"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// Whether an element has the id `id`.
    pub fn has(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// The text of the element with the id `id`, trimmed.
    ///
    /// # Panics
    /// When there is none, with the page.
    pub fn id(&self, id: &str) -> &str {
        self.ids
            .get(id)
            .unwrap_or_else(|| panic!("no element id={id} on {}:\n{}", self.url, self.text))
            .trim()
    }
}

/// A running Node.js browser driver speaking the line protocol of `tests/browser/chromium.mjs`
/// (one JSON command a line in, one answer a line out, `{"ready":true}` first); it and its
/// Chromium end when it is dropped.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::UnboundedReceiver<String>,
}

impl Driver {
    /// Runs `node <script>` in `dir` and waits until its browser is ready. The script imports
    /// `tests/browser/chromium.mjs`, and with it `tests/browser`'s `playwright-core`.
    ///
    /// # Panics
    /// When Chromium or `tests/browser`'s `playwright-core` is missing (saying how to install
    /// it), or the driver does not start.
    pub async fn start(dir: &Path, script: &str) -> Self {
        let chromium = std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
        assert!(
            Path::new(&chromium).exists(),
            "no Chromium at {}: `apt-get install chromium chromium-driver` (cargo xtask test \
             does it), or set CHROMIUM",
            Path::new(&chromium).display()
        );
        let packages = workspace_root().join("tests/browser");
        assert!(
            packages.join("node_modules/playwright-core").exists(),
            "playwright-core is not installed: run `npm ci` in {} (cargo xtask test does it)",
            packages.display()
        );
        let mut child = Command::new("node")
            .current_dir(dir)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot run node (Node.js is needed for the browser driver)");
        let stdin = child.stdin.take().expect("stdin is piped");
        let answers = lines_of(&mut child);
        let mut driver = Self {
            child,
            stdin,
            answers,
        };
        let ready = driver.answer().await;
        assert_eq!(ready, json!({"ready": true}), "the browser did not start");
        driver
    }

    async fn answer(&mut self) -> Value {
        match tokio::time::timeout(BROWSER_TIMEOUT, self.answers.recv()).await {
            Ok(Some(line)) => serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")),
            other => panic!("the browser did not answer ({other:?}); its stderr is above"),
        }
    }

    /// Sends `command`; its answer, or a panic with the driver's error.
    pub async fn send(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .expect("the browser has gone");
        let answer = self.answer().await;
        assert_eq!(answer["ok"], true, "{command}\n{answer:#}");
        answer
    }

    /// Sends `command`, a navigation; the page it ended on.
    pub async fn page(&mut self, command: Value) -> Page {
        Page::of_answer(&self.send(command).await)
    }

    /// Opens `url` in the browser context `context`, following redirects.
    pub async fn goto(&mut self, context: &str, url: &str) -> Page {
        self.page(json!({"op": "goto", "context": context, "url": url}))
            .await
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // `quit` ends the driver, which closes Chromium; the kill is for a driver that hangs.
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/browser/accounts.mjs`: a browser that opens pages and submits their forms.
#[derive(Debug)]
pub struct Browser {
    driver: Driver,
}

impl Browser {
    /// Starts Chromium.
    ///
    /// # Panics
    /// As [`Driver::start`].
    pub async fn start() -> Self {
        let dir = workspace_root().join("tests/browser");
        Self {
            driver: Driver::start(&dir, "accounts.mjs").await,
        }
    }

    /// Opens `url` in the browser context `context`, following redirects.
    pub async fn goto(&mut self, context: &str, url: &str) -> Page {
        self.driver.goto(context, url).await
    }

    /// Fills the inputs named by `fields` on `context`'s page, clicks `click` (a CSS selector:
    /// a submit button, or a link) and waits for the page it leads to.
    pub async fn submit(&mut self, context: &str, fields: &[(&str, &str)], click: &str) -> Page {
        let fields: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), json!(value)))
            .collect();
        self.driver
            .page(json!({"op": "submit", "context": context, "fields": fields, "click": click}))
            .await
    }

    /// The cookie `name` of `context`, with its attributes (`value`, `httpOnly`, `secure`,
    /// `sameSite`, `path`, `expires`), if it has one.
    pub async fn cookie(&mut self, context: &str, name: &str) -> Option<Value> {
        let answer = self
            .driver
            .send(json!({"op": "cookies", "context": context}))
            .await;
        answer["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|cookie| cookie["name"] == name)
            .cloned()
    }
}

/// The lines `child` prints, read on a thread of their own until it exits: the pipe is drained
/// even when nobody listens any more (a closed pipe would kill a child that still prints, as
/// `oidc-provider` does its notes).
pub fn lines_of(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (send, receive) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    receive
}
