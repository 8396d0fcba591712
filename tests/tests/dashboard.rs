//! The web dashboard in a real headless Chromium (chromedriver + fantoccini) against the real
//! stack: control plane, demo upstream and Envoy with the filter build under test
//! (`target/tollgate.wasm` and its usage service, or `target/libtollgate_native.so`).
//! Screenshots of every page are kept in `tests/artifacts/dashboard/` (and refreshed in
//! `docs/screenshots/` with `TOLLGATE_UPDATE_SCREENSHOTS=1`).
//!
//! Needs Debian's `chromium` and `chromium-driver`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_integration_tests::browser::Browser;
use tollgate_integration_tests::time::{now_ms, rfc3339};
use tollgate_integration_tests::{assert_denied, eventually, Admin, Plan, Stack, ADMIN_TOKEN};

const INGEST_TIMEOUT: Duration = Duration::from_secs(30);

fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/ui"));
    browser.find("#token");
    assert!(
        browser.current_path().starts_with("/ui/signin"),
        "not on sign-in: {}",
        browser.current_url()
    );
    browser.fill("#token", token);
    browser.click("form[action='/ui/signin'] button[type=submit]");
    browser.wait_for("signed in", || {
        (!browser.current_path().starts_with("/ui/signin")).then_some(())
    });
}

fn sign_out(browser: &Browser) {
    browser.click("form[action='/ui/signout'] button");
    browser.find("#token");
}

fn card(browser: &Browser, id: &str) -> u64 {
    let text = browser.text(&format!("#{id} .stat-value"));
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("card {id}: {text:?}"))
}

/// `data-label → data-count` of a donut's slices.
fn donut(browser: &Browser, id: &str) -> BTreeMap<String, u64> {
    browser
        .find_all(&format!("#{id} circle.slice"))
        .iter()
        .map(|c| {
            let label = browser.attr(c, "data-label").unwrap_or_default();
            let count = browser
                .attr(c, "data-count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (label, count)
        })
        .collect()
}

fn api_counts(list: &Value, label: &str) -> BTreeMap<String, u64> {
    list.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|v| {
            let key = match &v[label] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (key, v["count"].as_u64().unwrap_or(0))
        })
        .collect()
}

fn log_rows(browser: &Browser) -> usize {
    browser
        .find_all("#request-log tbody tr[data-request-id]")
        .len()
}

fn column_visible(browser: &Browser, col: &str) -> bool {
    let th = browser.find(&format!("#request-log th[data-col={col}]"));
    browser.is_displayed(&th)
}

/// Applies one filter through the form and returns the rows shown.
fn apply_filter(browser: &Browser, set: impl Fn(&Browser)) -> usize {
    let before = browser.current_url();
    set(browser);
    browser.click("#apply-filters");
    browser.wait_for("filtered page", || {
        (browser.current_url() != before).then_some(())
    });
    browser.find("#request-log");
    log_rows(browser)
}

fn clear_filters(browser: &Browser) {
    browser.click("#clear-filters");
    browser.find("#request-log");
}

#[test]
fn dashboard_end_to_end() {
    let stack = Stack::builder()
        .cache_ttl("2s")
        .set(
            "/usage/routes",
            json!([
                {"method": "GET", "path": "/v1/candidates/{id}", "credits": 2},
                {"method": "POST", "path": "/v1/candidates", "credits": 5}
            ]),
        )
        .set("/usage/flush_interval", "500ms")
        .direct_response("/v1/broken", 503)
        .start();
    let base = stack.control_plane_url();
    let admin = stack.admin();
    let acme = admin.create_workspace("Acme Corp", Plan::Free);
    let globex = admin.create_workspace("Globex", Plan::Pro);
    let globex_key = admin.create_key(&globex, &json!({"alias": "Globex backend"}));
    let spare = admin.create_key(
        &acme,
        &json!({"alias": "Staging CI", "category": "staging", "description": "Unused so far: can be deleted"}),
    );

    let mut browser = Browser::start("dashboard");

    // Sign-in page, then the admin lands on a workspace's keys.
    browser.goto(&format!("{base}/"));
    browser.find("#token");
    browser.screenshot("signin");
    sign_in(&browser, &base, ADMIN_TOKEN);
    browser.goto(&format!("{base}/ui/w/{acme}/keys"));
    assert_eq!(browser.text("h1"), "API Keys");

    // Generate a key: first with an invalid quota (the API's message beside the field).
    browser.click("a[href$='/keys/new']");
    browser.fill("#alias", "Zapier Integration");
    browser.fill("#description", "Candidate sync from the Zapier app");
    browser.select("#category", "production");
    browser.fill("#quota_daily", "0");
    browser.fill(
        "#allowed",
        "GET /v1/candidates/*\nPOST /v1/candidates\nGET /v1/broken",
    );
    browser.click("form.form-card button[type=submit]");
    assert_eq!(
        browser.text("#quota_daily-error"),
        "must be a positive integer"
    );
    browser.screenshot("key-form-error");
    browser.fill("#quota_daily", "10000");
    browser.click("form.form-card button[type=submit]");

    // The secret, once.
    let secret_input = browser.find("#secret-value");
    let secret = browser.prop(&secret_input, "value").unwrap_or_default();
    assert!(secret.starts_with("tg_") && secret.len() == 42, "{secret}");
    let path = browser.current_path();
    let key_id = path
        .trim_start_matches("/ui/keys/")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    browser.screenshot("key-secret");
    browser.refresh();
    browser.find("#secret-gone");
    assert!(!browser.exists("#secret-value"), "secret shown twice");
    assert!(!browser
        .execute("return document.body.innerHTML", vec![])
        .as_str()
        .unwrap_or("")
        .contains(&secret));

    // Traffic through Envoy with that key.
    let key = [("x-api-key", secret.as_str())];
    let mut sent = 0;
    for i in 1..=4 {
        let r = stack.get(&format!("/v1/candidates/c-{i}"), &key);
        assert_eq!(r.status, 200, "{r:?}");
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    for _ in 0..2 {
        let r = stack.request("POST", "/v1/candidates", &key);
        assert_eq!(r.status, 200, "{r:?}");
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    for _ in 0..2 {
        let r = stack.get("/v1/broken", &key);
        assert_eq!(r.status, 503, "{r:?}");
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    for _ in 0..3 {
        let r = stack.get("/v1/jobs", &key);
        assert_eq!(r.status, 403, "not-allowed endpoint: {r:?}");
        sent += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(1100));
    // A burst over the free plan's 5 requests/second.
    let mut limited = 0;
    for _ in 0..15 {
        let r = stack.get("/v1/candidates/c-9", &key);
        if r.status == 429 {
            limited += 1;
        }
        sent += 1;
    }
    assert!(limited > 0, "the burst was never rate limited");
    for i in 0..3 {
        let r = stack.get(
            &format!("/v1/candidates/g-{i}"),
            &[("x-api-key", globex_key.secret.as_str())],
        );
        assert_eq!(r.status, 200);
    }

    let since = rfc3339(now_ms() / 1000 - 3600);
    let records = admin.settled_requests(&[("key_id", key_id.clone())], sent, INGEST_TIMEOUT);
    assert_eq!(records.len(), sent, "records of the key");
    let usage = admin.key_usage(&key_id, &[("from", since.clone())]);
    assert_eq!(usage["totals"]["total"], sent as u64, "{usage}");

    // Usage page: cards, donuts, top endpoints, log.
    browser.goto(&format!("{base}/ui/keys/{key_id}/usage?range=1h"));
    assert_eq!(browser.text("h1"), "Zapier Integration");
    assert!(browser.exists("a.back-link[href$='/keys']"));
    let totals = &usage["totals"];
    assert_eq!(
        card(&browser, "card-total"),
        totals["total"].as_u64().unwrap()
    );
    assert_eq!(
        card(&browser, "card-completed"),
        totals["completed"].as_u64().unwrap()
    );
    assert_eq!(
        card(&browser, "card-failed"),
        totals["failed"].as_u64().unwrap()
    );
    assert_eq!(
        card(&browser, "card-rate-limited"),
        totals["rate_limited"].as_u64().unwrap()
    );
    assert!(
        totals["failed"].as_u64().unwrap() >= 5,
        "503s and 403s: {totals}"
    );
    assert_eq!(totals["rate_limited"].as_u64().unwrap(), limited);
    assert_eq!(
        donut(&browser, "chart-methods"),
        api_counts(&usage["by_method"], "method")
    );
    assert_eq!(
        donut(&browser, "chart-codes"),
        api_counts(&usage["by_response_code"], "response_code")
    );
    let endpoints = browser.find_all("#top-endpoints li");
    assert_eq!(
        endpoints.len(),
        usage["top_endpoints"].as_array().unwrap().len()
    );
    assert!(browser
        .text("#top-endpoints")
        .contains("/v1/candidates/{id}"));
    assert_eq!(log_rows(&browser), sent.min(50));
    // Local time: app.js rewrote the UTC fallback text.
    let first_time = browser.text("#request-log tbody tr td[data-col=timestamp] time");
    assert!(
        !first_time.ends_with("UTC"),
        "timestamp not localised: {first_time}"
    );
    browser.screenshot("key-usage");

    // Each filter narrows the log as the API does.
    let api_len = |extra: &[(&str, &str)]| {
        let mut params = vec![("key_id", key_id.clone()), ("from", since.clone())];
        params.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        admin.requests(&params).len().min(50)
    };
    let n = apply_filter(&browser, |b| b.select("#f-status", "failed"));
    assert_eq!(n, api_len(&[("status", "failed")]));
    assert!(n > 0 && n < sent);
    for cell in browser.find_all("#request-log tbody td[data-col=status]") {
        assert_eq!(browser.element_text(&cell), "Failed");
    }
    clear_filters(&browser);
    assert_eq!(log_rows(&browser), sent.min(50));
    let n = apply_filter(&browser, |b| b.select("#f-method", "POST"));
    assert_eq!(n, 2);
    clear_filters(&browser);
    let n = apply_filter(&browser, |b| b.fill("#f-endpoint", "/v1/candidates/{id}"));
    assert_eq!(n, api_len(&[("endpoint", "/v1/candidates/{id}")]));
    assert!(n >= 4 && n < sent);
    clear_filters(&browser);
    let n = apply_filter(&browser, |b| b.fill("#f-code", "503"));
    assert_eq!(n, 2);
    clear_filters(&browser);
    let n = apply_filter(&browser, |b| b.fill("#f-resource", "c-1"));
    assert_eq!(n, 1);
    clear_filters(&browser);
    let set_date = |b: &Browser, date: &str| {
        b.execute(
            "const d = arguments[0] || (() => { const n = new Date(); const p = v => String(v).padStart(2, '0'); \
             return n.getFullYear() + '-' + p(n.getMonth() + 1) + '-' + p(n.getDate()); })(); \
             document.getElementById('f-date').value = d;",
            vec![json!(date)],
        );
    };
    let n = apply_filter(&browser, |b| set_date(b, ""));
    assert_eq!(n, sent.min(50), "today (local) holds every request");
    let n = apply_filter(&browser, |b| set_date(b, "2020-01-01"));
    assert_eq!(n, 0);
    clear_filters(&browser);
    // Filtered CSV export: the browser's session downloads it.
    apply_filter(&browser, |b| b.select("#f-status", "failed"));
    let csv_href = browser.attr(&browser.find("#csv-export"), "href").unwrap();
    let csv = browser.execute_async(
        "const done = arguments[arguments.length - 1]; \
         fetch(arguments[0]).then(r => r.text().then(t => done([r.status, r.headers.get('content-type'), t])));",
        vec![json!(csv_href)],
    );
    assert_eq!(csv[0], 200, "{csv}");
    assert!(csv[1].as_str().unwrap_or("").starts_with("text/csv"));
    let csv_text = csv[2].as_str().unwrap();
    assert!(csv_text.starts_with("request_id,timestamp,key_id"));
    assert_eq!(
        csv_text.lines().count() - 1,
        api_len(&[("status", "failed")])
    );
    clear_filters(&browser);

    // Edit columns: hide IP, survives a reload (localStorage), then show it again.
    assert!(column_visible(&browser, "ip"));
    browser.click("details.columns-menu summary");
    browser.click("input[data-col-toggle=ip]");
    assert!(!column_visible(&browser, "ip"));
    browser.screenshot("key-usage-columns");
    browser.refresh();
    browser.find("#request-log");
    assert!(
        !column_visible(&browser, "ip"),
        "hidden column came back after reload"
    );
    browser.click("details.columns-menu summary");
    browser.click("input[data-col-toggle=ip]");
    assert!(column_visible(&browser, "ip"));
    browser.refresh();
    browser.find("#request-log");

    // Narrow screen.
    browser.resize(390, 844);
    browser.screenshot("key-usage-mobile");
    browser.goto(&format!("{base}/ui/w/{acme}/keys"));
    browser.find("#keys-table");
    browser.screenshot("keys-mobile");
    browser.resize(1280, 900);

    // Workspace overview: the same for all keys.
    let ws_usage = admin.workspace_usage(&acme, &[("from", since.clone())]);
    browser.goto(&format!("{base}/ui/w/{acme}/overview?range=1h"));
    assert_eq!(
        card(&browser, "card-total"),
        ws_usage["totals"]["total"].as_u64().unwrap()
    );
    assert!(browser.exists("#request-log th[data-col=key]"));
    browser.screenshot("overview");
    browser.goto(&format!("{base}/ui/workspaces"));
    browser.find("table");
    browser.screenshot("workspaces");

    // Keys page: counts and the row actions.
    browser.goto(&format!("{base}/ui/w/{acme}/keys"));
    let row = format!("tr[data-key-id='{key_id}']");
    assert_eq!(
        browser.text(&format!("{row} td.num")).replace(',', ""),
        sent.to_string(),
        "calls this month"
    );
    let delete = browser.find(&format!("{row} button[data-action=delete]"));
    assert!(
        browser.attr(&delete, "disabled").is_some(),
        "used key must not be deletable"
    );
    assert!(browser
        .attr(&delete, "title")
        .unwrap_or_default()
        .contains("request history"));
    let spare_delete = browser.find(&format!(
        "tr[data-key-id='{}'] button[data-action=delete]",
        spare.id
    ));
    assert!(browser.attr(&spare_delete, "disabled").is_none());
    browser.screenshot("keys");

    // Deactivate in the UI: Envoy denies the key within the cache TTL.
    browser.click(&format!("{row} button[data-action=deactivate]"));
    browser.find(".alert-success");
    assert_eq!(browser.text(&format!("{row} td.status-cell")), "inactive");
    let denied = eventually(Duration::from_secs(10), Duration::from_millis(200), || {
        let r = stack.get("/v1/candidates/c-1", &key);
        (r.status == 401).then_some(r)
    })
    .expect("Envoy still admits the deactivated key");
    assert_denied(&denied, 401, "Inactive API Key");

    // A workspace console token sees only its workspace: pages and API.
    let created = admin.call(
        "POST",
        &format!("/v1/workspaces/{globex}/console-tokens"),
        Some(&json!({"name": "Globex console"})),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let console_token = created.json()["token"].as_str().unwrap().to_string();
    sign_out(&browser);
    sign_in(&browser, &base, &console_token);
    assert_eq!(browser.current_path(), format!("/ui/w/{globex}/keys"));
    assert!(
        !browser.exists("#ws-switch"),
        "console sessions have no switcher"
    );
    assert!(browser.text("#keys-table").contains("Globex backend"));
    for page in [
        format!("/ui/w/{acme}/keys"),
        format!("/ui/w/{acme}/overview"),
        format!("/ui/keys/{key_id}/usage"),
        format!("/ui/keys/{key_id}/rotate"),
        format!("/ui/switch?ws={acme}"),
    ] {
        browser.goto(&format!("{base}{page}"));
        assert_eq!(browser.text("h1"), "Not found", "{page}");
    }
    let status = browser.execute_async(
        "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => done(r.status));",
        vec![json!(format!("/ui/w/{acme}/requests.csv"))],
    );
    assert_eq!(status, 404);
    browser.goto(&format!("{base}/ui/keys/{}/usage?range=1h", globex_key.id));
    assert_eq!(browser.text("h1"), "Globex backend");
    let console_api = Admin::new(base.clone(), console_token.clone());
    for path in [
        format!("/v1/keys/{key_id}"),
        format!("/v1/keys/{key_id}/usage"),
        format!("/v1/workspaces/{acme}/keys"),
        format!("/v1/workspaces/{acme}/usage"),
    ] {
        assert_eq!(console_api.call("GET", &path, None).status, 404, "{path}");
    }
    let leaked = console_api.call(
        "GET",
        &format!("/v1/requests?key_id={key_id}&from={since}"),
        None,
    );
    assert_eq!(leaked.status, 200);
    assert_eq!(
        leaked.json()["data"],
        json!([]),
        "console token read another workspace's log"
    );
}
