//! Envoy under test: a bootstrap rendered from [`TEMPLATE`] for each test, run from the real
//! binary with its own ports and `--base-id`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{free_port, request, try_request, Response};
use crate::logs::LogDir;
use crate::paths::{envoy_binary, wasm_file};
use crate::process::Proc;
use crate::FILTER_TOKEN;

/// Listener on `{{LISTEN_PORT}}` → optional tollgate wasm filter → router → `demo_upstream`.
/// `tollgate_control_plane` is the cluster the filter calls (see docs/protocol.md).
pub const TEMPLATE: &str = r#"
admin:
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
          access_log:
          - name: envoy.access_loggers.stdout
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
          route_config:
            name: tollgate_routes
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: demo_upstream }
          http_filters:
{{WASM_FILTER}}
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
        - endpoint:
            address:
              socket_address: { address: 127.0.0.1, port_value: {{CONTROL_PLANE_PORT}} }
  - name: demo_upstream
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

/// The usage service: the same .wasm as a main-thread singleton (root id `tollgate-usage`) that
/// drains the workers' usage queue and posts batches to the control plane.
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
    /// `None`: no wasm filter at all (listener → router), for checking the harness itself.
    pub plugin_config: Option<Value>,
    pub control_plane_port: u16,
    pub upstream_port: u16,
    pub concurrency: u32,
    /// Value of `TOLLGATE_FILTER_TOKEN` in Envoy's environment.
    pub filter_token: String,
    /// Whether to run the usage service (`envoy.bootstrap.wasm` singleton) next to the filter.
    pub usage_service: bool,
}

impl EnvoyOptions {
    pub fn new(control_plane_port: u16, upstream_port: u16) -> EnvoyOptions {
        EnvoyOptions {
            plugin_config: Some(default_plugin_config()),
            control_plane_port,
            upstream_port,
            concurrency: 2,
            filter_token: FILTER_TOKEN.to_string(),
            usage_service: true,
        }
    }
}

/// Renders the bootstrap for the given ports.
pub fn render(options: &EnvoyOptions, listen_port: u16, admin_port: u16) -> String {
    let (filter, usage_service) = match &options.plugin_config {
        None => (String::new(), String::new()),
        Some(config) => {
            // A JSON string literal is a valid YAML double-quoted scalar.
            let as_yaml_string = Value::String(config.to_string()).to_string();
            let wasm = wasm_file().display().to_string();
            let fill = |template: &str| {
                template
                    .replace("{{WASM_PATH}}", &wasm)
                    .replace("{{PLUGIN_CONFIG}}", &as_yaml_string)
            };
            let usage_service = if options.usage_service {
                fill(USAGE_SERVICE)
            } else {
                String::new()
            };
            (fill(WASM_FILTER), usage_service)
        }
    };
    TEMPLATE
        .replace("{{WASM_FILTER}}", &filter)
        .replace("{{USAGE_SERVICE}}", &usage_service)
        .replace("{{ADMIN_PORT}}", &admin_port.to_string())
        .replace("{{LISTEN_PORT}}", &listen_port.to_string())
        .replace(
            "{{CONTROL_PLANE_PORT}}",
            &options.control_plane_port.to_string(),
        )
        .replace("{{UPSTREAM_PORT}}", &options.upstream_port.to_string())
}

/// A `--base-id` no other Envoy of this machine's test runs uses at the same time.
fn unique_base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 100;
    10_000 + (std::process::id() % 20_000) * 100 + n
}

pub struct Envoy {
    proc: Proc,
    pub listen_port: u16,
    pub admin_port: u16,
    pub base_id: u32,
    pub config_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy without waiting for it to be ready.
    pub fn spawn(options: &EnvoyOptions, logs: &LogDir) -> Envoy {
        let listen_port = free_port();
        let admin_port = free_port();
        let base_id = unique_base_id();
        let config_path = logs.path().join("envoy.yaml");
        std::fs::write(&config_path, render(options, listen_port, admin_port))
            .expect("write envoy config");
        let mut command = Command::new(envoy_binary());
        command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", &options.concurrency.to_string()])
            .args(["--base-id", &base_id.to_string()])
            .args(["--log-level", "info"])
            .args(["--drain-time-s", "1"])
            .env("TOLLGATE_FILTER_TOKEN", &options.filter_token);
        let proc = Proc::spawn("envoy", &mut command, &logs.file("envoy"));
        Envoy {
            proc,
            listen_port,
            admin_port,
            base_id,
            config_path,
        }
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

    /// Value of counter or gauge `name` (0 when Envoy has not created it).
    pub fn stat(&self, name: &str) -> u64 {
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

    /// Requests Envoy has sent to the control plane (lookups), from Envoy's own cluster stats.
    pub fn control_plane_requests(&self) -> u64 {
        self.stat("cluster.tollgate_control_plane.upstream_rq_total")
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
