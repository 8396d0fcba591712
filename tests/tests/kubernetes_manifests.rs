//! The Kubernetes manifests of envoy/istio and envoy/envoy-gateway, checked by their structure:
//! no registry we can reach ships the published CRD schemas as JSON Schema (the npm package
//! `@kubernetes-models/istio` holds Istio's only compiled into JavaScript validators, and none was
//! found for Envoy Gateway's), so this test asserts what those CRDs require and what Tollgate
//! needs of them:
//!
//! - each resource's apiVersion and kind, its required fields and enum values, and no `spec`
//!   field the CRD does not have (a typo would be dropped or refused by the API server);
//! - the plugin configuration passes the filter's own parser (`FilterConfig::parse`, as the
//!   filter runs it in Envoy) and is envoy/envoy.yaml's but for how the control plane is reached;
//! - the cluster the filter calls is the one the manifests make (Istio: the ServiceEntry's
//!   `outbound|<port>||<host>`; Envoy Gateway: the EnvoyPatchPolicy's cluster);
//! - the image is `make oci`'s (`tollgate-filter`, tagged with the crate's version), the same in
//!   both, with the filter's root id and token variable.
//!
//! Each check returns the problems it finds; the tests below also feed it broken copies, so a
//! check that stopped looking would fail.

use serde::Deserialize;
use serde_json::Value;
use tollgate_core::config::{FilterConfig, FILTER_TOKEN_ENV};
use tollgate_integration_tests::paths::repo_root;

/// The filter's root id (envoy/envoy.yaml's `root_id` of the HTTP filter).
const ROOT_ID: &str = "tollgate";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The YAML documents of `text` as JSON values.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("YAML that is JSON"))
        .filter(|v| !v.is_null())
        .collect()
}

/// envoy/envoy.yaml's plugin configuration (the HTTP filter's `configuration.value`).
fn envoy_yaml_plugin_config() -> Value {
    let envoy = documents(&read("envoy/envoy.yaml")).remove(0);
    let filters = envoy
        .pointer(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array)
        .expect("envoy.yaml's http_filters");
    let wasm = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .expect("envoy.yaml's wasm filter");
    assert_eq!(wasm["typed_config"]["config"]["root_id"], ROOT_ID);
    let value = wasm["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("configuration.value");
    serde_json::from_str(value).expect("envoy.yaml's plugin configuration is JSON")
}

/// The image `make oci` writes, as a registry path's last part and tag: the Makefile's
/// `OCI_DIR` name and the crate's version (`OCI_TAG`'s default).
fn oci_image_name_and_tag() -> (String, String) {
    let makefile = read("Makefile");
    let dir = makefile
        .lines()
        .find_map(|l| l.strip_prefix("OCI_DIR := "))
        .expect("the Makefile's OCI_DIR");
    let name = dir.rsplit('/').next().unwrap().to_string();
    let cargo = read("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("the crate's version");
    (name, version.to_string())
}

/// Problems, each a line naming the file and what is wrong.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }

    fn string<'a>(&mut self, doc: &'a Value, pointer: &str, what: &str) -> &'a str {
        match doc.pointer(pointer).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s,
            _ => {
                self.0
                    .push(format!("{what}: {pointer} is required (a string)"));
                ""
            }
        }
    }

    fn one_of(&mut self, doc: &Value, pointer: &str, allowed: &[&str], what: &str) {
        if let Some(value) = doc.pointer(pointer) {
            self.check(allowed.iter().any(|a| value == a), || {
                format!("{what}: {pointer} is {value}, not one of {allowed:?}")
            });
        }
    }

    /// `known`: the CRD's field names, separated by spaces.
    fn known_fields(&mut self, object: &Value, known: &str, what: &str) {
        let known: Vec<&str> = known.split_whitespace().collect();
        if let Some(map) = object.as_object() {
            for key in map.keys() {
                self.check(known.contains(&key.as_str()), || {
                    format!("{what}: unknown field {key:?} (the CRD has {known:?})")
                });
            }
        } else {
            self.0.push(format!("{what}: not an object"));
        }
    }

    /// The plugin configuration: the filter's parser accepts it, its cluster and authority are
    /// `cluster` and `authority`, and the rest is envoy/envoy.yaml's.
    fn plugin_config(&mut self, config: &Value, cluster: &str, authority: &str, what: &str) {
        let bytes = serde_json::to_vec(config).unwrap();
        match FilterConfig::parse(&bytes, |name| {
            (name == FILTER_TOKEN_ENV).then(|| "from-the-proxy-environment".to_string())
        }) {
            Err(e) => self.0.push(format!("{what}: the filter refuses it: {e}")),
            Ok(parsed) => {
                let (ours, host) = (parsed.control_plane.cluster, parsed.control_plane.authority);
                self.check(ours == cluster, || {
                    format!(
                        "{what}: control_plane.cluster {ours:?}; the manifests make {cluster:?}"
                    )
                });
                self.check(host == authority, || {
                    format!("{what}: control_plane.authority {host:?}, not the host {authority:?}")
                });
            }
        }
        self.check(config["control_plane"].get("token").is_none(), || {
            format!("{what}: control_plane.token in a manifest; pass {FILTER_TOKEN_ENV} instead")
        });
        let mut ours = config.clone();
        let mut shipped = envoy_yaml_plugin_config();
        for c in [&mut ours, &mut shipped] {
            if let Some(cp) = c["control_plane"].as_object_mut() {
                cp.remove("cluster");
                cp.remove("authority");
            }
        }
        self.check(ours == shipped, || {
            format!(
                "{what}: differs from envoy/envoy.yaml's plugin configuration (but for the \
                 control plane's cluster and authority):\n  {ours}\n  {shipped}"
            )
        });
    }

    fn image(&mut self, reference: &str, what: &str) {
        let (name, tag) = oci_image_name_and_tag();
        let suffix = format!("/{name}:{tag}");
        self.check(reference.ends_with(&suffix), || {
            format!("{what}: image {reference:?} is not make oci's (…{suffix})")
        });
        self.check(!reference.contains("://"), || {
            format!("{what}: image {reference:?} has a scheme")
        });
    }
}

/// The one document of `kind` (and apiVersion), or a problem.
fn find<'a>(docs: &'a [Value], api_version: &str, kind: &str, p: &mut Problems) -> &'a Value {
    static NULL: Value = Value::Null;
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    match found.as_slice() {
        [doc] => {
            p.check(doc["apiVersion"] == api_version, || {
                format!(
                    "{kind}: apiVersion is {}, not {api_version}",
                    doc["apiVersion"]
                )
            });
            p.string(doc, "/metadata/name", kind);
            doc
        }
        _ => {
            p.0.push(format!("expected one {kind}, found {}", found.len()));
            &NULL
        }
    }
}

const ISTIO: &str = "envoy/istio/wasmplugin.yaml";
/// The `spec` fields of the CRDs of Istio 1.29 (networking.istio.io/v1 ServiceEntry,
/// extensions.istio.io/v1alpha1 WasmPlugin).
const SERVICE_ENTRY_SPEC: &str =
    "hosts addresses ports location resolution endpoints workloadSelector exportTo \
    subjectAltNames";
const WASM_PLUGIN_SPEC: &str =
    "selector targetRef targetRefs url sha256 imagePullPolicy imagePullSecret \
    pluginConfig pluginName phase priority failStrategy vmConfig match type \
    verificationKey";

fn istio_problems(docs: &[Value]) -> Vec<String> {
    let mut p = Problems::default();
    let entry = find(docs, "networking.istio.io/v1", "ServiceEntry", &mut p);
    let plugin = find(docs, "extensions.istio.io/v1alpha1", "WasmPlugin", &mut p);

    // ServiceEntry (networking.istio.io/v1): hosts required; the control plane's port.
    let what = "ServiceEntry";
    p.known_fields(&entry["spec"], SERVICE_ENTRY_SPEC, what);
    let host = p.string(entry, "/spec/hosts/0", what);
    p.check(
        entry["spec"]["hosts"].as_array().map(Vec::len) == Some(1),
        || format!("{what}: one host, the control plane's"),
    );
    let port = entry
        .pointer("/spec/ports/0/number")
        .and_then(Value::as_u64);
    p.check(port.is_some_and(|n| (1..=65535).contains(&n)), || {
        format!("{what}: spec.ports[0].number is required (1-65535)")
    });
    p.string(entry, "/spec/ports/0/name", what);
    p.one_of(entry, "/spec/ports/0/protocol", &["HTTP"], what);
    p.one_of(
        entry,
        "/spec/location",
        &["MESH_EXTERNAL", "MESH_INTERNAL"],
        what,
    );
    p.one_of(
        entry,
        "/spec/resolution",
        &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"],
        what,
    );
    p.check(
        entry["spec"]["exportTo"].as_array().is_some_and(|e| {
            e.iter()
                .any(|n| n == "*" || *n == plugin["metadata"]["namespace"])
        }),
        || format!("{what}: not exported to the WasmPlugin's namespace"),
    );

    // WasmPlugin (extensions.istio.io/v1alpha1): url required, oci://.
    let what = "WasmPlugin";
    let spec = &plugin["spec"];
    p.known_fields(spec, WASM_PLUGIN_SPEC, what);
    p.string(plugin, "/metadata/namespace", what);
    let url = p.string(plugin, "/spec/url", what);
    match url.strip_prefix("oci://") {
        Some(image) => p.image(image, what),
        None => p.0.push(format!("{what}: url {url:?} is not oci://")),
    }
    p.check(
        spec["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        || format!("{what}: spec.selector.matchLabels selects no workload"),
    );
    p.one_of(
        plugin,
        "/spec/imagePullPolicy",
        &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"],
        what,
    );
    p.one_of(plugin, "/spec/phase", &["AUTHN"], what);
    p.one_of(plugin, "/spec/failStrategy", &["FAIL_CLOSE"], what);
    p.one_of(plugin, "/spec/pluginName", &[ROOT_ID], what);
    p.one_of(plugin, "/spec/type", &["HTTP"], what);
    let env = spec["vmConfig"]["env"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, var) in env.iter().enumerate() {
        p.string(var, "/name", &format!("{what} vmConfig.env[{i}]"));
        p.one_of(var, "/valueFrom", &["INLINE", "HOST"], what);
    }
    p.check(
        env.iter()
            .any(|v| v["name"] == FILTER_TOKEN_ENV && v["valueFrom"] == "HOST"),
        || format!("{what}: vmConfig.env does not pass {FILTER_TOKEN_ENV} from the host"),
    );
    let cluster = format!("outbound|{}||{host}", port.unwrap_or_default());
    p.plugin_config(&spec["pluginConfig"], &cluster, host, what);
    p.0
}

const EG_GATEWAY: &str = "envoy/envoy-gateway/gateway.yaml";
const EG_POLICY: &str = "envoy/envoy-gateway/envoy-extension-policy.yaml";

fn envoy_gateway_problems(docs: &[Value]) -> Vec<String> {
    let mut p = Problems::default();
    let class = find(docs, "gateway.networking.k8s.io/v1", "GatewayClass", &mut p);
    let proxy = find(docs, "gateway.envoyproxy.io/v1alpha1", "EnvoyProxy", &mut p);
    let gateway = find(docs, "gateway.networking.k8s.io/v1", "Gateway", &mut p);
    let route = find(docs, "gateway.networking.k8s.io/v1", "HTTPRoute", &mut p);
    let patch = find(
        docs,
        "gateway.envoyproxy.io/v1alpha1",
        "EnvoyPatchPolicy",
        &mut p,
    );
    let policy = find(
        docs,
        "gateway.envoyproxy.io/v1alpha1",
        "EnvoyExtensionPolicy",
        &mut p,
    );

    // GatewayClass → Envoy Gateway, with the EnvoyProxy that carries the token.
    p.one_of(
        class,
        "/spec/controllerName",
        &["gateway.envoyproxy.io/gatewayclass-controller"],
        "GatewayClass",
    );
    p.check(
        class["spec"]["parametersRef"]["kind"] == "EnvoyProxy"
            && class["spec"]["parametersRef"]["group"] == "gateway.envoyproxy.io"
            && class["spec"]["parametersRef"]["name"] == proxy["metadata"]["name"]
            && class["spec"]["parametersRef"]["namespace"] == proxy["metadata"]["namespace"],
        || "GatewayClass: parametersRef is not the EnvoyProxy".to_string(),
    );
    p.one_of(proxy, "/spec/provider/type", &["Kubernetes"], "EnvoyProxy");
    let proxy_env = proxy
        .pointer("/spec/provider/kubernetes/envoyDeployment/container/env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    p.check(
        proxy_env.iter().any(|v| {
            v["name"] == FILTER_TOKEN_ENV && v["valueFrom"]["secretKeyRef"]["name"].is_string()
        }),
        || format!("EnvoyProxy: the Envoy container gets no {FILTER_TOKEN_ENV} from a Secret"),
    );

    // Gateway of that class; the route and both policies attach to it.
    let gateway_name = p.string(gateway, "/metadata/name", "Gateway");
    let namespace = p.string(gateway, "/metadata/namespace", "Gateway");
    p.check(
        gateway["spec"]["gatewayClassName"] == class["metadata"]["name"],
        || "Gateway: gatewayClassName is not the GatewayClass".to_string(),
    );
    let listeners = gateway["spec"]["listeners"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    p.check(!listeners.is_empty(), || {
        "Gateway: no listeners".to_string()
    });
    for l in &listeners {
        p.string(l, "/name", "Gateway listener");
        p.one_of(l, "/protocol", &["HTTP", "HTTPS"], "Gateway listener");
        p.check(l["port"].as_u64().is_some(), || {
            "Gateway listener: no port".to_string()
        });
    }
    p.check(
        route["spec"]["parentRefs"][0]["name"] == gateway_name
            && route["metadata"]["namespace"] == namespace,
        || "HTTPRoute: not attached to the Gateway".to_string(),
    );
    p.check(
        route["spec"]["rules"][0]["backendRefs"][0]["name"].is_string(),
        || "HTTPRoute: rules[0] has no backendRefs".to_string(),
    );
    let targets_gateway = |target: &Value, doc: &Value| {
        target["group"] == "gateway.networking.k8s.io"
            && target["kind"] == "Gateway"
            && target["name"] == gateway_name
            && doc["metadata"]["namespace"] == namespace
    };

    // EnvoyPatchPolicy: the control plane's cluster.
    let what = "EnvoyPatchPolicy";
    p.known_fields(
        &patch["spec"],
        "targetRef targetRefs type jsonPatches priority",
        what,
    );
    p.one_of(patch, "/spec/type", &["JSONPatch"], what);
    p.check(targets_gateway(&patch["spec"]["targetRef"], patch), || {
        format!("{what}: targetRef is not the Gateway")
    });
    let cluster_patch = &patch["spec"]["jsonPatches"][0];
    p.one_of(
        cluster_patch,
        "/type",
        &["type.googleapis.com/envoy.config.cluster.v3.Cluster"],
        what,
    );
    p.one_of(cluster_patch, "/operation/op", &["add"], what);
    let cluster = p.string(cluster_patch, "/name", what);
    let value = &cluster_patch["operation"]["value"];
    p.check(
        value["name"] == cluster && value["load_assignment"]["cluster_name"] == cluster,
        || {
            format!(
                "{what}: the cluster's name and load_assignment.cluster_name are not {cluster:?}"
            )
        },
    );
    let socket = value
        .pointer("/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address")
        .cloned()
        .unwrap_or_default();
    let host = p.string(&socket, "/address", what);
    p.check(socket["port_value"].as_u64().is_some(), || {
        format!("{what}: no port_value")
    });

    // EnvoyExtensionPolicy: the wasm filter from make oci's image.
    let what = "EnvoyExtensionPolicy";
    p.known_fields(
        &policy["spec"],
        "targetRef targetRefs targetSelectors wasm extProc dynamicModule mergeType lua",
        what,
    );
    p.check(
        targets_gateway(&policy["spec"]["targetRefs"][0], policy),
        || format!("{what}: targetRefs[0] is not the Gateway"),
    );
    let wasm = policy["spec"]["wasm"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    p.check(wasm.len() == 1, || {
        format!("{what}: one wasm extension, Tollgate")
    });
    let wasm = wasm.first().cloned().unwrap_or_default();
    p.known_fields(&wasm, "name rootID code config failOpen env", what);
    p.one_of(&wasm, "/rootID", &[ROOT_ID], what);
    p.check(wasm["failOpen"] == false, || {
        format!("{what}: failOpen must be false")
    });
    let code = &wasm["code"];
    p.known_fields(code, "type http image configMap sha256 pullPolicy", what);
    p.one_of(code, "/type", &["Image"], what);
    p.check(code.get("http").is_none(), || {
        format!("{what}: code type Image with an http field")
    });
    p.known_fields(&code["image"], "url pullSecretRef sha256 tls", what);
    let image = p.string(code, "/image/url", what);
    p.image(image, what);
    p.one_of(code, "/pullPolicy", &["IfNotPresent", "Always"], what);
    p.check(
        wasm["env"]["hostKeys"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == FILTER_TOKEN_ENV)),
        || format!("{what}: env.hostKeys does not pass {FILTER_TOKEN_ENV}"),
    );
    p.plugin_config(&wasm["config"], cluster, host, what);
    p.0
}

fn istio_docs() -> Vec<Value> {
    documents(&read(ISTIO))
}

fn envoy_gateway_docs() -> Vec<Value> {
    let mut docs = documents(&read(EG_GATEWAY));
    docs.extend(documents(&read(EG_POLICY)));
    docs
}

/// A copy of `docs` with `pointer` set in the document of `kind`: replaced, or added to the
/// object that `pointer`'s parent names.
fn edit(docs: &[Value], kind: &str, pointer: &str, value: Value) -> Vec<Value> {
    let mut docs = docs.to_vec();
    let doc = docs.iter_mut().find(|d| d["kind"] == kind).unwrap();
    if let Some(target) = doc.pointer_mut(pointer) {
        *target = value;
    } else {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = doc
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{kind} has no object at {parent}"));
        parent.insert(key.to_string(), value);
    }
    docs
}

/// Each line of `cases` is a broken copy and what must be found wrong in it:
/// `KIND POINTER JSON => PROBLEM` sets `POINTER` of the document of `KIND` to `JSON` (no spaces in
/// it) and expects a problem containing `PROBLEM`. Lines starting with `#` are comments.
#[track_caller]
fn assert_each_refused(docs: &[Value], check: fn(&[Value]) -> Vec<String>, cases: &str) {
    let mut count = 0;
    for line in cases.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (edit_spec, expected) = line
            .split_once(" => ")
            .expect("KIND POINTER JSON => PROBLEM");
        let [kind, pointer, value] = edit_spec.split_whitespace().collect::<Vec<_>>()[..] else {
            panic!("not KIND POINTER JSON: {edit_spec}");
        };
        let value: Value = serde_json::from_str(value).expect("JSON");
        let problems = check(&edit(docs, kind, pointer, value));
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{line}: expected a problem containing {expected:?}, got {problems:#?}"
        );
        count += 1;
    }
    assert!(count > 5, "only {count} cases");
}

#[test]
fn istio_manifests_have_what_the_crds_require_and_agree_with_the_filter() {
    let problems = istio_problems(&istio_docs());
    assert!(problems.is_empty(), "{ISTIO}:\n  {}", problems.join("\n  "));
}

#[test]
fn envoy_gateway_manifests_have_what_the_crds_require_and_agree_with_the_filter() {
    let problems = envoy_gateway_problems(&envoy_gateway_docs());
    assert!(
        problems.is_empty(),
        "{EG_GATEWAY}, {EG_POLICY}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_checks_find_what_is_wrong_in_a_broken_istio_manifest() {
    assert_each_refused(
        &istio_docs(),
        istio_problems,
        r#"
        # The ServiceEntry's port changes: the filter's cluster no longer exists.
        ServiceEntry /spec/ports/0/number 9090 => the manifests make "outbound|9090||
        # A configuration the filter refuses (unknown field), or one drifted from envoy.yaml.
        WasmPlugin /spec/pluginConfig/hide_keys true => the filter refuses it
        WasmPlugin /spec/pluginConfig/cache/ttl "9s" => differs from envoy/envoy.yaml
        # Not make oci's image, or not an OCI URL.
        WasmPlugin /spec/url "oci://r.example/tollgate/tollgate-filter:0.0.1" => is not make oci's
        WasmPlugin /spec/url "https://r.example/tollgate.wasm" => is not oci://
        WasmPlugin /spec/phase "AUTHZ" => /spec/phase
        WasmPlugin /spec/pluginName "tollgate-usage" => /spec/pluginName
        WasmPlugin /spec/imagePullPolicy "Sometimes" => /spec/imagePullPolicy
        WasmPlugin /spec/vmConfig/env/0/valueFrom "INLINE" => does not pass TOLLGATE_FILTER_TOKEN
        WasmPlugin /spec/selector {"matchLabels":{}} => selects no workload
        # A spec field the CRD does not have; another version; a document missing.
        WasmPlugin /spec/pullPolicy "Always" => unknown field "pullPolicy"
        WasmPlugin /apiVersion "extensions.istio.io/v1" => apiVersion
        ServiceEntry /kind "ServiceEntries" => expected one ServiceEntry
        "#,
    );
}

#[test]
fn the_checks_find_what_is_wrong_in_broken_envoy_gateway_manifests() {
    assert_each_refused(
        &envoy_gateway_docs(),
        envoy_gateway_problems,
        r#"
        # The cluster renamed on either side: the filter calls a cluster nobody makes.
        EnvoyPatchPolicy /spec/jsonPatches/0/name "cp" => the cluster's name
        EnvoyExtensionPolicy /spec/wasm/0/config/control_plane/cluster "cp" => the manifests make "tollgate_control_plane"
        EnvoyExtensionPolicy /spec/wasm/0/config/failure_mode "sometimes" => the filter refuses it
        EnvoyExtensionPolicy /spec/wasm/0/config/usage/batch_size 10 => differs from envoy/envoy.yaml
        # The image: not of type Image, a scheme, not make oci's, a field of another name.
        EnvoyExtensionPolicy /spec/wasm/0/code/type "HTTP" => /type
        EnvoyExtensionPolicy /spec/wasm/0/code/image/url "oci://r.example/t/tollgate-filter:0.1.0" => has a scheme
        EnvoyExtensionPolicy /spec/wasm/0/code/image/url "r.example/t/other:0.1.0" => is not make oci's
        EnvoyExtensionPolicy /spec/wasm/0/code/image/URL "x" => unknown field "URL"
        EnvoyExtensionPolicy /spec/wasm/0/code/pullPolicy "Never" => /pullPolicy
        EnvoyExtensionPolicy /spec/wasm/0/rootID "root" => /rootID
        EnvoyExtensionPolicy /spec/wasm/0/failOpen true => failOpen
        EnvoyExtensionPolicy /spec/wasm/0/env/hostKeys [] => env.hostKeys
        # References between the resources.
        EnvoyExtensionPolicy /spec/targetRefs/0/name "other" => targetRefs[0] is not the Gateway
        Gateway /spec/gatewayClassName "istio" => gatewayClassName
        HTTPRoute /spec/parentRefs/0/name "other" => HTTPRoute: not attached
        GatewayClass /spec/parametersRef/name "other" => parametersRef
        EnvoyProxy /spec/provider/kubernetes/envoyDeployment/container/env/0/name "TOKEN" => EnvoyProxy: the Envoy container gets no
        "#,
    );
}

#[test]
fn both_platforms_pull_the_same_image() {
    let kind = |docs: Vec<Value>, kind: &str| docs.into_iter().find(|d| d["kind"] == kind);
    let istio = kind(istio_docs(), "WasmPlugin").unwrap()["spec"]["url"].clone();
    let eg = kind(envoy_gateway_docs(), "EnvoyExtensionPolicy").unwrap();
    let eg = &eg["spec"]["wasm"][0]["code"]["image"]["url"];
    assert_eq!(
        istio.as_str().and_then(|u| u.strip_prefix("oci://")),
        eg.as_str()
    );
}
