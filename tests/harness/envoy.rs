//! Envoy under test: a bootstrap rendered from [`TEMPLATE`] for each test, run from the real
//! binary with its own ports and `--base-id`, with the filter build under test
//! ([`FilterBuild::under_test`]): the wasm filter and its usage-service singleton, or the dynamic
//! module. Over 600 lines: the bootstrap template and the process that runs it are read
//! together (every option of [`EnvoyOptions`] is a place in the template).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::filter_build::FilterBuild;
use crate::http::{free_port, percent_encode, request, try_request, Response};
use crate::logs::LogDir;
use crate::process::Proc;
use crate::tools::program;
use crate::FILTER_TOKEN;

/// Listener on `{{LISTEN_PORT}}` → optional tollgate filter (either build) → router →
/// `demo_upstream`. `tollgate_control_plane` is the cluster the filter calls (see
/// docs/protocol.md).
pub const TEMPLATE: &str = r#"# Tollgate integration test, filter build: {{FILTER_BUILD}}
{{STATS_CONFIG}}admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: {{ADMIN_PORT}} }
static_resources:
  listeners:
  - name: tollgate_ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: {{LISTEN_PORT}} }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: tollgate_ingress
{{ACCESS_LOGS}}          route_config:
            name: tollgate_routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
{{DIRECT_RESPONSES}}              - match: { prefix: "/" }
                route: { cluster: demo_upstream }
          http_filters:
{{FILTER}}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: tollgate_control_plane
    type: STATIC
    connect_timeout: 0.25s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http_protocol_options: {}
    load_assignment:
      cluster_name: tollgate_control_plane
      endpoints:
      - lb_endpoints:
{{CONTROL_PLANE_ENDPOINTS}}  - name: demo_upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: demo_upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{UPSTREAM_PORT}} }
{{USAGE_SERVICE}}"#;

/// The access log every test Envoy writes to its stdout (so into `envoy.log`).
const STDOUT_ACCESS_LOG: &str = r#"          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format:
                json_format:
                  access: "%START_TIME%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                  status: "%RESPONSE_CODE%"
                  details: "%RESPONSE_CODE_DETAILS%"
                  duration_ms: "%DURATION%"
                  upstream: "%UPSTREAM_HOST%"
"#;

/// An optional access log file (one JSON object a line) with the filter's summary in filter
/// state (`%FILTER_STATE(<key>:PLAIN)%`, the key of [`FilterBuild::filter_state_key`]:
/// `wasm.tollgate` or `tollgate`, see README) and the request id.
const FILE_ACCESS_LOG: &str = r#"          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {{ACCESS_LOG_PATH}}
              log_format:
                json_format:
                  start_ms: "%START_TIME(%s%3f)%"
                  method: "%REQ(:METHOD)%"
                  path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
                  status: "%RESPONSE_CODE%"
                  details: "%RESPONSE_CODE_DETAILS%"
                  request_id: "%REQ(X-REQUEST-ID)%"
                  xff: "%REQ(X-FORWARDED-FOR)%"
                  tollgate: "%FILTER_STATE({{FILTER_STATE_KEY}}:PLAIN)%"
"#;

/// The wasm build: proxy-wasm in Envoy's V8.
const WASM_FILTER: &str = r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: "tollgate"
                root_id: "tollgate"
                vm_config:
                  vm_id: "tollgate"
                  runtime: envoy.wasm.runtime.v8
                  code: { local: { filename: {{WASM_PATH}} } }
                  environment_variables:
                    host_env_keys: ["TOLLGATE_FILTER_TOKEN"]
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {{PLUGIN_CONFIG}}"#;

/// The native build: the dynamic module, which reads `TOLLGATE_FILTER_TOKEN` from Envoy's own
/// environment and delivers usage records itself from Envoy's main thread (no bootstrap
/// extension). `do_not_close`: Envoy never `dlclose`s the module, so its process-wide state
/// outlives any one filter configuration.
const NATIVE_FILTER: &str = r#"          - name: envoy.filters.http.dynamic_modules
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config:
                name: tollgate_native
                module: { local: { filename: {{NATIVE_PATH}} } }
                do_not_close: true
              filter_name: tollgate
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {{PLUGIN_CONFIG}}"#;

/// The wasm build's usage service: the same .wasm as a main-thread singleton (root id
/// `tollgate-usage`) that drains the workers' usage queue and posts batches to the control
/// plane.
const USAGE_SERVICE: &str = r#"bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      name: "tollgate-usage"
      root_id: "tollgate-usage"
      vm_config:
        vm_id: "tollgate"
        runtime: envoy.wasm.runtime.v8
        code: { local: { filename: {{WASM_PATH}} } }
        environment_variables:
          host_env_keys: ["TOLLGATE_FILTER_TOKEN"]
      configuration:
        "@type": type.googleapis.com/google.protobuf.StringValue
        value: {{PLUGIN_CONFIG}}
"#;

/// The plugin configuration the tests start from: every documented field at its documented
/// value, the control plane token taken from `TOLLGATE_FILTER_TOKEN`, except `ip_blocking`, which
/// is off: the tests fail authentications from 127.0.0.1 on purpose and must not lock it out.
pub fn default_plugin_config() -> Value {
    json!({
        "control_plane": {
            "cluster": "tollgate_control_plane",
            "authority": "tollgate-control-plane",
            "timeout": "1s"
        },
        "key_sources": [{"header": "x-api-key"}, {"bearer": "authorization"}],
        "cache": {"ttl": "5s", "negative_ttl": "30s", "max_keys": 8192, "max_invalid_keys": 4096},
        "failure_mode": "closed",
        "hide_key": true,
        "ip_blocking": {"enabled": false}
    })
}

#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The build of the filter to load (default: [`FilterBuild::under_test`]). Also decides
    /// the prefix of [`Envoy::filter_stat`] and the filter-state key of the access log file.
    pub filter: FilterBuild,
    /// `None`: no filter at all (listener → router), for checking the harness itself.
    pub plugin_config: Option<Value>,
    pub control_plane_port: u16,
    /// Further control planes (replicas on one PostgreSQL database): the filter's cluster
    /// balances its callouts over all of them.
    pub replica_ports: Vec<u16>,
    pub upstream_port: u16,
    pub concurrency: u32,
    /// Value of `TOLLGATE_FILTER_TOKEN` in Envoy's environment.
    pub filter_token: String,
    /// Wasm build: whether to run the usage service (`envoy.bootstrap.wasm` singleton) next to
    /// the filter (without it no usage record leaves Envoy). Ignored by the native build, which
    /// has no separate service: the module delivers records from Envoy's main thread itself
    /// (turn delivery off in either build with `usage.enabled: false`,
    /// [`StackBuilder::without_usage`](crate::StackBuilder::without_usage)).
    pub usage_service: bool,
    /// The JSON access log on stdout (`envoy.log`); off for load tests.
    pub stdout_access_log: bool,
    /// Also write the access log with the filter state to `access.log` in the log directory
    /// (`access-<name>.log` for a second Envoy); read it with [`Envoy::access_log`].
    pub access_log_file: bool,
    /// Routes answered by Envoy itself (`direct_response`) after the filter: (path prefix,
    /// status), e.g. `("/status/503", 503)`, for responses the demo upstream never gives.
    pub direct_responses: Vec<(String, u16)>,
}

impl EnvoyOptions {
    pub fn new(control_plane_port: u16, upstream_port: u16) -> EnvoyOptions {
        EnvoyOptions {
            filter: FilterBuild::under_test(),
            plugin_config: Some(default_plugin_config()),
            control_plane_port,
            replica_ports: Vec::new(),
            upstream_port,
            concurrency: 2,
            filter_token: FILTER_TOKEN.to_string(),
            usage_service: true,
            stdout_access_log: true,
            access_log_file: false,
            direct_responses: Vec::new(),
        }
    }
}

/// The shipped configs' `stats_config` (envoy/*.yaml), word for word: the filter's counters in
/// `/stats/prometheus` as `envoy_tollgate_…{filter_build, reason}` (docs/metrics.md).
pub const STATS_CONFIG: &str = r"stats_config:
  stats_tags:
  - tag_name: filter_build
    regex: '^((wasm|dynamicmodules)custom\.)tollgate\.'
  - tag_name: reason
    regex: '^(?:wasm|dynamicmodules)custom\.tollgate\.requests\.denied(\.(\w+))$'
";

/// Renders the bootstrap for the given ports (without an access log file).
pub fn render(options: &EnvoyOptions, listen_port: u16, admin_port: u16) -> String {
    render_with_access_log(options, listen_port, admin_port, None)
}

/// Renders the bootstrap; `access_log` is the file for [`EnvoyOptions::access_log_file`].
pub fn render_with_access_log(
    options: &EnvoyOptions,
    listen_port: u16,
    admin_port: u16,
    access_log: Option<&Path>,
) -> String {
    let (filter, usage_service) = match &options.plugin_config {
        None => (String::new(), String::new()),
        Some(config) => filter_yaml(
            options.filter,
            options.filter.artifact(),
            config,
            options.usage_service,
        ),
    };
    let mut access_logs = String::new();
    if options.stdout_access_log {
        access_logs.push_str(STDOUT_ACCESS_LOG);
    }
    if let (true, Some(path)) = (options.access_log_file, access_log) {
        let quoted = Value::String(path.display().to_string()).to_string();
        access_logs.push_str(
            &FILE_ACCESS_LOG
                .replace("{{ACCESS_LOG_PATH}}", &quoted)
                .replace("{{FILTER_STATE_KEY}}", options.filter.filter_state_key()),
        );
    }
    if !access_logs.is_empty() {
        access_logs.insert_str(0, "          access_log:\n");
    }
    let direct_responses: String = options
        .direct_responses
        .iter()
        .map(|(prefix, status)| {
            let prefix = Value::String(prefix.clone()).to_string();
            format!(
                "              - match: {{ prefix: {prefix} }}\n                \
                 direct_response: {{ status: {status}, body: {{ inline_string: \"direct {status}\" }} }}\n"
            )
        })
        .collect();
    TEMPLATE
        .replace("{{STATS_CONFIG}}", STATS_CONFIG)
        .replace("{{ACCESS_LOGS}}", &access_logs)
        .replace("{{DIRECT_RESPONSES}}", &direct_responses)
        .replace("{{FILTER_BUILD}}", options.filter.name())
        .replace("{{FILTER}}", &filter)
        .replace("{{USAGE_SERVICE}}", &usage_service)
        .replace("{{ADMIN_PORT}}", &admin_port.to_string())
        .replace("{{LISTEN_PORT}}", &listen_port.to_string())
        .replace(
            "{{CONTROL_PLANE_ENDPOINTS}}",
            &control_plane_endpoints(options),
        )
        .replace("{{UPSTREAM_PORT}}", &options.upstream_port.to_string())
}

/// The filter's entry in `http_filters` and the bootstrap extensions it needs (empty for the
/// native build, and for wasm without `usage_service`), for `build` loaded from `artifact` with
/// the plugin configuration `config`. Independent of the environment and of the files, so the
/// harness checks render both builds.
pub fn filter_yaml(
    build: FilterBuild,
    artifact: &Path,
    config: &Value,
    usage_service: bool,
) -> (String, String) {
    // A JSON string literal is a valid YAML double-quoted scalar.
    let as_yaml_string = Value::String(config.to_string()).to_string();
    let artifact = Value::String(artifact.display().to_string()).to_string();
    let fill = |template: &str| {
        template
            .replace("{{WASM_PATH}}", &artifact)
            .replace("{{NATIVE_PATH}}", &artifact)
            .replace("{{PLUGIN_CONFIG}}", &as_yaml_string)
    };
    match build {
        FilterBuild::Wasm => {
            let usage_service = if usage_service {
                fill(USAGE_SERVICE)
            } else {
                String::new()
            };
            (fill(WASM_FILTER), usage_service)
        }
        // The module is the usage service as well: nothing to add to the bootstrap.
        FilterBuild::Native => (fill(NATIVE_FILTER), String::new()),
    }
}

/// The control plane's `lb_endpoints`: the first one and its replicas.
fn control_plane_endpoints(options: &EnvoyOptions) -> String {
    std::iter::once(options.control_plane_port)
        .chain(options.replica_ports.iter().copied())
        .map(|port| {
            format!(
                "        - endpoint:\n            address:\n              \
                 socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n"
            )
        })
        .collect()
}

/// A `--base-id` no other Envoy of this machine's test runs uses at the same time.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
    10_000 + (std::process::id() % 20_000) * 100 + n
}

pub struct Envoy {
    proc: Proc,
    /// The filter build this Envoy loaded ([`EnvoyOptions::filter`]).
    pub filter: FilterBuild,
    pub listen_port: u16,
    pub admin_port: u16,
    pub base_id: u32,
    pub config_path: PathBuf,
    /// The access log file, when [`EnvoyOptions::access_log_file`] is set.
    pub access_log_path: Option<PathBuf>,
}

impl Envoy {
    /// Starts Envoy without waiting for it to be ready.
    pub fn spawn(options: &EnvoyOptions, logs: &LogDir) -> Envoy {
        Envoy::spawn_named(options, logs, "envoy")
    }

    /// Like [`spawn`](Self::spawn), with its files named after `name` (`<name>.log`,
    /// `<name>.yaml`, `<name>-access.log`), for a second Envoy next to the first.
    pub fn spawn_named(options: &EnvoyOptions, logs: &LogDir, name: &str) -> Envoy {
        let listen_port = free_port();
        let admin_port = free_port();
        let base_id = unique_base_id();
        let config_path = logs.path().join(format!("{name}.yaml"));
        let access_log_path = options
            .access_log_file
            .then(|| logs.path().join(format!("{name}-access.log")));
        std::fs::write(
            &config_path,
            render_with_access_log(options, listen_port, admin_port, access_log_path.as_deref()),
        )
        .expect("write envoy config");
        let mut command = Command::new(program("envoy"));
        command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .args(["--log-level", "info"])
            .args(["--drain-time-s", "1"])
            // The access log file reaches the disk within 200 ms (default: 10 s).
            .args(["--file-flush-interval-msec", "200"])
            .env("TOLLGATE_FILTER_TOKEN", &options.filter_token);
        let proc = Proc::spawn(name, &mut command, &logs.file(name));
        Envoy {
            proc,
            filter: options.filter,
            listen_port,
            admin_port,
            base_id,
            config_path,
            access_log_path,
        }
    }

    /// Envoy's own process id (the real binary is started, never a shim).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until the admin endpoint says `/ready` (listeners are up). Errors if Envoy exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("http://127.0.0.1:{}/ready", self.admin_port);
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(format!("Envoy exited during startup ({status})"));
            }
            if let Ok(r) = try_request("GET", &url, &[], None) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("Envoy not ready after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.exited()
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn stop(&mut self) {
        self.proc.stop();
        // Hot-restart shared memory outlives Envoy; it is named after the base id.
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(format!(
            "envoy_shared_memory_{}",
            u64::from(self.base_id) * 10
        )));
    }

    /// `http://127.0.0.1:<listener>` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen_port)
    }

    /// A request through the listener.
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(method, &self.url(path), headers, None)
    }

    /// An admin API `GET`.
    pub fn admin_get(&self, path_and_query: &str) -> Response {
        request(
            "GET",
            &format!("http://127.0.0.1:{}{path_and_query}", self.admin_port),
            &[],
            None,
        )
    }

    /// Value of Envoy's counter or gauge `name` (0 when Envoy has not created it), e.g.
    /// `cluster.tollgate_control_plane.upstream_rq_total`. The filter's own metrics:
    /// [`filter_stat`](Self::filter_stat) (this panics for a name with a build's prefix).
    pub fn stat(&self, name: &str) -> u64 {
        refuse_build_prefix(name);
        self.raw_stat(name)
    }

    /// The filter's metric `tollgate.<name>`, e.g. `filter_stat("usage.dropped")`: in `/stats`
    /// `wasmcustom.tollgate.usage.dropped` (wasm) or `dynamicmodulescustom.tollgate.usage.dropped`
    /// (native). 0 when the filter has not reported it yet.
    pub fn filter_stat(&self, name: &str) -> u64 {
        self.raw_stat(&self.filter.stat_name(name))
    }

    /// Every metric of the filter whose name (after `tollgate.`) starts with `prefix`, e.g.
    /// `filter_stats_with_prefix("leases")`, named without the build's prefix
    /// (`leases.granted`, not `wasmcustom.tollgate.leases.granted`).
    pub fn filter_stats_with_prefix(&self, prefix: &str) -> Vec<(String, u64)> {
        let full = self.filter.stat_name(prefix);
        let strip = self.filter.stats_prefix();
        self.raw_stats_with_prefix(&full)
            .into_iter()
            .map(|(name, value)| (name.strip_prefix(strip).unwrap_or(&name).to_string(), value))
            .collect()
    }

    /// [`settled_stat`](Self::settled_stat) of the filter's metric `name` (as
    /// [`filter_stat`](Self::filter_stat) names it).
    pub fn settled_filter_stat(&self, name: &str, quiet: Duration, timeout: Duration) -> u64 {
        self.settle(&self.filter.stat_name(name), quiet, timeout)
    }

    fn raw_stat(&self, name: &str) -> u64 {
        let filter = format!("^{}$", name.replace('.', "\\."));
        let response = self.admin_get(&format!("/stats?filter={}", percent_encode(&filter)));
        assert_eq!(response.status, 200, "stats: {response:?}");
        response
            .body
            .lines()
            .filter_map(|line| line.split_once(": "))
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Every counter and gauge of Envoy whose name starts with `prefix`, e.g.
    /// `cluster.tollgate_control_plane.`. The filter's own: [`filter_stats_with_prefix`]
    /// (this panics for a prefix with a build's prefix).
    ///
    /// [`filter_stats_with_prefix`]: Self::filter_stats_with_prefix
    pub fn stats_with_prefix(&self, prefix: &str) -> Vec<(String, u64)> {
        refuse_build_prefix(prefix);
        self.raw_stats_with_prefix(prefix)
    }

    fn raw_stats_with_prefix(&self, prefix: &str) -> Vec<(String, u64)> {
        let filter = format!("^{}", prefix.replace('.', "\\."));
        let response = self.admin_get(&format!("/stats?filter={}", percent_encode(&filter)));
        assert_eq!(response.status, 200, "stats: {response:?}");
        response
            .body
            .lines()
            .filter_map(|line| line.split_once(": "))
            .filter_map(|(n, v)| Some((n.to_string(), v.trim().parse().ok()?)))
            .collect()
    }

    /// Waits until Envoy's counter `name` stops moving and returns its value: unchanged over
    /// `quiet`, or the last value after `timeout`. The filter's own metrics (it flushes them on
    /// a 100–250 ms tick): [`settled_filter_stat`](Self::settled_filter_stat).
    pub fn settled_stat(&self, name: &str, quiet: Duration, timeout: Duration) -> u64 {
        refuse_build_prefix(name);
        self.settle(name, quiet, timeout)
    }

    fn settle(&self, name: &str, quiet: Duration, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut last = self.raw_stat(name);
        let mut since = Instant::now();
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.raw_stat(name);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }

    /// Admin `/memory` (tcmalloc): `allocated`, `heap_size`, ... as numbers.
    pub fn memory(&self) -> Memory {
        let response = self.admin_get("/memory");
        assert_eq!(response.status, 200, "memory: {response:?}");
        let v = response.json();
        let field = |name: &str| -> u64 {
            match &v[name] {
                Value::String(s) => s.parse().unwrap_or(0),
                Value::Number(n) => n.as_u64().unwrap_or(0),
                _ => 0,
            }
        };
        Memory {
            allocated: field("allocated"),
            heap_size: field("heap_size"),
            rss: rss_bytes(self.pid()),
        }
    }

    /// The entries of the access log file written so far (Envoy flushes it every 200 ms).
    pub fn access_log(&self) -> Vec<Value> {
        let path = self
            .access_log_path
            .as_ref()
            .expect("start Envoy with access_log_file to read its access log");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Requests Envoy has sent to the control plane (lookups), from Envoy's own cluster stats.
    pub fn control_plane_requests(&self) -> u64 {
        self.stat("cluster.tollgate_control_plane.upstream_rq_total")
    }
}

/// Envoy's memory: tcmalloc's view from the admin API (the C++ heap: shared data, connections,
/// stats) and the resident set of the process. The wasm build's per-worker state lives in the V8
/// VMs' linear memories, outside tcmalloc (only in the resident set); the native module
/// allocates with `malloc`, which resolves to the tcmalloc Envoy exports, so its state is in
/// both.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub allocated: u64,
    pub heap_size: u64,
    /// `VmRSS` from `/proc/<pid>/status`, 0 if unreadable.
    pub rss: u64,
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// Panics when a test reads one build's filter metric by its full name: under the other build it
/// would silently read 0.
fn refuse_build_prefix(name: &str) {
    for prefix in FilterBuild::ALL.map(FilterBuild::stats_prefix) {
        let namespace = prefix.trim_end_matches("tollgate.");
        if name.starts_with(namespace) {
            panic!(
                "stat {name:?} names one filter build's metric: use filter_stat / \
                 settled_filter_stat / filter_stats_with_prefix with the name after \
                 {prefix:?}, which the harness prefixes for the build under test"
            );
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}
