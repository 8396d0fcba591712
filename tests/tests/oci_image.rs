//! `make oci`'s image (scripts/oci-image.py) as Istio's and Envoy Gateway's image fetchers read
//! it, checked with skopeo (Debian `skopeo`, in the Makefile's TEST_TOOLS) on the real
//! `target/tollgate.wasm`: the manifest's and config's media types, two layers of which the
//! wasm one is the `.wasm` byte for byte (its digest is the file's sha256), the annotations, and
//! `skopeo copy` out of the layout giving back the same bytes. Also: the same input gives the
//! same digests, and the script refuses what is not a wasm module.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tollgate_integration_tests::paths::{repo_root, wasm_file};
use tollgate_integration_tests::tools::program;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const TAG: &str = "9.8.7-test";
const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
const SOURCE: &str = "https://example.com/tollgate.git";
const CREATED: &str = "2026-01-02T03:04:05Z";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn succeeded(what: &str, output: Output) -> Vec<u8> {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs scripts/oci-image.py on `wasm` into `out` with the test's tag and annotations.
fn oci_image(wasm: &Path, out: &Path, revision: &str) -> Output {
    Command::new(program("python3"))
        .arg(repo_root().join("scripts/oci-image.py"))
        .arg("--wasm")
        .arg(wasm)
        .arg("--out")
        .arg(out)
        .args(["--tag", TAG, "--version", "9.8.7", "--revision", revision])
        .args(["--source", SOURCE, "--created", CREATED])
        .output()
        .expect("python3 starts")
}

fn write_image(wasm: &Path, out: &Path) {
    succeeded("scripts/oci-image.py", oci_image(wasm, out, REVISION));
}

/// The real filter's bytes, and its image written to `tollgate-filter` in a new temporary
/// directory (kept while the returned handle lives).
fn filter_image() -> (Vec<u8>, tempfile::TempDir, PathBuf) {
    let wasm = std::fs::read(wasm_file()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("tollgate-filter");
    write_image(wasm_file(), &layout);
    (wasm, dir, layout)
}

/// `skopeo <args> oci:<layout>:<TAG>`, its standard output.
fn skopeo(args: &[&str], layout: &Path) -> Vec<u8> {
    let output = Command::new(program("skopeo"))
        .args(args)
        .arg(format!("oci:{}:{TAG}", layout.display()))
        .output()
        .expect("skopeo starts");
    succeeded(&format!("skopeo {args:?}"), output)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// The root ids envoy/envoy.yaml gives the filter and its usage service (`root_id: "..."`).
fn shipped_root_ids() -> Vec<String> {
    let config = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    let mut ids: Vec<String> = config
        .lines()
        .filter_map(|line| line.trim().strip_prefix("root_id:"))
        .map(|id| id.trim().trim_matches('"').to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

#[test]
fn skopeo_reads_the_image_as_the_wasm_oci_variant_with_the_filter_as_its_wasm_layer() {
    let (wasm, _dir, layout) = filter_image();

    // The layout itself: oci-layout, and index.json naming the manifest by the tag.
    let oci_layout = json(&std::fs::read(layout.join("oci-layout")).unwrap());
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
    assert_eq!(
        str_at(
            &index,
            "/manifests/0/annotations/org.opencontainers.image.ref.name"
        ),
        TAG
    );

    let raw_manifest = skopeo(&["inspect", "--raw"], &layout);
    let manifest = json(&raw_manifest);
    assert_eq!(
        str_at(&index, "/manifests/0/digest"),
        format!("sha256:{}", sha256_hex(&raw_manifest)),
        "index.json's digest is not the manifest skopeo read"
    );
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(str_at(&manifest, "/mediaType"), MANIFEST);
    assert_eq!(str_at(&manifest, "/config/mediaType"), WASM_CONFIG);

    // Istio and Envoy Gateway want exactly two layers, one of them the raw wasm module.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(
        layers.len(),
        2,
        "the fetchers refuse any other count: {manifest}"
    );
    let wasm_layers: Vec<&Value> = layers
        .iter()
        .filter(|l| l["mediaType"] == WASM_LAYER)
        .collect();
    assert_eq!(wasm_layers.len(), 1, "one wasm layer: {manifest}");
    let layer = wasm_layers[0];
    assert_eq!(
        str_at(layer, "/digest"),
        format!("sha256:{}", sha256_hex(&wasm)),
        "the wasm layer is not target/tollgate.wasm"
    );
    assert_eq!(layer["size"].as_u64(), Some(wasm.len() as u64));
    assert_eq!(
        str_at(layer, "/annotations/org.opencontainers.image.title"),
        "tollgate.wasm"
    );
    let other = layers
        .iter()
        .find(|l| l["mediaType"] != WASM_LAYER)
        .unwrap();
    assert_eq!(str_at(other, "/mediaType"), WASM_CONFIG);
    assert_eq!(other["digest"], manifest["config"]["digest"]);

    for (name, value) in [
        ("title", "tollgate-filter"),
        ("version", "9.8.7"),
        ("revision", REVISION),
        ("source", SOURCE),
        ("created", CREATED),
    ] {
        assert_eq!(
            str_at(
                &manifest,
                &format!("/annotations/org.opencontainers.image.{name}")
            ),
            value,
            "annotation {name}"
        );
    }

    // The runtime config, as skopeo fetches it by the manifest's config descriptor.
    let raw_config = skopeo(&["inspect", "--config", "--raw"], &layout);
    assert_eq!(
        str_at(&manifest, "/config/digest"),
        format!("sha256:{}", sha256_hex(&raw_config))
    );
    assert_eq!(
        manifest["config"]["size"].as_u64(),
        Some(raw_config.len() as u64)
    );
    let config = json(&raw_config);
    assert_eq!(str_at(&config, "/type"), "envoy_proxy");
    assert_eq!(config["abiVersions"][0], "proxy_abi_version_0_2_1");
    // The filter exports that ABI version (a function named after it).
    assert!(
        wasm.windows(23).any(|w| w == b"proxy_abi_version_0_2_1"),
        "target/tollgate.wasm does not export proxy_abi_version_0_2_1"
    );
    let mut root_ids: Vec<String> = config["config"]["rootIds"]
        .as_array()
        .expect("rootIds")
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    root_ids.sort();
    assert_eq!(
        root_ids,
        shipped_root_ids(),
        "the image's root ids are not envoy/envoy.yaml's"
    );

    // Every blob is stored under its own digest.
    for entry in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_hex(&std::fs::read(&path).unwrap()), name);
    }
}

#[test]
fn skopeo_copies_the_wasm_out_of_the_layout_byte_for_byte() {
    let (wasm, dir, layout) = filter_image();

    let copy = dir.path().join("copied");
    let output = Command::new(program("skopeo"))
        .arg("copy")
        .arg(format!("oci:{}:{TAG}", layout.display()))
        .arg(format!("dir:{}", copy.display()))
        .output()
        .expect("skopeo starts");
    succeeded("skopeo copy", output);

    // skopeo's dir: transport stores the manifest and each blob under its hex digest.
    let manifest = json(&std::fs::read(copy.join("manifest.json")).unwrap());
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mediaType"] == WASM_LAYER)
        .expect("a wasm layer in the copied manifest");
    let hex = str_at(layer, "/digest").strip_prefix("sha256:").unwrap();
    let copied = std::fs::read(copy.join(hex)).unwrap();
    assert!(
        copied == wasm,
        "the copied wasm layer differs from target/tollgate.wasm"
    );
}

#[test]
fn the_same_wasm_gives_the_same_digests_and_another_wasm_another_layer() {
    let wasm_path = wasm_file();
    let dir = tempfile::tempdir().unwrap();
    let files = |layout: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = vec![
            (
                PathBuf::from("index.json"),
                std::fs::read(layout.join("index.json")).unwrap(),
            ),
            (
                PathBuf::from("oci-layout"),
                std::fs::read(layout.join("oci-layout")).unwrap(),
            ),
        ];
        let mut blobs: Vec<PathBuf> = std::fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        blobs.sort();
        for blob in blobs {
            let bytes = std::fs::read(&blob).unwrap();
            files.push((blob.strip_prefix(layout).unwrap().to_path_buf(), bytes));
        }
        files
    };

    let first = dir.path().join("first");
    let second = dir.path().join("second");
    write_image(wasm_path, &first);
    write_image(wasm_path, &second);
    assert!(
        files(&first) == files(&second),
        "two runs on the same .wasm wrote different layouts"
    );
    // Written again over an existing layout: replaced, no stale blobs.
    write_image(wasm_path, &first);
    assert!(files(&first) == files(&second));

    // Another module: another wasm layer (and so another manifest), same runtime config.
    let other_wasm = dir.path().join("other.wasm");
    std::fs::write(&other_wasm, b"\0asm\x01\0\0\0").unwrap();
    let other = dir.path().join("other");
    write_image(&other_wasm, &other);
    let manifest = |layout: &Path| json(&skopeo(&["inspect", "--raw"], layout));
    let (ours, theirs) = (manifest(&first), manifest(&other));
    assert_ne!(ours["layers"][1]["digest"], theirs["layers"][1]["digest"]);
    assert_eq!(
        str_at(&theirs, "/layers/1/digest"),
        format!("sha256:{}", sha256_hex(b"\0asm\x01\0\0\0"))
    );
    assert_eq!(ours["config"], theirs["config"]);
}

#[test]
fn the_script_refuses_a_file_that_is_not_a_wasm_module() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("tollgate.wasm");
    std::fs::write(&not_wasm, b"#!/bin/sh\necho not wasm\n").unwrap();
    let out = dir.path().join("layout");
    let output = oci_image(&not_wasm, &out, REVISION);
    assert!(!output.status.success(), "a shell script became an image");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("is not a WebAssembly module"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.exists(), "a layout was written for a non-wasm file");

    // An empty revision is refused too: the image must say what it was built from.
    let output = oci_image(wasm_file(), &out, " ");
    assert!(!output.status.success());
    assert!(!out.exists());
}
