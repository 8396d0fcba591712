//! A real headless Chromium driven through chromedriver (WebDriver) with fantoccini, behind a
//! blocking API like the rest of the harness.
//!
//! Needs Debian's `chromium` and `chromium-driver` (the Makefile's `TEST_TOOLS`, installed by
//! `make test`); `TOLLGATE_CHROMIUM` / `TOLLGATE_CHROMEDRIVER` override the binaries. Each
//! [`Browser`] gets its own chromedriver on a free port and a fresh profile directory, and is
//! stopped when dropped. Screenshots go to `tests/artifacts/<dir>/` (git-ignored) and, with
//! `TOLLGATE_UPDATE_SCREENSHOTS=1`, also to `docs/screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::http::{free_port, try_request};
use crate::logs::LogDir;
use crate::paths::{artifacts_dir, repo_root};
use crate::process::Proc;
use crate::tools::program;

/// Flags for a closed network: without the background-networking ones Chromium keeps trying
/// (and failing) to reach Google services.
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

const WAIT: Duration = Duration::from_secs(10);

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Proc,
    _profile: tempfile::TempDir,
    _logs: LogDir,
    screenshot_dir: PathBuf,
    pub width: u32,
    pub height: u32,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at 1280×900. `name` names the screenshot
    /// folder under `tests/artifacts/`.
    pub fn start(name: &str) -> Browser {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let logs = LogDir::new();
        let port = free_port();
        let mut command = Command::new(program("chromedriver"));
        command.arg(format!("--port={port}"));
        let mut driver = Proc::spawn("chromedriver", &mut command, &logs.file("chromedriver"));
        let status = format!("http://127.0.0.1:{port}/status");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(exit) = driver.exited() {
                panic!("chromedriver exited ({exit}): {}", driver.log());
            }
            if matches!(try_request("GET", &status, &[], None), Ok(r) if r.status == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready: {}",
                driver.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::Builder::new()
            .prefix("tollgate-chromium-")
            .tempdir()
            .expect("profile directory");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push("--window-size=1280,900".to_string());
        args.push("--lang=en-US".to_string());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": program("chromium").display().to_string(),
                "args": args,
            }
        });
        let capabilities = caps.as_object().cloned().expect("capabilities object");
        let url = format!("http://127.0.0.1:{port}");
        // `cargo test --workspace` unifies features so rustls sees both ring and aws-lc-rs and
        // cannot pick one itself: choose ring (already a dependency) once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = rt
            .block_on(async {
                ClientBuilder::rustls()
                    .expect("rustls connector")
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
            })
            .unwrap_or_else(|e| {
                panic!("start Chromium through chromedriver: {e}: {}", driver.log())
            });
        let screenshot_dir = artifacts_dir().join(name);
        let _ = std::fs::create_dir_all(&screenshot_dir);
        let mut browser = Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
            _logs: logs,
            screenshot_dir,
            width: 1280,
            height: 900,
        };
        browser.resize(1280, 900);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("browser is open")
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn goto(&self, url: &str) {
        self.block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    pub fn refresh(&self) {
        self.block_on(self.client().refresh()).expect("refresh");
    }

    pub fn current_url(&self) -> String {
        self.block_on(self.client().current_url())
            .expect("current url")
            .to_string()
    }

    /// The path and query of the current URL.
    pub fn current_path(&self) -> String {
        let url = self.block_on(self.client().current_url()).expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits up to 10 s for an element matching `css`.
    pub fn find(&self, css: &str) -> Element {
        self.block_on(
            self.client()
                .wait()
                .at_most(WAIT)
                .for_element(Locator::Css(css)),
        )
        .unwrap_or_else(|e| panic!("no element {css:?} on {}: {e}", self.current_url()))
    }

    /// Every element matching `css` now (no waiting).
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.block_on(self.client().find_all(Locator::Css(css)))
            .unwrap_or_default()
    }

    pub fn exists(&self, css: &str) -> bool {
        !self.find_all(css).is_empty()
    }

    pub fn text(&self, css: &str) -> String {
        let element = self.find(css);
        self.block_on(element.text()).expect("element text")
    }

    pub fn element_text(&self, element: &Element) -> String {
        self.block_on(element.text()).expect("element text")
    }

    pub fn attr(&self, element: &Element, name: &str) -> Option<String> {
        self.block_on(element.attr(name)).expect("attribute")
    }

    pub fn prop(&self, element: &Element, name: &str) -> Option<String> {
        self.block_on(element.prop(name)).expect("property")
    }

    pub fn is_displayed(&self, element: &Element) -> bool {
        self.block_on(element.is_displayed()).expect("is displayed")
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.block_on(element.click())
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    pub fn click_element(&self, element: &Element) {
        self.block_on(element.click()).expect("click");
    }

    /// Clears the input `css` and types `value` into it.
    pub fn fill(&self, css: &str, value: &str) {
        let element = self.find(css);
        self.block_on(async {
            element.clear().await?;
            element.send_keys(value).await
        })
        .unwrap_or_else(|e| panic!("fill {css:?}: {e}"));
    }

    /// Selects the `<option>` with `value` in the `<select>` `css`.
    pub fn select(&self, css: &str, value: &str) {
        let element = self.find(css);
        self.block_on(element.select_by_value(value))
            .unwrap_or_else(|e| panic!("select {value:?} in {css:?}: {e}"));
    }

    /// Runs `script` (with `arguments`) in the page and returns its result.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("execute script: {e}"))
    }

    /// Like `execute` for a script that calls `arguments[arguments.length - 1]` when done.
    pub fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.block_on(self.client().execute_async(script, args))
            .unwrap_or_else(|e| panic!("execute async script: {e}"))
    }

    pub fn accept_alert(&self) {
        self.block_on(self.client().accept_alert())
            .expect("accept alert");
    }

    pub fn resize(&mut self, width: u32, height: u32) {
        self.block_on(self.client().set_window_size(width, height))
            .expect("set window size");
        self.width = width;
        self.height = height;
    }

    /// Polls `check` until it returns `Some` (10 s), else panics with `what`.
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the whole page (the window is stretched to the page's height for the shot) in
    /// `tests/artifacts/<dir>/<name>.png`, and in `docs/screenshots/` when
    /// `TOLLGATE_UPDATE_SCREENSHOTS=1`. Returns the artifact path.
    pub fn screenshot(&mut self, name: &str) -> PathBuf {
        let (width, height) = (self.width, self.height);
        // The window includes browser chrome even headless: size the viewport, not the window.
        let dims = self.execute(
            "window.scrollTo(0, 0); return [Math.ceil(document.documentElement.scrollHeight), \
             window.outerHeight - window.innerHeight];",
            vec![],
        );
        let page_height = dims[0].as_u64().unwrap_or(u64::from(height)) as u32;
        let chrome = dims[1].as_u64().unwrap_or(0) as u32;
        self.resize(width, page_height.clamp(height, 8000) + chrome);
        std::thread::sleep(Duration::from_millis(200));
        self.execute("window.scrollTo(0, 0);", vec![]);
        let png = self
            .block_on(self.client().screenshot())
            .expect("screenshot");
        self.resize(width, height);
        let path = self.screenshot_dir.join(format!("{name}.png"));
        std::fs::write(&path, &png).expect("write screenshot");
        if std::env::var_os("TOLLGATE_UPDATE_SCREENSHOTS").is_some() {
            let docs = repo_root().join("docs/screenshots");
            let _ = std::fs::create_dir_all(&docs);
            std::fs::write(docs.join(format!("{name}.png")), &png).expect("write docs screenshot");
        }
        path
    }

    pub fn screenshot_dir(&self) -> &Path {
        &self.screenshot_dir
    }

    pub fn chromedriver_log(&self) -> String {
        self.driver.log()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        if std::thread::panicking() {
            eprintln!(
                "===== chromedriver log =====\n{}",
                self.driver
                    .log()
                    .lines()
                    .rev()
                    .take(50)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        self.driver.stop();
    }
}
