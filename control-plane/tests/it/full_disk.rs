//! A full disk answers 503 with `Retry-After` (a condition that passes), not 500; it counts as a
//! store error; reads still answer; once there is room the same batch is stored, each record
//! once.
//!
//! SQLite: `tollgate serve` in a child process with a small file size limit (RLIMIT_FSIZE, set
//! with prlimit(2) on the child alone): its writes fail as on a full disk (`serve` ignores
//! SIGXFSZ, so a write fails with EFBIG instead of killing it). PostgreSQL: the database in a
//! tablespace on a small tmpfs, filled up, so the server's own writes fail with ENOSPC
//! (SQLSTATE 53100); that needs root and the server on this machine, else it is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::cli::{spawn_serve_with, terminate};
use crate::common::{
    execute_while_dropping, now_ms, on_postgres, postgres_url, read_token, record, TestDatabase,
    TestServer, ADMIN, FILTER,
};

const FULL: &str = "the database is full or out of resources; try again later";

/// A control plane as these tests call it: the status, `Retry-After` and JSON body of each call.
struct Client {
    http: reqwest::Client,
    base: String,
    admin: String,
    filter: String,
}

impl Client {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        // Held to the API's description, 503 and its Retry-After included.
        let answer = crate::common::answer(&self.http, req).await;
        let retry_after = answer
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = serde_json::from_slice(&answer.bytes).unwrap_or(Value::Null);
        (answer.status, retry_after, body)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, _, body) = self.call(method, path, &self.admin, body).await;
        (status, body)
    }

    async fn ingest(&self, records: &[Value]) -> (StatusCode, Option<String>, Value) {
        let body = json!({ "records": records });
        let path = "/v1/filter/usage";
        self.call(Method::POST, path, &self.filter, Some(body))
            .await
    }

    /// `tollgate_store_errors_total` of `operation`.
    async fn store_errors(&self, operation: &str) -> f64 {
        let url = format!("{}/metrics", self.base);
        let text = self.http.get(url).send().await.unwrap().text().await;
        let series = format!("tollgate_store_errors_total{{operation=\"{operation}\"}} ");
        text.unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// A workspace with one key; the keys path and the key.
    async fn key(&self) -> (String, Value) {
        let (status, ws) = self
            .admin(
                Method::POST,
                "/v1/workspaces",
                Some(json!({"name": "full"})),
            )
            .await;
        assert_eq!(status, 201, "{ws}");
        let keys = format!("/v1/workspaces/{}/keys", ws["id"].as_str().unwrap());
        let (status, key) = self
            .admin(Method::POST, &keys, Some(json!({"alias": "k"})))
            .await;
        assert_eq!(status, 201, "{key}");
        (keys, key)
    }

    /// `batch` fails with 503 and `Retry-After` while the disk is full, counted as a store error
    /// each time; reads still answer.
    async fn refused_while_full(&self, batch: &[Value], key: &Value) {
        let errors = self.store_errors("ingest_usage").await;
        for _ in 0..2 {
            let (status, retry_after, body) = self.ingest(batch).await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(retry_after.as_deref(), Some("10"));
            assert_eq!(body, json!({ "error": FULL }));
        }
        assert_eq!(self.store_errors("ingest_usage").await, errors + 2.0);
        let key_path = format!("/v1/keys/{}", key["id"].as_str().unwrap());
        let (status, read) = self.admin(Method::GET, &key_path, None).await;
        assert_eq!(status, 200, "{read}");
    }

    /// Once there is room, `batch` is stored whole (nothing of it was while full), then once.
    async fn stored_once_there_is_room(&self, batch: &[Value]) {
        let (status, _, stored) = self.ingest(batch).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(
            (&stored["accepted"], &stored["duplicates"]),
            (&json!(batch.len()), &json!(0)),
            "{stored}"
        );
        let (status, _, again) = self.ingest(batch).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["duplicates"], batch.len(), "{again}");
    }
}

fn batch(key: &Value, prefix: &str, n: i64) -> Vec<Value> {
    let now = now_ms();
    (0..n)
        .map(|i| record(key, &format!("{prefix}-{i}"), now + i))
        .collect()
}

/// Sets (or with `None` lifts) the file size limit of process `pid`.
fn file_size_limit(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: prlimit reads `limit` and writes nothing back (null old limit).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn a_full_disk_answers_503_with_retry_after_until_there_is_room() {
    if on_postgres() {
        eprintln!("skipped: a file size limit stops SQLite's writes (PostgreSQL: the next test)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Its log on the same full disk: already past the limit, so no log line can be written
    // while it holds, and the server must answer all the same.
    let log_path = dir.path().join("serve.log");
    std::fs::write(&log_path, vec![b'\n'; 8_192]).unwrap();
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .unwrap();
    let (child, _, base) = spawn_serve_with(dir.path(), log.into()).await;
    let c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        base,
        admin: read_token(dir.path(), "admin-token"),
        filter: read_token(dir.path(), "filter-token"),
    };
    let (keys, key) = c.key().await;
    let (status, _, stored) = c.ingest(&batch(&key, "before", 1)).await;
    assert_eq!(status, 200, "{stored}");

    let pid = child.id().unwrap();
    // Below the size of the database's files: every write past it fails.
    file_size_limit(pid, Some(4_096));
    let while_full = batch(&key, "while-full", 20);
    // The ingest writer's path, then the connection pool's (an admin write).
    c.refused_while_full(&while_full, &key).await;
    let (status, retry_after, body) = c
        .call(Method::POST, &keys, &c.admin, Some(json!({"alias": "k2"})))
        .await;
    assert_eq!(
        (status, retry_after.as_deref(), body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("10"),
            json!({ "error": FULL })
        )
    );

    file_size_limit(pid, None);
    c.stored_once_there_is_room(&while_full).await;
    let (status, created) = c
        .admin(Method::POST, &keys, Some(json!({"alias": "k2"})))
        .await;
    assert_eq!(status, 201, "{created}");
    terminate(child).await;
}

/// A tmpfs of `SIZE_MB` mounted for a PostgreSQL tablespace; dropped: the tablespace dropped
/// (its database must be gone by then) and the tmpfs unmounted.
struct SmallTablespace {
    admin_url: String,
    name: String,
    dir: tempfile::TempDir,
}

impl SmallTablespace {
    /// Room for a new database (about 8 MB) and the control plane's tables.
    const SIZE_MB: u32 = 32;

    /// `Err(why)` when this machine cannot have one: not root, the server elsewhere (its data
    /// directory is not here), or mounting forbidden.
    async fn create(admin_url: &str) -> Result<Self, String> {
        use sqlx::{Connection, Executor};
        // SAFETY: geteuid takes nothing and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root, to mount a small tmpfs".to_owned());
        }
        let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
        let data_dir: String = sqlx::query_scalar("SHOW data_directory")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("cannot read the server's data directory: {e}"))?;
        let owner = std::fs::metadata(&data_dir).map_err(|e| {
            format!("the PostgreSQL server is not on this machine ({data_dir}: {e})")
        })?;
        let dir = tempfile::tempdir().unwrap();
        mount_tmpfs(dir.path(), Self::SIZE_MB)?;
        let name = format!("tollgate_test_full_{}", std::process::id());
        let space = Self {
            admin_url: admin_url.to_owned(),
            name,
            dir,
        };
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(space.dir.path(), Some(owner.uid()), Some(owner.gid())).unwrap();
        let location = space.dir.path().display();
        let create = format!("CREATE TABLESPACE {} LOCATION '{location}'", space.name);
        conn.execute(create.as_str())
            .await
            .map_err(|e| format!("cannot create a tablespace: {e}"))?;
        let _ = conn.close().await;
        Ok(space)
    }

    /// Fills the tmpfs up with a file; its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
        path
    }
}

fn mount_tmpfs(dir: &Path, size_mb: u32) -> Result<(), String> {
    use std::ffi::CString;
    let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let options = CString::new(format!("size={size_mb}m,mode=0700")).unwrap();
    // SAFETY: every pointer is a NUL-terminated string alive for the call.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            options.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot mount a tmpfs: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

impl Drop for SmallTablespace {
    fn drop(&mut self) {
        let statement = format!("DROP TABLESPACE IF EXISTS {}", self.name);
        execute_while_dropping(&self.admin_url, statement);
        if let Ok(target) = std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes()) {
            // SAFETY: a NUL-terminated path alive for the call. Detached: never fails as busy.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[tokio::test]
async fn a_full_disk_on_postgres_answers_503_with_retry_after_until_there_is_room() {
    let Some(admin_url) = postgres_url() else {
        eprintln!("skipped: needs TOLLGATE_TEST_DATABASE_URL (SQLite: the test above)");
        return;
    };
    let space = match SmallTablespace::create(&admin_url).await {
        Ok(space) => space,
        Err(why) => {
            eprintln!("skipped: a full disk under PostgreSQL {why}");
            return;
        }
    };
    let database = TestDatabase::create_in(&admin_url, Some(&space.name)).await;
    let url = database.url.clone();
    let srv = TestServer::start_with(|c| c.database_url = Some(url)).await;
    let c = Client {
        http: srv.client(),
        base: srv.base.clone(),
        admin: ADMIN.to_owned(),
        filter: FILTER.to_owned(),
    };
    let (_, key) = c.key().await;
    let (status, _, stored) = c.ingest(&batch(&key, "before", 1)).await;
    assert_eq!(status, 200, "{stored}");

    let filler = space.fill();
    // Enough records to need new pages in the tables (the first batch's have room for some).
    let while_full = batch(&key, "while-full", 5_000);
    c.refused_while_full(&while_full, &key).await;

    std::fs::remove_file(filler).unwrap();
    c.stored_once_there_is_room(&while_full).await;
    srv.stop().await;
    drop(database);
    drop(space);
}
