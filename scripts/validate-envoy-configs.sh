#!/usr/bin/env bash
# Runs `envoy --mode validate` on every Envoy configuration shipped in envoy/ (*.yaml).
# Validation loads the filter (the wasm filter's on_configure, the native module's program init
# and configuration hooks), so the plugin configuration is checked too. Needs `make wasm`,
# `make native` and `make envoy` first.
#
# Configs for containers name the filter /etc/tollgate/tollgate.wasm; they are validated from a
# copy with that path pointing at target/tollgate.wasm.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

envoy_path_file="$root/target/envoy-path"
[[ -s "$envoy_path_file" ]] || { echo "error: $envoy_path_file missing: run 'make envoy'" >&2; exit 1; }
envoy="$(cat "$envoy_path_file")"
[[ -x "$envoy" ]] || { echo "error: $envoy is not executable: run 'make envoy'" >&2; exit 1; }
[[ -s "$root/target/tollgate.wasm" ]] || { echo "error: target/tollgate.wasm missing: run 'make wasm'" >&2; exit 1; }
[[ -s "$root/target/libtollgate_native.so" ]] || { echo "error: target/libtollgate_native.so missing: run 'make native'" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The filter may insist on a token; a real deployment always provides one.
export TOLLGATE_FILTER_TOKEN="${TOLLGATE_FILTER_TOKEN:-validate-only-token}"

failed=0
shopt -s nullglob
configs=(envoy/*.yaml)
(( ${#configs[@]} > 0 )) || { echo "error: no Envoy configs in envoy/" >&2; exit 1; }
for config in "${configs[@]}"; do
  checked="$config"
  if grep -q '/etc/tollgate/tollgate.wasm' "$config"; then
    checked="$tmp/$(basename "$config")"
    sed "s#/etc/tollgate/tollgate.wasm#$root/target/tollgate.wasm#g" "$config" > "$checked"
  fi
  if out="$("$envoy" --mode validate -c "$checked" --log-level warn 2>&1)"; then
    echo "ok      $config"
  else
    echo "FAILED  $config"
    echo "$out" | sed 's/^/    /'
    failed=1
  fi
done
exit "$failed"
