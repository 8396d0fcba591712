use std::os::unix::fs::PermissionsExt;

use reqwest::Method;

use crate::common::{on_postgres, read_token, TestServer};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn generated_tokens_are_saved_privately_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start_in(dir.path()).await;
    let admin = read_token(dir.path(), "admin-token");
    let filter = read_token(dir.path(), "filter-token");
    assert!(admin.starts_with("tga_") && admin.len() == 36, "{admin}");
    assert!(filter.starts_with("tgf_") && filter.len() == 36, "{filter}");
    assert_ne!(admin[4..], filter[4..]);
    assert_eq!(mode(&dir.path().join("admin-token")), 0o600);
    assert_eq!(mode(&dir.path().join("filter-token")), 0o600);
    // SQLite lives in the data directory; on PostgreSQL only the tokens do.
    assert_eq!(dir.path().join("tollgate.db").exists(), !on_postgres());

    let ws = srv.workspace("free").await;
    let (status, _) = srv
        .send(Method::GET, "/v1/filter/keys/00", Some(&filter), None)
        .await;
    assert_eq!(status, 400, "filter token accepted");
    srv.stop().await;

    // Restart on the same directory: same tokens, same data.
    let srv = TestServer::start_in(dir.path()).await;
    assert_eq!(read_token(dir.path(), "admin-token"), admin);
    assert_eq!(read_token(dir.path(), "filter-token"), filter);
    assert_eq!(srv.admin_token, admin);
    srv.get(&format!("/v1/workspaces/{ws}"), 200).await;
    let (status, _) = srv
        .send(Method::GET, "/v1/workspaces", Some("tga_other"), None)
        .await;
    assert_eq!(status, 401);
    srv.stop().await;
}

#[tokio::test]
async fn configured_tokens_write_no_files() {
    let srv = TestServer::start().await;
    srv.get("/v1/workspaces", 200).await;
    let dir = srv.data_dir().to_owned();
    assert_eq!(dir.join("tollgate.db").exists(), !on_postgres());
    assert!(!dir.join("admin-token").exists());
    assert!(!dir.join("filter-token").exists());
    srv.stop().await;
}
