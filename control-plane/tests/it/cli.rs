use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::{database_url_for, read_token, sha256, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

pub(crate) fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "TOLLGATE_ADMIN_TOKEN",
        "TOLLGATE_FILTER_TOKEN",
        "TOLLGATE_URL",
        "TOLLGATE_DATA_DIR",
        "TOLLGATE_DATABASE_URL",
        "TOLLGATE_METRICS_LISTEN",
        "TOLLGATE_LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.kill_on_drop(true);
    cmd
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn run(srv: &TestServer, args: &[&str]) -> Run {
    let out: Output = command()
        .args(["--url", &srv.base, "--token", &srv.admin_token])
        .args(args)
        .output()
        .await
        .unwrap();
    Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn ok(srv: &TestServer, args: &[&str]) -> String {
    let r = run(srv, args).await;
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    r.stdout
}

/// The value of a `label  value` line of the human output.
fn field<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label).filter(|rest| rest.starts_with("  ")))
        .unwrap_or_else(|| panic!("no {label} in {stdout}"))
        .trim()
}

fn secret_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Secret: "))
        .unwrap_or_else(|| panic!("no secret in {stdout}"))
}

#[tokio::test]
async fn cli_manages_workspaces_and_keys() {
    let srv = TestServer::start().await;

    let out = ok(
        &srv,
        &["workspaces", "create", "--name", "CLI Co", "--plan", "free"],
    )
    .await;
    let ws = field(&out, "id").to_owned();
    assert!(ws.starts_with("ws_"), "{out}");
    assert_eq!(field(&out, "plan"), "free");

    let out = ok(&srv, &["workspaces", "list"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID ") && lines[0].contains("NAME"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&ws) && lines[1].contains("CLI Co"),
        "{out}"
    );

    let json: Value =
        serde_json::from_str(&ok(&srv, &["--json", "workspaces", "list"]).await).unwrap();
    assert_eq!(json["data"][0]["id"], ws.as_str());

    let out = ok(
        &srv,
        &[
            "keys",
            "create",
            "--workspace",
            &ws,
            "--alias",
            "cli key",
            "--category",
            "staging",
            "--quota-daily",
            "10",
            "--allow",
            "GET /v1/**",
            "--allow",
            "/health",
            "--expires-at",
            "2999-01-01T00:00:00Z",
        ],
    )
    .await;
    let secret = secret_line(&out).to_owned();
    assert!(out.contains("will not be shown again"), "{out}");
    assert!(secret.starts_with("tg_") && secret.len() == 42, "{secret}");
    let key_id = field(&out, "id").to_owned();
    assert_eq!(field(&out, "status"), "active");
    let (status, lookup) = srv.lookup(&sha256(&secret)).await;
    assert_eq!(status, 200);
    assert_eq!(lookup["key_id"], key_id.as_str());
    assert_eq!(lookup["quotas"]["daily"], 10);
    assert_eq!(
        lookup["allowed"],
        serde_json::json!([{"method": "GET", "path": "/v1/**"}, {"method": "*", "path": "/health"}])
    );

    let r = run(
        &srv,
        &[
            "--json",
            "keys",
            "create",
            "--workspace",
            &ws,
            "--alias",
            "second",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let second: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(second["secret"].as_str().unwrap().starts_with("tg_"));
    assert!(r.stderr.contains("will not be shown again"), "{}", r.stderr);

    let out = ok(&srv, &["keys", "list", "--workspace", &ws]).await;
    assert!(
        out.contains("cli key") && out.contains("second") && out.contains("STATUS"),
        "{out}"
    );

    let out = ok(&srv, &["keys", "deactivate", &key_id]).await;
    assert_eq!(field(&out, "status"), "inactive");
    assert_eq!(srv.lookup(&sha256(&secret)).await.1["active"], false);
    let out = ok(&srv, &["keys", "activate", &key_id]).await;
    assert_eq!(field(&out, "status"), "active");

    let out = ok(&srv, &["keys", "rotate", &key_id, "--grace-seconds", "60"]).await;
    let new_secret = secret_line(&out);
    assert_ne!(new_secret, secret);
    assert_eq!(srv.lookup(&sha256(new_secret)).await.0, 200);
    assert_eq!(
        srv.lookup(&sha256(&secret)).await.0,
        200,
        "old secret in grace"
    );

    let second_id = second["id"].as_str().unwrap();
    let out = ok(&srv, &["keys", "delete", second_id]).await;
    assert!(out.contains("Deleted key"), "{out}");
    let r = run(&srv, &["keys", "delete", &key_id]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "error: API key has request history; deactivate it instead\n"
    );

    let json: Value =
        serde_json::from_str(&ok(&srv, &["--json", "keys", "show", &key_id]).await).unwrap();
    assert_eq!(json["alias"], "cli key");
    assert!(json.get("secret").is_none());
}

#[tokio::test]
async fn cli_reports_api_errors() {
    let srv = TestServer::start().await;
    let r = run(&srv, &["keys", "show", "key_nope"]).await;
    assert_eq!(
        (r.code, r.stderr.as_str(), r.stdout.as_str()),
        (1, "error: API key not found\n", "")
    );
    let r = run(
        &srv,
        &["workspaces", "create", "--name", "x", "--plan", "gold"],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("error: plan: unknown plan 'gold'"),
        "{}",
        r.stderr
    );
    // The API's rule for a new key's expiry, through the same use case.
    let ws = srv.workspace("pro").await;
    let r = run(
        &srv,
        &[
            "keys",
            "create",
            "--workspace",
            &ws,
            "--alias",
            "late",
            "--expires-at",
            "1970-01-01T00:00:00Z",
        ],
    )
    .await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .starts_with("error: expires_at: must be in the future"),
        "{}",
        r.stderr
    );
    assert_eq!(srv.key_count(&ws).await, 0);

    let out = command()
        .args(["--url", &srv.base, "--token", "wrong", "workspaces", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: invalid admin token\n"
    );
}

#[tokio::test]
async fn cli_falls_back_to_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start_in(dir.path()).await;
    let out = command()
        .args(["--url", &srv.base, "--data-dir"])
        .arg(dir.path())
        .args(["workspaces", "list"])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let empty = tempfile::tempdir().unwrap();
    let out = command()
        .args(["--url", &srv.base, "--data-dir"])
        .arg(empty.path())
        .args(["workspaces", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: no admin token"));
}

/// Starts `tollgate serve` on port 0 and returns it with the stdout lines printed up to and
/// including `Listening on http://...`.
pub(crate) async fn spawn_serve(
    data_dir: &std::path::Path,
) -> (tokio::process::Child, Vec<String>, String) {
    spawn_serve_with(data_dir, Stdio::inherit()).await
}

/// `tollgate serve` on `data_dir` with its log (stderr) to `log`.
pub(crate) async fn spawn_serve_with(
    data_dir: &std::path::Path,
    log: Stdio,
) -> (tokio::process::Child, Vec<String>, String) {
    let mut cmd = command();
    cmd.stderr(log);
    if let Some(url) = database_url_for(data_dir).await {
        cmd.env("TOLLGATE_DATABASE_URL", url);
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let base = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix("Listening on ") {
                return addr.to_owned();
            }
            seen.push(line);
        }
        panic!("serve exited before listening: {seen:?}");
    })
    .await
    .unwrap();
    (child, seen, base)
}

pub(crate) async fn terminate(mut child: tokio::process::Child) {
    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
}

#[tokio::test]
async fn serve_prints_generated_tokens_once() {
    let dir = tempfile::tempdir().unwrap();
    let (child, lines, base) = spawn_serve(dir.path()).await;
    let admin = read_token(dir.path(), "admin-token");
    let filter = read_token(dir.path(), "filter-token");
    assert!(
        lines.contains(&format!("Admin token: {admin}")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&format!("Filter token: {filter}")),
        "{lines:?}"
    );
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{base}/v1/plans"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    terminate(child).await;

    let (child, lines, _) = spawn_serve(dir.path()).await;
    assert!(
        lines.iter().all(|l| !l.contains("token:")),
        "tokens are shown only when generated: {lines:?}"
    );
    terminate(child).await;
    assert_eq!(read_token(dir.path(), "admin-token"), admin);
}

#[tokio::test]
async fn cli_sets_rate_limits_credits_and_owner_and_lists_by_external_id() {
    let srv = TestServer::start().await;
    let ws = srv.workspace("pro").await;
    let out = ok(
        &srv,
        &[
            "keys",
            "create",
            "--workspace",
            &ws,
            "--alias",
            "owned",
            "--rate-limit-per-second",
            "10",
            "--rate-limit-per-hour",
            "5000",
            "--credits-limit",
            "1000",
            "--credits-period",
            "month",
            "--external-id",
            "cus_4f2a",
            "--meta",
            "tier=gold",
            "--meta",
            "region=eu",
        ],
    )
    .await;
    let secret = secret_line(&out).to_owned();
    let id = field(&out, "id").to_owned();
    assert_eq!(field(&out, "rate_limits"), "10/s, 5000/h");
    assert_eq!(
        field(&out, "credits"),
        "1000 per month, 0 used, 1000 remaining"
    );
    assert_eq!(field(&out, "external_id"), "cus_4f2a");
    assert_eq!(field(&out, "meta"), "region=eu, tier=gold");
    let (_, lookup) = srv.lookup(&sha256(&secret)).await;
    assert_eq!(lookup["rate_limits"]["per_second"], 10);
    assert_eq!(lookup["credits"]["limit"], 1000);
    assert_eq!(lookup["external_id"], "cus_4f2a");
    assert_eq!(lookup["meta"]["tier"], "gold");
    srv.key(&ws, serde_json::json!({"alias": "other"})).await;

    // The table shows the external id; --external-id lists that customer's keys only.
    let table = ok(&srv, &["keys", "list", "--workspace", &ws]).await;
    assert!(
        table.lines().next().unwrap().ends_with("EXTERNAL ID"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    let only = ok(
        &srv,
        &[
            "keys",
            "list",
            "--workspace",
            &ws,
            "--external-id",
            "cus_4f2a",
        ],
    )
    .await;
    assert_eq!(only.lines().count(), 2, "{only}");
    assert!(only.contains(&id) && only.contains("cus_4f2a"), "{only}");

    // update: merge the windows, replace the budget and meta, clear the external id.
    let out = ok(
        &srv,
        &[
            "keys",
            "update",
            &id,
            "--rate-limit-per-second",
            "none",
            "--rate-limit-per-minute",
            "300",
            "--credits-limit",
            "50",
            "--credits-period",
            "day",
            "--no-external-id",
            "--meta",
            "tier=silver",
        ],
    )
    .await;
    assert_eq!(field(&out, "rate_limits"), "300/min, 5000/h");
    assert_eq!(field(&out, "credits"), "50 per day, 0 used, 50 remaining");
    assert_eq!(field(&out, "external_id"), "-");
    assert_eq!(field(&out, "meta"), "tier=silver");
    let r = run(
        &srv,
        &["--json", "keys", "update", &id, "--no-credits", "--no-meta"],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let json: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(json["credits"], Value::Null);
    assert_eq!(json["meta"], serde_json::json!({}));
    assert_eq!(json["credits_used"], 0);

    // The server's field messages come through.
    let r = run(&srv, &["keys", "update", &id, "--rate-limit-per-hour", "0"]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr.trim(),
        "error: rate_limits.per_hour: must be a positive integer"
    );
    let r = run(&srv, &["keys", "update", &id, "--credits-limit", "5"]).await;
    assert_eq!(r.stderr.trim(), "error: credits.period: is required");
    let r = run(&srv, &["keys", "update", &id, "--meta", "Bad=x"]).await;
    assert_eq!(
        r.stderr.trim(),
        "error: meta.Bad: name must be 1-32 characters [a-z0-9_-]"
    );
}
