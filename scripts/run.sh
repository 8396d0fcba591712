#!/usr/bin/env bash
# Runs Tollgate locally: control plane (:8080), demo upstream (:8081) and Envoy with the filter
# (:10000, admin :9901). Creates a demo workspace (plan pro) and a new demo key, prints curl
# commands to try, and stays in the foreground until Ctrl-C / SIGTERM, then stops everything it
# started.
#
# Environment:
#   TOLLGATE_DATA_DIR      data directory of the control plane (default ./data, from the repo root)
#   TOLLGATE_ADMIN_TOKEN   admin token (default: <data dir>/admin-token, created by the control plane)
#   TOLLGATE_FILTER_TOKEN  filter token (default: <data dir>/filter-token, created by the control plane)
#   TOLLGATE_SKIP_BUILD=1  do not run `make build` first (make run has just built everything)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

CONTROL_PLANE_ADDR=127.0.0.1:8080
UPSTREAM_ADDR=127.0.0.1:8081
PROXY_PORT=10000
ADMIN_PORT=9901
ENVOY_BASE_ID=7            # integration tests use ids >= 10000
DATA_DIR="${TOLLGATE_DATA_DIR:-./data}"
LOG_DIR="$root/target/run"

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

if [[ "${TOLLGATE_SKIP_BUILD:-}" != 1 ]]; then
  make -C "$root" build
fi

tollgate="$root/target/release/tollgate"
[[ -x "$tollgate" ]] || die "$tollgate missing: run 'make control-plane'"
[[ -s "$root/target/tollgate.wasm" ]] || die "target/tollgate.wasm missing: run 'make wasm'"
[[ -s "$root/target/envoy-path" ]] || die "target/envoy-path missing: run 'make envoy'"
envoy="$(cat "$root/target/envoy-path")"
[[ -x "$envoy" ]] || die "$envoy is not executable: run 'make envoy'"
if ! command -v curl >/dev/null; then
  log "installing curl"
  sudo=""; [[ "$(id -u)" == 0 ]] || sudo=sudo
  $sudo apt-get update && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends curl
fi
if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${CONTROL_PLANE_ADDR##*:}" "${UPSTREAM_ADDR##*:}" "$PROXY_PORT" "$ADMIN_PORT"; do
  if port_in_use "$port"; then
    die "127.0.0.1:$port is already in use (another 'make run'?)"
  fi
done

mkdir -p "$DATA_DIR" "$LOG_DIR"

# --- process management -----------------------------------------------------------------------
pids=()
names=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    log "stopping ${names[*]}"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
      local alive=0
      for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -f "/dev/shm/envoy_shared_memory_$((ENVOY_BASE_ID * 10))"
  fi
  exit "$status"
}
trap cleanup EXIT
# A requested stop is a normal end.
trap 'exit 0' INT TERM

# start NAME LOGFILE COMMAND...: runs COMMAND in the background, output to LOGFILE.
start() {
  local name=$1 logfile=$2
  shift 2
  "$@" </dev/null >"$logfile" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# wait_until NAME PID URL: polls URL until it answers 2xx (30 s), failing if PID exits.
wait_until() {
  local name=$1 pid=$2 url=$3 logfile=$4
  for _ in $(seq 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "--- $logfile" >&2; tail -n 40 "$logfile" >&2 || true
      die "$name exited during startup"
    fi
    curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "--- $logfile" >&2; tail -n 40 "$logfile" >&2 || true
  die "$name not ready after 30 s ($url)"
}

# --- control plane -----------------------------------------------------------------------------
log "control plane on http://$CONTROL_PLANE_ADDR (data: $DATA_DIR, log: target/run/control-plane.log)"
start control-plane "$LOG_DIR/control-plane.log" \
  "$tollgate" serve --listen "$CONTROL_PLANE_ADDR" --data-dir "$DATA_DIR"
wait_until "control plane" "${pids[-1]}" "http://$CONTROL_PLANE_ADDR/healthz" "$LOG_DIR/control-plane.log"

admin_token="${TOLLGATE_ADMIN_TOKEN:-}"
if [[ -z "$admin_token" ]]; then
  [[ -s "$DATA_DIR/admin-token" ]] || die "$DATA_DIR/admin-token missing and TOLLGATE_ADMIN_TOKEN unset"
  admin_token="$(tr -d '\r\n' <"$DATA_DIR/admin-token")"
fi
filter_token="${TOLLGATE_FILTER_TOKEN:-}"
if [[ -z "$filter_token" ]]; then
  [[ -s "$DATA_DIR/filter-token" ]] || die "$DATA_DIR/filter-token missing and TOLLGATE_FILTER_TOKEN unset"
  filter_token="$(tr -d '\r\n' <"$DATA_DIR/filter-token")"
fi

# --- demo upstream -----------------------------------------------------------------------------
log "demo upstream on http://$UPSTREAM_ADDR (log: target/run/upstream.log)"
start demo-upstream "$LOG_DIR/upstream.log" "$tollgate" demo-upstream --listen "$UPSTREAM_ADDR"
wait_until "demo upstream" "${pids[-1]}" "http://$UPSTREAM_ADDR/" "$LOG_DIR/upstream.log"

# --- demo workspace and key --------------------------------------------------------------------
# api METHOD PATH [JSON]: prints "<status> <body>".
api() {
  local method=$1 path=$2 body=${3:-}
  local args=(-sS -X "$method" -H "authorization: Bearer $admin_token" -w '\n%{http_code}')
  [[ -n "$body" ]] && args+=(-H 'content-type: application/json' --data "$body")
  local out
  out="$(curl "${args[@]}" "http://$CONTROL_PLANE_ADDR$path")"
  printf '%s %s\n' "${out##*$'\n'}" "${out%$'\n'*}"
}
json_field() { "$python" -c 'import json,sys; print(json.loads(sys.stdin.read())[sys.argv[1]])' "$1"; }

create_workspace() {
  local answer status
  answer="$(api POST /v1/workspaces "{\"name\":\"demo-$(date +%Y%m%d-%H%M%S)\",\"plan\":\"pro\"}")"
  status="${answer%% *}"
  [[ "$status" == 201 ]] || die "creating the demo workspace failed: $answer"
  workspace_id="$(json_field id <<<"${answer#* }")"
  echo "$workspace_id" >"$DATA_DIR/demo-workspace-id"
}

workspace_id=""
if [[ -s "$DATA_DIR/demo-workspace-id" ]]; then
  workspace_id="$(cat "$DATA_DIR/demo-workspace-id")"
  answer="$(api GET "/v1/workspaces/$workspace_id")"
  [[ "${answer%% *}" == 200 ]] || workspace_id=""
fi
[[ -n "$workspace_id" ]] || create_workspace

key_alias="demo-$(date +%Y%m%d-%H%M%S)"
answer="$(api POST "/v1/workspaces/$workspace_id/keys" "{\"alias\":\"$key_alias\",\"description\":\"created by make run\"}")"
if [[ "${answer%% *}" == 409 ]]; then
  # The demo workspace is full (plan pro: 25 keys): start a new one.
  create_workspace
  answer="$(api POST "/v1/workspaces/$workspace_id/keys" "{\"alias\":\"$key_alias\",\"description\":\"created by make run\"}")"
fi
[[ "${answer%% *}" == 201 ]] || die "creating the demo key failed: $answer"
key_id="$(json_field id <<<"${answer#* }")"
secret="$(json_field secret <<<"${answer#* }")"

# --- Envoy -------------------------------------------------------------------------------------
log "Envoy on http://127.0.0.1:$PROXY_PORT, admin http://127.0.0.1:$ADMIN_PORT (log: target/run/envoy.log)"
start envoy "$LOG_DIR/envoy.log" env TOLLGATE_FILTER_TOKEN="$filter_token" \
  "$envoy" -c envoy/envoy.yaml --base-id "$ENVOY_BASE_ID" --log-level info
wait_until "Envoy" "${pids[-1]}" "http://127.0.0.1:$ADMIN_PORT/ready" "$LOG_DIR/envoy.log"

# Envoy's JSON access log, live.
tail -n 0 -F "$LOG_DIR/envoy.log" 2>/dev/null | grep --line-buffered '^{' &
pids+=("$!")
names+=("log-tail")

if [[ -n "${TOLLGATE_ADMIN_TOKEN:-}" ]]; then
  admin_hint='$TOLLGATE_ADMIN_TOKEN'
else
  admin_hint="\$(cat $DATA_DIR/admin-token)"
fi
bad_key="tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC"
cat <<EOF

Tollgate is running.

  workspace  $workspace_id (plan pro)
  key        $key_id ($key_alias)
  secret     $secret

Try it:

  # with the key (x-api-key or Authorization: Bearer) -> 200, echoed by the demo upstream
  curl -i -H 'x-api-key: $secret' http://127.0.0.1:$PROXY_PORT/v1/hello
  curl -i -H 'Authorization: Bearer $secret' http://127.0.0.1:$PROXY_PORT/v1/hello

  # without a key -> 401 {"error":"Missing API Key"}
  curl -i http://127.0.0.1:$PROXY_PORT/v1/hello

  # with a key the control plane never issued -> 401 {"error":"Invalid API Key"}
  curl -i -H 'x-api-key: $bad_key' http://127.0.0.1:$PROXY_PORT/v1/hello

  # admin API
  curl -s -H "Authorization: Bearer $admin_hint" http://$CONTROL_PLANE_ADDR/v1/keys/$key_id

Envoy stats: http://127.0.0.1:$ADMIN_PORT/stats?filter=tollgate   Logs: target/run/
Press Ctrl-C to stop.

EOF

# --- foreground --------------------------------------------------------------------------------
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      printf 'error: %s exited; see target/run/\n' "${names[$i]}" >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
