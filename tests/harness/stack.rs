//! A complete test deployment: control plane + demo upstream + Envoy with the filter, each on
//! free ports, with a fresh data directory. Dropping the stack stops every process; if the test is
//! failing at that moment, the logs are printed and kept under `tests/artifacts/`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admin::Admin;
use crate::envoy::{default_plugin_config, Envoy, EnvoyOptions};
use crate::http::{free_port, try_request, Response};
use crate::logs::LogDir;
use crate::paths::tollgate_binary;
use crate::postgres::{Backend, Database};
use crate::process::{signal, Proc};
use crate::{ADMIN_TOKEN, FILTER_TOKEN};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub struct StackBuilder {
    plugin_config: Option<Value>,
    with_envoy: bool,
    concurrency: u32,
    envoys: usize,
    replicas: usize,
    control_plane_args: Vec<String>,
    backend: Backend,
    stdout_access_log: bool,
    access_log_file: bool,
    direct_responses: Vec<(String, u16)>,
}

impl StackBuilder {
    /// The control plane's database: SQLite in the data directory (default) or a fresh
    /// PostgreSQL database of its own ([`Backend::postgres`]), dropped with the stack.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Replaces the whole plugin configuration (`None` = Envoy without the filter).
    pub fn plugin_config(mut self, config: Option<Value>) -> Self {
        self.plugin_config = config;
        self
    }

    /// Sets one field of the plugin configuration by JSON pointer, e.g. `("/cache/ttl", "2s")`.
    pub fn set(mut self, pointer: &str, value: impl Into<Value>) -> Self {
        let config = self
            .plugin_config
            .as_mut()
            .expect("set() needs a plugin configuration");
        set_pointer(config, pointer, value.into());
        self
    }

    /// `cache.ttl`.
    pub fn cache_ttl(self, ttl: &str) -> Self {
        self.set("/cache/ttl", ttl)
    }

    /// `failure_mode` (`closed` or `open`).
    pub fn failure_mode(self, mode: &str) -> Self {
        self.set("/failure_mode", mode)
    }

    /// `usage.enabled: false`: no usage records, so the only requests to the control plane
    /// cluster are key lookups (for tests that count them with Envoy's cluster stats).
    pub fn without_usage(self) -> Self {
        self.set("/usage/enabled", false)
    }

    /// Envoy without the filter (either build): listener → router → upstream (harness checks).
    pub fn without_filter(self) -> Self {
        self.plugin_config(None)
    }

    /// Only the control plane and the upstream (admin API tests).
    pub fn without_envoy(mut self) -> Self {
        self.with_envoy = false;
        self
    }

    /// `--concurrency` of Envoy (default 2).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Runs `n` Envoys (default 1), each with its own ports, `--base-id` and instance id, all
    /// with the same configuration and the same control plane and upstream.
    pub fn envoys(mut self, n: usize) -> Self {
        assert!(n >= 1, "at least one Envoy");
        self.envoys = n;
        self
    }

    /// `tollgate serve --key-cache-ttl-ms`: the longest the control plane lets the filter cache
    /// a lookup (its default is 5 s whatever `cache.ttl` says).
    /// `n` more control planes on the same PostgreSQL database (replicas); each Envoy's
    /// control-plane cluster balances over all of them.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    pub fn key_cache_ttl_ms(mut self, ms: u64) -> Self {
        self.control_plane_args
            .extend(["--key-cache-ttl-ms".to_string(), ms.to_string()]);
        self
    }

    /// Writes the access log with the filter state to a file ([`Envoy::access_log`]).
    pub fn access_log_file(mut self) -> Self {
        self.access_log_file = true;
        self
    }

    /// No access log on Envoy's stdout (load tests: keeps `envoy.log` small and Envoy fast).
    pub fn without_stdout_access_log(mut self) -> Self {
        self.stdout_access_log = false;
        self
    }

    /// Envoy answers requests whose path starts with `prefix` itself with `status` (after the
    /// filter, instead of the upstream).
    pub fn direct_response(mut self, prefix: &str, status: u16) -> Self {
        self.direct_responses.push((prefix.to_string(), status));
        self
    }

    /// Starts everything and waits until each process is ready; panics (with logs) otherwise.
    pub fn start(self) -> Stack {
        let mut stack = self.start_unchecked();
        let envoys = stack.envoy.iter_mut().chain(stack.more_envoys.iter_mut());
        for envoy in envoys {
            if let Err(e) = envoy.wait_ready(STARTUP_TIMEOUT) {
                panic!("{e}");
            }
        }
        stack
    }

    /// Like [`start`](Self::start), but does not wait for Envoy: for tests of startup failures.
    pub fn start_unchecked(self) -> Stack {
        let logs = LogDir::new();
        let data = tempfile::Builder::new()
            .prefix("tollgate-it-data-")
            .tempdir()
            .expect("create a temporary data directory");
        let database = match &self.backend {
            Backend::Sqlite => None,
            Backend::Postgres { admin_url } => Some(Database::create(admin_url)),
        };
        let mut stack = Stack {
            envoy: None,
            envoy_options: None,
            more_envoys: Vec::new(),
            control_plane_args: self.control_plane_args,
            control_plane: None,
            replicas: Vec::new(),
            upstream: None,
            control_plane_port: free_port(),
            upstream_port: free_port(),
            data,
            database,
            logs,
        };
        stack.start_control_plane();
        assert!(
            self.replicas == 0 || stack.database.is_some(),
            "control-plane replicas share a PostgreSQL database"
        );
        for n in 1..=self.replicas {
            let port = free_port();
            let name = format!("control-plane-{}", n + 1);
            let proc = stack.spawn_control_plane(&name, port);
            stack.replicas.push((port, proc));
        }
        stack.start_upstream();
        if self.with_envoy {
            let mut options = EnvoyOptions::new(stack.control_plane_port, stack.upstream_port);
            options.replica_ports = stack.replicas.iter().map(|(port, _)| *port).collect();
            options.plugin_config = self.plugin_config;
            options.concurrency = self.concurrency;
            options.stdout_access_log = self.stdout_access_log;
            options.access_log_file = self.access_log_file;
            options.direct_responses = self.direct_responses;
            stack.envoy = Some(Envoy::spawn(&options, &stack.logs));
            stack.envoy_options = Some(options.clone());
            for n in 2..=self.envoys {
                let name = format!("envoy-{n}");
                stack
                    .more_envoys
                    .push(Envoy::spawn_named(&options, &stack.logs, &name));
            }
        }
        stack
    }
}

pub struct Stack {
    pub envoy: Option<Envoy>,
    /// What the first Envoy was started with (to start it again).
    envoy_options: Option<EnvoyOptions>,
    /// The second and further Envoys of [`StackBuilder::envoys`].
    pub more_envoys: Vec<Envoy>,
    control_plane_args: Vec<String>,
    control_plane: Option<Proc>,
    /// Further control planes on the same database: (port, process).
    replicas: Vec<(u16, Proc)>,
    upstream: Option<Proc>,
    pub control_plane_port: u16,
    pub upstream_port: u16,
    data: tempfile::TempDir,
    /// The control plane's PostgreSQL database (`None`: SQLite in `data`). Dropped after the
    /// processes are stopped (`Drop for Stack` runs before the fields are dropped).
    database: Option<Database>,
    logs: LogDir,
}

impl Stack {
    /// Defaults: the filter with [`default_plugin_config`], Envoy with 2 workers.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            plugin_config: Some(default_plugin_config()),
            with_envoy: true,
            concurrency: 2,
            envoys: 1,
            replicas: 0,
            control_plane_args: Vec::new(),
            backend: Backend::Sqlite,
            stdout_access_log: true,
            access_log_file: false,
            direct_responses: Vec::new(),
        }
    }

    /// A stack with the default configuration.
    pub fn start() -> Stack {
        Stack::builder().start()
    }

    pub fn admin(&self) -> Admin {
        Admin::new(self.control_plane_url(), ADMIN_TOKEN)
    }

    pub fn control_plane_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control_plane_port)
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// `postgres://…` of the control plane's database; `None` on SQLite.
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url.as_str())
    }

    pub fn envoy(&self) -> &Envoy {
        self.envoy.as_ref().expect("this stack has no Envoy")
    }

    pub fn envoy_mut(&mut self) -> &mut Envoy {
        self.envoy.as_mut().expect("this stack has no Envoy")
    }

    /// Every Envoy of the stack, the first one first.
    pub fn envoys(&self) -> Vec<&Envoy> {
        self.envoy.iter().chain(self.more_envoys.iter()).collect()
    }

    /// `GET path` through Envoy on a new connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.envoy().request("GET", path, headers)
    }

    /// `method path` through Envoy on a new connection.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        self.envoy().request(method, path, headers)
    }

    /// `GET path` with `x-api-key: key`.
    pub fn get_with_key(&self, path: &str, key: &str) -> Response {
        self.get(path, &[("x-api-key", key)])
    }

    /// Starts (or restarts) the control plane on its port, data directory and database, and
    /// waits for `/healthz`.
    pub fn start_control_plane(&mut self) {
        if let Some(mut old) = self.control_plane.take() {
            old.stop();
        }
        let proc = self.spawn_control_plane("control-plane", self.control_plane_port);
        self.control_plane = Some(proc);
    }

    /// A control plane named `name` on `port` (the stack's data directory and database), ready.
    fn spawn_control_plane(&self, name: &str, port: u16) -> Proc {
        let mut command = Command::new(tollgate_binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.control_plane_args)
            // Only the stack's own database, never one from the environment.
            .env_remove("TOLLGATE_DATABASE_URL")
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TOLLGATE_FILTER_TOKEN", FILTER_TOKEN)
            .env("NO_COLOR", "1");
        if let Some(database) = &self.database {
            command.arg("--database-url").arg(&database.url);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let mut proc = Proc::spawn(name, &mut command, &self.logs.file(name));
        let url = format!("http://127.0.0.1:{port}/healthz");
        if let Err(e) = wait_http_ok(&mut proc, &url) {
            panic!("{name}: {e}");
        }
        proc
    }

    /// Stops the control plane gracefully (SIGTERM: it drains requests and exits). Start it
    /// again on the same port and data directory with [`start_control_plane`](Self::start_control_plane).
    pub fn stop_control_plane(&mut self) {
        if let Some(mut proc) = self.control_plane.take() {
            proc.stop();
        }
    }

    /// Freezes the control plane (SIGSTOP): connections are accepted by the kernel and wait, as
    /// behind a hung process. [`resume_control_plane`](Self::resume_control_plane) thaws it.
    pub fn pause_control_plane(&self) {
        self.signal_control_plane(libc::SIGSTOP);
    }

    pub fn resume_control_plane(&self) {
        self.signal_control_plane(libc::SIGCONT);
    }

    fn signal_control_plane(&self, sig: libc::c_int) {
        let pid = self
            .control_plane
            .as_ref()
            .map(Proc::pid)
            .expect("the control plane is not running");
        assert!(
            signal(pid, sig),
            "signal {sig} to the control plane ({pid}) failed"
        );
    }

    /// Stops the first Envoy (SIGTERM) and starts a new one with the same options (new ports,
    /// an empty memory: what its filter held is gone), ready.
    pub fn restart_envoy(&mut self) {
        let options = self
            .envoy_options
            .clone()
            .expect("the stack was started with an Envoy");
        if let Some(mut old) = self.envoy.take() {
            old.stop();
        }
        let mut envoy = Envoy::spawn(&options, &self.logs);
        if let Err(e) = envoy.wait_ready(STARTUP_TIMEOUT) {
            panic!("restarted Envoy: {e}");
        }
        self.envoy = Some(envoy);
    }

    /// The running control plane's process id.
    pub fn control_plane_pid(&self) -> u32 {
        self.control_plane
            .as_ref()
            .map(Proc::pid)
            .expect("the control plane is not running")
    }

    /// Kills the control plane (SIGKILL, like a crash). Its port then refuses connections.
    pub fn kill_control_plane(&mut self) {
        if let Some(mut proc) = self.control_plane.take() {
            proc.kill();
        }
    }

    fn start_upstream(&mut self) {
        let mut command = Command::new(tollgate_binary());
        command
            .arg("demo-upstream")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.upstream_port));
        let mut proc = Proc::spawn("upstream", &mut command, &self.logs.file("upstream"));
        let url = format!("http://127.0.0.1:{}/", self.upstream_port);
        let ready = wait_http_ok(&mut proc, &url);
        self.upstream = Some(proc);
        if let Err(e) = ready {
            panic!("demo upstream: {e}");
        }
    }

    /// Prints and keeps the logs now (they are also dumped automatically if the test fails).
    pub fn dump_logs(&self) {
        self.logs.dump();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(mut envoy) = self.envoy.take() {
            envoy.stop();
        }
        for envoy in &mut self.more_envoys {
            envoy.stop();
        }
        for proc in [self.control_plane.as_mut(), self.upstream.as_mut()]
            .into_iter()
            .flatten()
            .chain(self.replicas.iter_mut().map(|(_, proc)| proc))
        {
            proc.stop();
        }
        if std::thread::panicking() {
            self.logs.dump();
        }
    }
}

/// Polls `url` until it answers 2xx; errors if `proc` exits or after the startup timeout.
fn wait_http_ok(proc: &mut Proc, url: &str) -> Result<(), String> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = proc.exited() {
            return Err(format!("{} exited during startup ({status})", proc.name()));
        }
        match try_request("GET", url, &[], None) {
            Ok(r) if (200..300).contains(&r.status) => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(format!("{url} not ready after {STARTUP_TIMEOUT:?}"))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) {
    let mut node = root;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        let map = node.as_object_mut().expect("object");
        if i == parts.len() - 1 {
            map.insert((*part).to_string(), value);
            return;
        }
        node = map
            .entry((*part).to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// Polls `check` every `every` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_pointer_creates_and_replaces() {
        let mut v = json!({"cache": {"ttl": "5s"}});
        set_pointer(&mut v, "/cache/ttl", json!("2s"));
        set_pointer(&mut v, "/control_plane/timeout", json!("250ms"));
        set_pointer(&mut v, "/bogus", json!(1));
        assert_eq!(
            v,
            json!({"cache": {"ttl": "2s"}, "control_plane": {"timeout": "250ms"}, "bogus": 1})
        );
    }
}
