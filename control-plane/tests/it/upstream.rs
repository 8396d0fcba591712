use serde_json::{json, Value};
use tokio::net::TcpListener;

#[tokio::test]
async fn demo_upstream_echoes_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tollgate_control_plane::demo_upstream::serve(
        listener,
        async {
            let _ = rx.await;
        },
    ));
    let client = reqwest::Client::new();
    let resp = client
        .delete(format!("{base}/v1/things/42?a=1&b=2"))
        .header("X-Tollgate-Key-Id", "key_1")
        .header("x-multi", "one")
        .header("X-Multi", "two")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["method"], "DELETE");
    assert_eq!(body["path"], "/v1/things/42");
    assert_eq!(body["query"], "a=1&b=2");
    assert_eq!(body["headers"]["x-tollgate-key-id"], "key_1");
    assert_eq!(body["headers"]["x-multi"], "one, two");
    assert!(body["headers"]["host"].as_str().is_some());

    let body: Value = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            body["method"].clone(),
            body["path"].clone(),
            body["query"].clone()
        ),
        (json!("GET"), json!("/"), Value::Null)
    );
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
