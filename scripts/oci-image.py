#!/usr/bin/env python3
"""Writes the filter as an OCI image layout that Istio's WasmPlugin and Envoy Gateway pull.

    scripts/oci-image.py --wasm target/tollgate.wasm --out target/oci/tollgate-filter \
        --tag 0.1.0 --version 0.1.0 --revision "$(git rev-parse HEAD)" \
        [--source URL] [--created 2026-01-01T00:00:00Z]

The image is the "oci" variant of the Wasm image specification (solo-io/wasm, spec/spec.md), as
Istio's and Envoy Gateway's image fetchers read it (istio pkg/wasm/imagefetcher.go,
extractOCIArtifactImage; Envoy Gateway's internal/wasm/imagefetcher.go is a copy): exactly two
layers, one of them application/vnd.module.wasm.content.layer.v1+wasm (a one-layer image is
refused: "number of layers must be 2").

  manifest  application/vnd.oci.image.manifest.v1+json, schemaVersion 2, the image annotations
  config    application/vnd.module.wasm.config.v1+json: the runtime config (type envoy_proxy,
            the proxy-wasm ABI, the filter's root ids)
  layers    [0] the same runtime config, application/vnd.module.wasm.config.v1+json
            [1] application/vnd.module.wasm.content.layer.v1+wasm: the .wasm itself, byte for
                byte, so the layer's digest is the sha256 of the .wasm

written as an OCI image layout (oci-layout, index.json, blobs/sha256/<digest>) under --out, the
tag as the index entry's org.opencontainers.image.ref.name. Reproducible: no clock is read (the
creation time is --created, make oci passes the commit's date), every JSON document is written
with sorted keys and no whitespace, so the same .wasm and arguments give the same digests.
The layout is replaced as a whole (written beside it, then renamed into place). Python's
standard library only. Push it with skopeo:

    skopeo copy oci:target/oci/tollgate-filter:0.1.0 docker://registry.example.com/tollgate/tollgate-filter:0.1.0
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.module.wasm.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
# The proxy-wasm ABI the filter exports (proxy_abi_version_0_2_1) and its root contexts: the
# HTTP filter and the usage service (envoy/envoy.yaml).
ABI_VERSION = "proxy_abi_version_0_2_1"
ROOT_IDS = ["tollgate", "tollgate-usage"]
WASM_MAGIC = b"\0asm"


def canonical(document):
    """The bytes of a JSON document: sorted keys, no whitespace, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Layout:
    def __init__(self, root):
        self.root = root
        os.makedirs(os.path.join(root, "blobs", "sha256"))

    def blob(self, media_type, data, annotations=None):
        """Stores `data` under its digest and returns its descriptor."""
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        descriptor = {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}
        if annotations:
            descriptor["annotations"] = annotations
        return descriptor

    def file(self, name, data):
        with open(os.path.join(self.root, name), "wb") as f:
            f.write(data)


def build(wasm, out, tag, annotations, wasm_name):
    if not wasm.startswith(WASM_MAGIC):
        raise SystemExit(f"oci-image: {wasm_name} is not a WebAssembly module (no \\0asm header)")
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".oci-image-", dir=parent)
    try:
        layout = Layout(os.path.join(staging, "layout"))
        runtime_config = canonical(
            {
                "type": "envoy_proxy",
                "abiVersions": [ABI_VERSION],
                "config": {"rootIds": ROOT_IDS},
            }
        )
        config = layout.blob(CONFIG_MEDIA_TYPE, runtime_config)
        title = "org.opencontainers.image.title"
        config_layer = layout.blob(CONFIG_MEDIA_TYPE, runtime_config, {title: "runtime-config.json"})
        layer = layout.blob(LAYER_MEDIA_TYPE, wasm, {title: wasm_name})
        manifest = layout.blob(
            MANIFEST_MEDIA_TYPE,
            canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    "config": config,
                    "layers": [config_layer, layer],
                    "annotations": annotations,
                }
            ),
        )
        manifest["annotations"] = {"org.opencontainers.image.ref.name": tag}
        layout.file("oci-layout", canonical({"imageLayoutVersion": "1.0.0"}))
        layout.file(
            "index.json",
            canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [manifest],
                }
            ),
        )
        old = os.path.join(staging, "old")
        if os.path.lexists(out):
            os.rename(out, old)
        os.rename(layout.root, out)
        return manifest, layer
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wasm", required=True, help="the filter, e.g. target/tollgate.wasm")
    parser.add_argument("--out", required=True, help="the OCI image layout directory to write")
    parser.add_argument("--tag", required=True, help="the tag (org.opencontainers.image.ref.name)")
    parser.add_argument("--version", required=True, help="org.opencontainers.image.version")
    parser.add_argument("--revision", required=True, help="org.opencontainers.image.revision")
    parser.add_argument("--source", default="", help="org.opencontainers.image.source (a URL)")
    parser.add_argument("--created", default="", help="org.opencontainers.image.created (RFC 3339)")
    parser.add_argument("--title", default="tollgate-filter", help="org.opencontainers.image.title")
    args = parser.parse_args(argv)

    # A tag as the distribution spec allows it, so skopeo can name it (oci:DIR:TAG).
    tag_chars = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if not (0 < len(args.tag) <= 128 and set(args.tag) <= tag_chars and args.tag[0] not in ".-"):
        parser.error(f"--tag {args.tag!r} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
    annotations = {
        "org.opencontainers.image.title": args.title,
        "org.opencontainers.image.version": args.version,
        "org.opencontainers.image.revision": args.revision,
    }
    if args.source:
        annotations["org.opencontainers.image.source"] = args.source
    if args.created:
        annotations["org.opencontainers.image.created"] = args.created
    for name, value in annotations.items():
        if not value.strip():
            parser.error(f"{name} is empty")

    with open(args.wasm, "rb") as f:
        wasm = f.read()
    manifest, layer = build(wasm, args.out, args.tag, annotations, os.path.basename(args.wasm))
    print(f"==> {args.out} (oci:{args.out}:{args.tag})")
    print(f"    manifest {manifest['digest']} ({manifest['size']} bytes)")
    print(f"    layer    {layer['digest']} ({layer['size']} bytes, {LAYER_MEDIA_TYPE})")


if __name__ == "__main__":
    main(sys.argv[1:])
