//! `make run` as a new user meets it: `scripts/run.sh` (with the build already done, as `make
//! run` does it) on ports of its own, read as printed. The dashboard it names, signed in to with
//! the token it names in a real Chromium, shows the demo key's traffic: passes, the denial and
//! the rate-limited part of the burst, as many of each as the script said it sent. Ctrl-C
//! (SIGINT) stops everything it started.

use std::time::{Duration, Instant};

use tollgate_integration_tests::browser::Browser;
use tollgate_integration_tests::http::{free_port, try_request};
use tollgate_integration_tests::logs::LogDir;
use tollgate_integration_tests::paths::run_script;
use tollgate_integration_tests::process::{signal, Proc};
use tollgate_integration_tests::{Admin, FilterBuild};

const READY: &str = "Press Ctrl-C to stop.";

struct Run {
    proc: Proc,
    printed: String,
    control_plane: String,
    ports: [u16; 4],
    _dir: tempfile::TempDir,
    logs: LogDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.logs.dump();
        }
    }
}

/// Starts scripts/run.sh with a fresh data directory and waits for its banner.
fn start(admin_token: Option<&str>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let logs = LogDir::new();
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let mut command = std::process::Command::new(run_script());
    command
        .env("TOLLGATE_SKIP_BUILD", "1")
        // `make run FILTER=native` for the native build.
        .env("TOLLGATE_FILTER", FilterBuild::under_test().name())
        .env("TOLLGATE_DATA_DIR", dir.path().join("data"))
        // Its logs beside the script's own, printed and kept if the test fails.
        .env("TOLLGATE_RUN_DIR", logs.path())
        .env("TOLLGATE_RUN_PORTS", ports.map(|p| p.to_string()).join(" "))
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_FILTER_TOKEN");
    if let Some(token) = admin_token {
        command.env("TOLLGATE_ADMIN_TOKEN", token);
    }
    let proc = Proc::spawn("run.sh", &mut command, &logs.file("run.sh"));
    let mut run = Run {
        proc,
        printed: String::new(),
        control_plane: format!("http://127.0.0.1:{}", ports[0]),
        ports,
        _dir: dir,
        logs,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !run.printed.contains(READY) {
        if let Some(status) = run.proc.exited() {
            panic!(
                "run.sh exited ({status}) before it was ready:\n{}",
                run.proc.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "run.sh not ready in 120 s:\n{}",
            run.proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
        run.printed = run.proc.log();
    }
    run
}

impl Run {
    /// The rest of the line that starts (after indentation) with `label`.
    fn line(&self, label: &str) -> &str {
        self.printed
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no line starting with {label:?} in:\n{}", self.printed))
            .trim()
    }

    /// The number just before `after` in the printed text (`"9 passed (200)"` → 9 for
    /// `" passed (200)"`).
    fn number_before(&self, after: &str) -> u64 {
        let at = self
            .printed
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} not printed:\n{}", self.printed));
        let digits: String = self.printed[..at]
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number before {after:?}:\n{}", self.printed))
    }

    /// Ctrl-C: the script stops everything it started and exits 0.
    fn stop(mut self) {
        assert!(signal(self.proc.pid(), libc::SIGINT));
        let status = self
            .proc
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("run.sh still running 15 s after Ctrl-C"));
        assert!(status.success(), "run.sh after Ctrl-C: {status}");
        for port in self.ports {
            let url = format!("http://127.0.0.1:{port}/");
            assert!(
                try_request("GET", &url, &[], None).is_err(),
                "port {port} still answers after Ctrl-C"
            );
        }
    }
}

fn card(browser: &Browser, id: &str) -> u64 {
    let text = browser.text(&format!("#{id} .stat-value"));
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("card {id}: {text:?}"))
}

#[test]
fn make_run_shows_the_dashboard_with_the_demo_keys_traffic() {
    let run = start(None);
    let base = &run.control_plane;

    // Where the dashboard is, and the token that signs in.
    assert_eq!(run.line("Dashboard"), format!("{base}/ui"));
    let signin = run.line("sign in with");
    let token_file = signin
        .split_whitespace()
        .find(|w| w.ends_with("/admin-token"))
        .unwrap_or_else(|| panic!("sign-in line names no admin-token file: {signin:?}"));
    let token = std::fs::read_to_string(token_file).unwrap();
    let token = token.trim();
    let usage_url = run.line("the demo key's usage:").to_string();
    let key_id = usage_url
        .strip_prefix(&format!("{base}/ui/keys/"))
        .and_then(|rest| rest.strip_suffix("/usage"))
        .unwrap_or_else(|| panic!("usage URL {usage_url:?}"))
        .to_string();

    // The demo traffic as printed, every request recorded before the banner.
    let passed = run.number_before(" passed (200)");
    let denied = run.number_before(" denied (403");
    let burst_passed = run.number_before(" passed, ");
    let burst_limited = run.number_before(" rate-limited (429");
    assert_eq!((passed, denied), (9, 1), "{}", run.printed);
    assert_eq!(burst_passed + burst_limited, 150, "{}", run.printed);
    assert!(
        burst_limited > 0,
        "150 requests at once on plan pro (50/s) must meet the limit:\n{}",
        run.printed
    );
    let sent = passed + denied + 150;
    assert!(
        run.printed
            .contains(&format!("({sent} of {sent} requests recorded)")),
        "{}",
        run.printed
    );

    // What the control plane stored is what was printed.
    let usage = Admin::new(base.clone(), token).key_usage(&key_id, &[]);
    let totals = &usage["totals"];
    assert_eq!(totals["completed"], passed + burst_passed, "{usage}");
    assert_eq!(totals["failed"], denied, "{usage}");
    assert_eq!(totals["rate_limited"], burst_limited, "{usage}");

    // A new user opens the printed page, is asked to sign in, and sees the same.
    let browser = Browser::start("make-run");
    browser.goto(&usage_url);
    browser.find("#token");
    browser.fill("#token", token);
    browser.click("form[action='/ui/signin'] button[type=submit]");
    browser.wait_for("the key's usage page", || {
        (browser.current_path() == format!("/ui/keys/{key_id}/usage")).then_some(())
    });
    browser.wait_for("the demo traffic on the cards", || {
        (card(&browser, "card-total") == sent).then_some(())
    });
    assert_eq!(card(&browser, "card-completed"), passed + burst_passed);
    assert_eq!(card(&browser, "card-failed"), denied);
    assert_eq!(card(&browser, "card-rate-limited"), burst_limited);
    drop(browser);

    run.stop();
}

#[test]
fn make_run_names_tollgate_admin_token_when_it_is_set() {
    let token = "tg-make-run-test-admin-token-5d2e";
    let run = start(Some(token));
    let signin = run.line("sign in with");
    assert!(
        signin.contains("TOLLGATE_ADMIN_TOKEN") && !signin.contains("/admin-token"),
        "sign-in line: {signin:?}"
    );
    assert!(!run.printed.contains(token), "the token itself is printed");
    let whoami = try_request(
        "GET",
        &format!("{}/v1/whoami", run.control_plane),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .unwrap();
    assert_eq!(whoami.status, 200, "{whoami:?}");
    run.stop();
}
