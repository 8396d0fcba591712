//! `tollgate serve --log-format json`: every log line on stderr is a JSON object with the fields
//! log collectors read; with `--metrics-listen`, `/metrics` is served there and not on `--listen`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::{command, terminate};
use crate::common::database_url_for;

#[tokio::test]
async fn serve_logs_json_lines_and_serves_metrics_on_their_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command();
    if let Some(url) = database_url_for(dir.path()).await {
        cmd.env("TOLLGATE_DATABASE_URL", url);
    }
    let mut child = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (base, metrics_url) = tokio::time::timeout(Duration::from_secs(20), async {
        let mut metrics_url = None;
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("Metrics on ") {
                metrics_url = Some(url.to_owned());
            }
            if let Some(base) = line.strip_prefix("Listening on ") {
                return (
                    base.to_owned(),
                    metrics_url.expect("Metrics on … before Listening"),
                );
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .unwrap();

    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            for field in ["timestamp", "level", "target", "message"] {
                assert!(event[field].is_string(), "no {field} in {line}");
            }
            if event["message"] == "control plane listening" {
                return event;
            }
        }
        panic!("serve logged no 'control plane listening'");
    })
    .await
    .unwrap();
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert_eq!(
        listening["target"], "tollgate_control_plane::server",
        "{listening}"
    );
    // The event's own fields sit beside the message.
    assert!(
        listening["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{listening}"
    );

    let client = reqwest::Client::new();
    let metrics = client.get(&metrics_url).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("tollgate_"));
    let on_main = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(on_main.status(), 404, "/metrics moved to --metrics-listen");
    terminate(child).await;
}
