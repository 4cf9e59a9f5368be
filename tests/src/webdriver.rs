//! A small W3C WebDriver client for the UI tests: starts Debian's
//! `chromedriver` on a free loopback port, opens a headless Chromium
//! session with a fresh profile, and speaks the protocol's JSON over HTTP
//! (navigate, find, click, type, run a script, screenshot, read the
//! browser's console log).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Keys for [`Browser::send_keys`] (WebDriver's private-use code points).
pub mod keys {
    pub const HOME: &str = "\u{E011}";
    pub const END: &str = "\u{E010}";
    pub const ARROW_LEFT: &str = "\u{E012}";
    pub const ARROW_RIGHT: &str = "\u{E014}";
}

/// A `chromedriver` process and one headless Chromium session; both end on
/// drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    _profile: tempfile::TempDir,
}

/// A page element.
#[derive(Clone, Debug)]
pub struct Element(String);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port for chromedriver")
}

/// Finds a program: `$VAR`, else the first of `candidates` that exists.
fn program(var: &str, candidates: &[&str]) -> String {
    if let Ok(path) = std::env::var(var) {
        return path;
    }
    candidates
        .iter()
        .find(|path| Path::new(path).exists())
        .map(|path| path.to_string())
        .unwrap_or_else(|| {
            panic!(
                "none of {candidates:?} exists: run scripts/test (it installs Debian's chromium and chromium-driver) or set {var}"
            )
        })
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile,
    /// its console log recorded, in a `width`×`height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let driver_path = program(
            "SHOAL_CHROMEDRIVER",
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
        );
        let chromium = program(
            "SHOAL_CHROMIUM",
            &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
        );
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("start {driver_path}: {error}"));
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            let ready = http
                .get(&format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
                .is_some_and(|status| status["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not become ready within 30s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let value = browser.command("POST", "/session", Some(capabilities));
        browser.session = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// Sends one command; panics with the driver's message on an error.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"))
    }

    fn try_command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let response = match method {
            "GET" => self.http.get(&url).call(),
            "DELETE" => self.http.delete(&url).call(),
            _ => self.http.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let mut response = response.map_err(|error| error.to_string())?;
        let status = response.status().as_u16();
        let value: Value = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_json()
            .map_err(|error| error.to_string())?;
        if status >= 400 {
            return Err(format!("{status}: {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.command(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        );
    }

    pub fn current_url(&self) -> String {
        let value = self.command("GET", &self.session_path("/url"), None);
        value.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let body = json!({"using": "css selector", "value": css});
        self.try_command("POST", &self.session_path("/element"), Some(body))
            .ok()
            .and_then(|value| value[ELEMENT_KEY].as_str().map(|id| Element(id.into())))
    }

    /// Waits (up to `timeout`) for an element matching `css`.
    pub fn wait_find(&self, css: &str, timeout: Duration) -> Element {
        let started = Instant::now();
        loop {
            if let Some(element) = self.find(css) {
                return element;
            }
            assert!(
                started.elapsed() < timeout,
                "no element `{css}` within {timeout:?}; the page shows:\n{}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until `check(text of css)` holds; returns that text.
    pub fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css);
            if check(&text) {
                return text;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?}; `{css}` shows:\n{text}\nthe page at {} shows:\n{}\nconsole: {:?}",
                self.current_url(),
                self.text("body"),
                self.console_log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The visible text of the first element matching `css` ("" if none).
    pub fn text(&self, css: &str) -> String {
        let Some(element) = self.find(css) else {
            return String::new();
        };
        self.try_command(
            "GET",
            &self.session_path(&format!("/element/{}/text", element.0)),
            None,
        )
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    pub fn click(&self, element: &Element) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{}/click", element.0)),
            None,
        );
    }

    pub fn clear(&self, element: &Element) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{}/clear", element.0)),
            None,
        );
    }

    /// Types `text` (or [`keys`]) into an element, as a user would.
    pub fn send_keys(&self, element: &Element, text: &str) {
        self.command(
            "POST",
            &self.session_path(&format!("/element/{}/value", element.0)),
            Some(json!({"text": text})),
        );
    }

    /// Runs `script` (a function body; `arguments` available) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.command(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let value = self.command("GET", &self.session_path("/screenshot"), None);
        base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 screenshot"))
            .expect("screenshot is base64")
    }

    /// The browser's console entries since the last call: `(level, source
    /// and message)`.
    pub fn console_log(&self) -> Vec<(String, String)> {
        let value = self.command(
            "POST",
            &self.session_path("/se/log"),
            Some(json!({"type": "browser"})),
        );
        value
            .as_array()
            .into_iter()
            .flatten()
            .map(|entry| {
                (
                    entry["level"].as_str().unwrap_or_default().to_string(),
                    entry["message"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_command("DELETE", &self.session_path(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
