//! What every API test shares: the server (in process, on SQLite or PostgreSQL), its client and
//! the helpers that make workspaces, keys and records. Over 600 lines: one fixture for every
//! file of the suite.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_control_plane::tokens::Token;
use tollgate_control_plane::{serve, ServeConfig, ServeError};

pub const ADMIN: &str = "test-admin-token";
pub const FILTER: &str = "test-filter-token";

pub struct TestServer {
    pub base: String,
    /// Private: every call goes through [`answer`], which holds its answer to the description.
    client: reqwest::Client,
    pub admin_token: String,
    pub filter_token: String,
    dir: Option<TempDir>,
    data_dir: PathBuf,
    /// `postgres://…` of this server's database, when the tests run on PostgreSQL.
    database_url: Option<String>,
    /// The PostgreSQL database this server created (dropped with it).
    _database: Option<Arc<TestDatabase>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// A fresh server with known tokens in its own temporary data directory.
    pub async fn start() -> Self {
        Self::start_with_ttl(None).await
    }

    pub async fn start_with_ttl(ttl_ms: Option<u64>) -> Self {
        Self::start_with(|config| {
            if let Some(ttl) = ttl_ms {
                config.key_cache_ttl_ms = ttl;
            }
        })
        .await
    }

    /// A fresh server with known tokens and a configuration `edit` adjusts.
    pub async fn start_with(edit: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServeConfig::new(dir.path());
        config.admin_token = Token::new(ADMIN);
        config.filter_token = Token::new(FILTER);
        let database = match postgres_url() {
            Some(admin_url) => Some(Arc::new(TestDatabase::create(&admin_url).await)),
            None => None,
        };
        config.database_url = database.as_ref().map(|d| d.url.clone());
        edit(&mut config);
        let mut server = Self::launch(config, database).await;
        server.dir = Some(dir);
        server
    }

    /// A server on `data_dir` with tokens taken from there (generated on first start). On
    /// PostgreSQL, every server on the same `data_dir` uses the same database.
    pub async fn start_in(data_dir: &Path) -> Self {
        let mut config = ServeConfig::new(data_dir);
        config.database_url = database_url_for(data_dir).await;
        Self::launch(config, None).await
    }

    async fn launch(config: ServeConfig, database: Option<Arc<TestDatabase>>) -> Self {
        let data_dir = config.data_dir.clone();
        let database_url = config.database_url.clone();
        let admin = config.admin_token.as_ref().map(|t| t.expose().to_owned());
        let filter = config.filter_token.as_ref().map(|t| t.expose().to_owned());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut server = Self {
            base,
            client,
            admin_token: String::new(),
            filter_token: String::new(),
            dir: None,
            data_dir: data_dir.clone(),
            database_url,
            _database: database,
            shutdown: Some(tx),
            task: Some(task),
        };
        server.wait_ready().await;
        // Token files exist once the server answers.
        server.admin_token = admin.unwrap_or_else(|| read_token(&data_dir, "admin-token"));
        server.filter_token = filter.unwrap_or_else(|| read_token(&data_dir, "filter-token"));
        server
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            if self.task.as_ref().unwrap().is_finished() {
                panic!("server exited during startup");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not become ready");
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// Graceful shutdown; fails the test if the server returned an error.
    pub async fn stop(mut self) {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path` of this server, for [`TestServer::answer`].
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// The client, for requests sent from other tasks (through [`answer`]).
    pub fn client(&self) -> reqwest::Client {
        self.client.clone()
    }

    /// Sends `request`; its answer is held to the API's description (`openapi_check.rs`).
    pub async fn answer(&self, request: reqwest::RequestBuilder) -> Answer {
        answer(&self.client, request).await
    }

    /// Any request; returns the status and the JSON body (`null` when empty).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let answer = self.answer(req).await;
        let value = if answer.bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&answer.bytes).unwrap_or_else(|e| {
                panic!(
                    "{path}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&answer.bytes)
                )
            })
        };
        (answer.status, value)
    }

    /// An admin API call that must answer `expected`.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: u16,
    ) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, value) = self
            .send(
                method.clone(),
                path,
                Some(&self.admin_token),
                body.as_deref(),
            )
            .await;
        assert_eq!(
            status.as_u16(),
            expected,
            "{method} {path} answered {value}"
        );
        value
    }

    pub async fn get(&self, path: &str, expected: u16) -> Value {
        self.admin(Method::GET, path, None, expected).await
    }

    pub async fn post(&self, path: &str, body: Value, expected: u16) -> Value {
        self.admin(Method::POST, path, Some(body), expected).await
    }

    pub async fn patch(&self, path: &str, body: Value, expected: u16) -> Value {
        self.admin(Method::PATCH, path, Some(body), expected).await
    }

    pub async fn delete(&self, path: &str, expected: u16) -> Value {
        self.admin(Method::DELETE, path, None, expected).await
    }

    /// The filter's lookup for a secret hash.
    pub async fn lookup(&self, hash: &str) -> (StatusCode, Value) {
        self.send(
            Method::GET,
            &format!("/v1/filter/keys/{hash}"),
            Some(&self.filter_token),
            None,
        )
        .await
    }

    /// `POST /v1/filter/usage` with `records`; expects 200 and returns the answer.
    pub async fn ingest(&self, records: &[Value]) -> Value {
        let body = json!({ "records": records }).to_string();
        let (status, value) = self
            .send(
                Method::POST,
                "/v1/filter/usage",
                Some(&self.filter_token),
                Some(&body),
            )
            .await;
        assert_eq!(status, 200, "ingest answered {value}");
        value
    }

    /// The request ids of the whole request log (admin), once it holds `count` records (retention
    /// runs in the background) or after 10 s, newest first.
    pub async fn request_ids_once(&self, count: usize) -> Vec<String> {
        let mut left = Vec::new();
        for _ in 0..200 {
            left = self.all_requests("from=2000-01-01T00:00:00Z", ADMIN).await;
            if left.len() == count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        left.iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every record of `GET /v1/requests?{query}` following the cursor, with `token`.
    pub async fn all_requests(&self, query: &str, token: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/requests?limit=500&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.send(Method::GET, &path, Some(token), None).await;
            assert_eq!(status, 200, "{path}: {page}");
            out.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
    }

    pub async fn workspace(&self, plan: &str) -> String {
        let ws = self
            .post("/v1/workspaces", json!({"name": "Acme", "plan": plan}), 201)
            .await;
        ws["id"].as_str().unwrap().to_owned()
    }

    pub async fn key(&self, workspace: &str, body: Value) -> Value {
        self.post(&format!("/v1/workspaces/{workspace}/keys"), body, 201)
            .await
    }

    pub async fn key_count(&self, workspace: &str) -> usize {
        self.get(&format!("/v1/workspaces/{workspace}/keys"), 200)
            .await["data"]
            .as_array()
            .unwrap()
            .len()
    }
}

/// An answer as received, already held to the API's description.
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub bytes: axum::body::Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Sends `request` with `client` and holds the answer to the API's description
/// (`openapi_check.rs`): every answer the suite receives is checked.
pub async fn answer(client: &reqwest::Client, request: reqwest::RequestBuilder) -> Answer {
    let request = request.build().unwrap();
    let method = request.method().clone();
    let path = match request.url().query() {
        Some(q) => format!("{}?{q}", request.url().path()),
        None => request.url().path().to_owned(),
    };
    let response = client
        .execute(request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    crate::openapi_check::check(&method, &path, status, &headers, &bytes);
    Answer {
        status,
        headers,
        bytes,
    }
}

/// The PostgreSQL server to run against (`TOLLGATE_TEST_DATABASE_URL`, e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`); `None`: SQLite in the data directory.
pub fn postgres_url() -> Option<String> {
    std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

pub fn on_postgres() -> bool {
    postgres_url().is_some()
}

/// The database of the servers started on `data_dir` (`start_in`, `tollgate serve
/// --data-dir`): created on first use and kept for the rest of the test process, so a restart
/// on the same directory finds its data. The next test run drops it (see [`TestDatabase`]).
pub async fn database_url_for(data_dir: &Path) -> Option<String> {
    static BY_DIR: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);
    let admin_url = postgres_url()?;
    if let Some(url) = BY_DIR
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .get(data_dir)
    {
        return Some(url.clone());
    }
    let database = TestDatabase::create(&admin_url).await;
    let url = database.url.clone();
    // Never dropped in this process.
    std::mem::forget(database);
    BY_DIR
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(data_dir.to_owned(), url.clone());
    Some(url)
}

/// A fresh PostgreSQL database `tollgate_test_<pid>_<random>`, dropped when this is dropped.
/// Databases whose test process is gone (a crashed or killed run, or those kept for a data
/// directory) are dropped by the first `create` of a later run.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create(admin_url: &str) -> Self {
        Self::create_in(admin_url, None).await
    }

    /// A fresh database whose tables are in `tablespace` (`None`: the server's default).
    pub async fn create_in(admin_url: &str, tablespace: Option<&str>) -> Self {
        use sqlx::{Connection, Executor};
        static SWEPT: AtomicBool = AtomicBool::new(false);
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .unwrap_or_else(|e| panic!("TOLLGATE_TEST_DATABASE_URL={admin_url}: {e}"));
        if !SWEPT.swap(true, Ordering::SeqCst) {
            let names: Vec<(String,)> = sqlx::query_as(
                "SELECT datname FROM pg_database WHERE datname LIKE 'tollgate\\_test\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for (name,) in names {
                let pid = name.split('_').nth(2).unwrap_or("");
                if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
                    let _ = conn
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            }
        }
        let name = format!(
            "tollgate_test_{}_{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let tablespace = tablespace.map_or(String::new(), |t| format!(" TABLESPACE {t}"));
        conn.execute(format!("CREATE DATABASE {name}{tablespace}").as_str())
            .await
            .unwrap();
        let _ = conn.close().await;
        let mut url = reqwest::Url::parse(admin_url).unwrap();
        url.set_path(&format!("/{name}"));
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        execute_while_dropping(&self.admin_url, statement);
    }
}

/// Runs `statement` on the PostgreSQL server at `admin_url`, from a `Drop` (errors ignored: it
/// cleans up). Drop runs inside the test's runtime: the statement gets a thread and runtime of
/// its own.
pub fn execute_while_dropping(admin_url: &str, statement: String) {
    let admin_url = admin_url.to_owned();
    let _ = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use sqlx::{Connection, Executor};
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = conn.execute(statement.as_str()).await;
                let _ = conn.close().await;
            }
        });
    })
    .join();
}

pub fn read_token(data_dir: &Path, file: &str) -> String {
    std::fs::read_to_string(data_dir.join(file))
        .unwrap()
        .trim()
        .to_owned()
}

/// Lowercase hex SHA-256, computed here rather than by the code under test.
pub fn sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The filter's lookup of `key` (`query`: `?instance=…&since_ms=…` or empty), expected found.
pub async fn lookup(srv: &TestServer, key: &Value, query: &str) -> Value {
    let (status, body) = srv
        .send(
            Method::GET,
            &format!("/v1/filter/keys/{}{query}", secret_hash(key)),
            Some(FILTER),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

pub fn secret_hash(key: &Value) -> String {
    sha256(key["secret"].as_str().unwrap())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A valid usage record for `key` (a key object from the API) at `timestamp`; `edit` adjusts it.
pub fn record(key: &Value, request_id: &str, timestamp: i64) -> Value {
    json!({
        "request_id": request_id,
        "timestamp": timestamp,
        "key_id": key["id"],
        "workspace_id": key["workspace_id"],
        "method": "GET",
        "endpoint": "/v1/candidates/{id}",
        "resource_id": "c-1",
        "response_code": 200,
        "status": "completed",
        "duration_ms": 1.5,
        "client_ip": "127.0.0.1",
        "credits": 1,
        "admitted": true,
        "instance": "i_test",
    })
}

pub fn with(mut record: Value, fields: Value) -> Value {
    for (k, v) in fields.as_object().unwrap() {
        record[k] = v.clone();
    }
    record
}

pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The start of the UTC calendar month holding `ms`, and of the next one.
pub fn month_bounds(ms: i64) -> (i64, i64) {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    let first = |y: i32, m: time::Month| {
        time::Date::from_calendar_date(y, m, 1)
            .unwrap()
            .midnight()
            .assume_utc()
            .unix_timestamp()
            * 1000
    };
    let next = if t.month() == time::Month::December {
        first(t.year() + 1, time::Month::January)
    } else {
        first(t.year(), t.month().next())
    };
    (first(t.year(), t.month()), next)
}

/// A store opened directly (no server, so no background sweep of leases): SQLite in a
/// temporary directory, or a fresh PostgreSQL database with `TOLLGATE_TEST_DATABASE_URL`. For
/// tests that set the clock themselves (`now_ms` of leases and lookups).
pub struct StoreFixture {
    pub store: Arc<dyn tollgate_control_plane::store::Store>,
    pub app: tollgate_control_plane::app::AppState,
    pub workspace: String,
    database: Option<TestDatabase>,
    _dir: TempDir,
}

impl StoreFixture {
    pub async fn open() -> Self {
        use tollgate_control_plane::app::{workspaces, AppState, Principal};
        use tollgate_control_plane::store::{PostgresStore, SqliteStore, Store};
        let dir = tempfile::tempdir().unwrap();
        let (store, database): (Arc<dyn Store>, _) = match postgres_url() {
            Some(admin_url) => {
                let db = TestDatabase::create(&admin_url).await;
                (
                    Arc::new(PostgresStore::open(&db.url).await.unwrap()),
                    Some(db),
                )
            }
            None => (
                Arc::new(
                    SqliteStore::open(&dir.path().join("tollgate.db"))
                        .await
                        .unwrap(),
                ),
                None,
            ),
        };
        let app = AppState::new(
            store.clone(),
            Token::new(ADMIN).unwrap(),
            Token::new(FILTER).unwrap(),
            5_000,
            30_000,
        );
        let workspace = workspaces::create(&app, &Principal::Admin, "Acme", "enterprise")
            .await
            .unwrap()
            .id;
        Self {
            store,
            app,
            workspace,
            database,
            _dir: dir,
        }
    }

    /// Another store on the same PostgreSQL database (a second control plane); `None` on SQLite.
    pub async fn second_store(&self) -> Option<Arc<dyn tollgate_control_plane::store::Store>> {
        let db = self.database.as_ref()?;
        let store = tollgate_control_plane::store::PostgresStore::open(&db.url)
            .await
            .unwrap();
        Some(Arc::new(store))
    }

    /// A key of the fixture's workspace from a key creation body (as the API takes it); its id
    /// and secret hash.
    pub async fn key(&self, body: Value) -> (String, tollgate_control_plane::secret::SecretHash) {
        use tollgate_control_plane::app::{keys, Principal};
        let created = keys::create(
            &self.app,
            &Principal::Admin,
            &self.workspace,
            serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
        (created.key.id, created.secret.hash())
    }

    pub async fn close(self) {
        self.store.close().await;
    }
}

/// The path of `name`, an external program the Makefile's `TEST_TOOLS` lists (so `make test`
/// installs it): `$TOLLGATE_<NAME>` when set, else the first match on `PATH`, as
/// tests/harness/tools.rs finds the integration tests' programs.
pub fn program(name: &str) -> PathBuf {
    const MAKEFILE: &str = include_str!("../../../Makefile");
    let listed = MAKEFILE
        .lines()
        .skip_while(|l| !l.starts_with("TEST_TOOLS :="))
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .any(|entry| entry.starts_with(&format!("{name}=")));
    assert!(
        listed,
        "the tests start `{name}`, which the Makefile's TEST_TOOLS does not list: add \
         `{name}=deb:<Debian package>` there"
    );
    let variable = format!("TOLLGATE_{}", name.to_ascii_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: `make tools-test` installs it"))
}
