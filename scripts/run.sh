#!/usr/bin/env bash
# Runs Tollgate locally: control plane and dashboard (:8080), demo upstream (:8081) and Envoy
# with the filter (:10000, admin :9901). Creates a demo workspace (plan pro) and a new demo key,
# sends demo traffic with it (passes, a denial, a rate-limited burst) so that the key's usage
# page in the dashboard has something to show, prints how to sign in and what to try, and stays
# in the foreground until Ctrl-C / SIGTERM, then stops everything it started.
#
# Environment:
#   TOLLGATE_DATA_DIR      data directory of the control plane (default ./data, from the repo root)
#   TOLLGATE_ADMIN_TOKEN   admin token (default: <data dir>/admin-token, created by the control plane)
#   TOLLGATE_FILTER_TOKEN  filter token (default: <data dir>/filter-token, created by the control plane)
#   TOLLGATE_RUN_PORTS     "CONTROL_PLANE UPSTREAM PROXY ADMIN" ports (default "8080 8081 10000 9901")
#   TOLLGATE_RUN_DIR       logs and the rendered Envoy configuration (default target/run)
#   TOLLGATE_SKIP_BUILD=1  do not run `make build tools-run` first (make run has just done it)
#   TOLLGATE_FILTER        the filter build: wasm (default, envoy/envoy.yaml) or native
#                          (the dynamic module, envoy/envoy-native.yaml); `make run FILTER=native`
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$(pwd)"

# The ports of the shipped Envoy configs; other ones are written into a copy of it.
SHIPPED_PORTS=(8080 8081 10000 9901)
read -r -a ports <<<"${TOLLGATE_RUN_PORTS:-${SHIPPED_PORTS[*]}}"
CONTROL_PLANE_ADDR="127.0.0.1:${ports[0]}"
UPSTREAM_ADDR="127.0.0.1:${ports[1]}"
PROXY_PORT="${ports[2]}"
ADMIN_PORT="${ports[3]}"
DATA_DIR="${TOLLGATE_DATA_DIR:-./data}"
LOG_DIR="${TOLLGATE_RUN_DIR:-$root/target/run}"

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

(( ${#ports[@]} == 4 )) || die "TOLLGATE_RUN_PORTS must be four ports, got '${TOLLGATE_RUN_PORTS:-}'"
if [[ "${TOLLGATE_SKIP_BUILD:-}" != 1 ]]; then
  make -C "$root" build tools-run
fi

tollgate="$root/target/release/tollgate"
[[ -x "$tollgate" ]] || die "$tollgate missing: run 'make control-plane'"
case "${TOLLGATE_FILTER:-wasm}" in
  wasm)
    shipped_config=envoy/envoy.yaml
    [[ -s "$root/target/tollgate.wasm" ]] || die "target/tollgate.wasm missing: run 'make wasm'" ;;
  native)
    shipped_config=envoy/envoy-native.yaml
    [[ -s "$root/target/libtollgate_native.so" ]] || die "target/libtollgate_native.so missing: run 'make native'" ;;
  *) die "TOLLGATE_FILTER must be wasm or native, got '$TOLLGATE_FILTER'" ;;
esac
[[ -s "$root/target/envoy-path" ]] || die "target/envoy-path missing: run 'make envoy'"
envoy="$(cat "$root/target/envoy-path")"
[[ -x "$envoy" ]] || die "$envoy is not executable: run 'make envoy'"
command -v curl >/dev/null || die "curl missing: run 'make tools-run' (installs what make run needs)"
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
    # Left behind only by an Envoy that had to be killed.
    if [[ -s "$LOG_DIR/envoy-base-id" ]]; then
      rm -f "/dev/shm/envoy_shared_memory_$(($(cat "$LOG_DIR/envoy-base-id") * 10))"
    fi
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
log "control plane on http://$CONTROL_PLANE_ADDR (data: $DATA_DIR, log: $LOG_DIR/control-plane.log)"
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
log "demo upstream on http://$UPSTREAM_ADDR (log: $LOG_DIR/upstream.log)"
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
# GET and POST anywhere under /v1: any other method is the demo's denial (403).
key_body="{\"alias\":\"$key_alias\",\"description\":\"created by make run\",\"allowed\":[{\"method\":\"GET\",\"path\":\"/v1/**\"},{\"method\":\"POST\",\"path\":\"/v1/**\"}]}"
answer="$(api POST "/v1/workspaces/$workspace_id/keys" "$key_body")"
if [[ "${answer%% *}" == 409 ]]; then
  # The demo workspace is full (plan pro: 25 keys): start a new one.
  create_workspace
  answer="$(api POST "/v1/workspaces/$workspace_id/keys" "$key_body")"
fi
[[ "${answer%% *}" == 201 ]] || die "creating the demo key failed: $answer"
key_id="$(json_field id <<<"${answer#* }")"
secret="$(json_field secret <<<"${answer#* }")"

# --- Envoy -------------------------------------------------------------------------------------
envoy_config="$shipped_config"
if [[ "${ports[*]}" != "${SHIPPED_PORTS[*]}" ]]; then
  envoy_config="$LOG_DIR/envoy.yaml"
  rewrite=()
  for i in "${!ports[@]}"; do
    grep -q "port_value: ${SHIPPED_PORTS[$i]} " "$shipped_config" ||
      die "$shipped_config has no 'port_value: ${SHIPPED_PORTS[$i]} ' to replace with TOLLGATE_RUN_PORTS"
    rewrite+=(-e "s/port_value: ${SHIPPED_PORTS[$i]} /port_value: ${ports[$i]} /")
  done
  sed "${rewrite[@]}" "$shipped_config" >"$envoy_config"
fi
log "Envoy on http://127.0.0.1:$PROXY_PORT, admin http://127.0.0.1:$ADMIN_PORT (log: $LOG_DIR/envoy.log)"
# A base id of its own (another Envoy on this machine may hold the default one).
start envoy "$LOG_DIR/envoy.log" env TOLLGATE_FILTER_TOKEN="$filter_token" \
  "$envoy" -c "$envoy_config" --use-dynamic-base-id --base-id-path "$LOG_DIR/envoy-base-id" \
  --log-level info
wait_until "Envoy" "${pids[-1]}" "http://127.0.0.1:$ADMIN_PORT/ready" "$LOG_DIR/envoy.log"

# --- demo traffic ------------------------------------------------------------------------------
# A few requests with the demo key, so that its usage page shows each kind of outcome.
proxy="http://127.0.0.1:$PROXY_PORT"
# count CODE: how many lines of stdin are CODE.
count() { grep -cx "$1" || true; }
key_header="x-api-key: $secret"
# status_codes CURL-ARGS... URL: the status of each request, a line each (one URL, which may be
# a glob: one -o serves all its requests).
status_codes() { curl -sS -o /dev/null -w '%{http_code}\n' -H "$key_header" "$@"; }
passes="$( {
  for _ in 1 2 3; do status_codes "$proxy/v1/hello"; done
  status_codes "$proxy/v1/candidates/c-[1-4]"               # 2 credits each (envoy.yaml routes)
  for _ in 1 2; do status_codes -X POST -d '{"name":"Ada"}' "$proxy/v1/candidates"; done
} | count 200)"
denials="$(status_codes -X DELETE "$proxy/v1/candidates/c-1" | count 403)"
# Plan pro admits 50 requests per second per workspace: 150 at once cannot all pass, even when
# they straddle the start of a second (curl -s alone still draws the parallel progress meter).
burst="$(status_codes --no-progress-meter --parallel --parallel-max 50 "$proxy/v1/hello?burst=[1-150]")"
burst_passed="$(count 200 <<<"$burst")"
burst_limited="$(count 429 <<<"$burst")"
sent=$((9 + 1 + 150))
# The usage service delivers records every second; wait for them, so the page is complete.
delivered=0
for _ in $(seq 100); do
  answer="$(api GET "/v1/keys/$key_id/usage")"
  if [[ "${answer%% *}" == 200 ]]; then
    delivered="$("$python" -c 'import json,sys; print(json.load(sys.stdin)["totals"]["total"])' <<<"${answer#* }")"
  fi
  ((delivered >= sent)) && break
  sleep 0.1
done
((delivered >= sent)) || log "only $delivered of the $sent demo requests reached the control plane in 10 s; see $LOG_DIR/envoy.log"

# Envoy's JSON access log, live.
tail -n 0 -F "$LOG_DIR/envoy.log" 2>/dev/null | grep --line-buffered '^{' &
pids+=("$!")
names+=("log-tail")

if [[ -n "${TOLLGATE_ADMIN_TOKEN:-}" ]]; then
  admin_hint='$TOLLGATE_ADMIN_TOKEN'
  signin="the admin token you set in TOLLGATE_ADMIN_TOKEN"
else
  admin_hint="\$(cat $DATA_DIR/admin-token)"
  signin="the admin token in $DATA_DIR/admin-token (cat $DATA_DIR/admin-token)"
fi
bad_key="tg_AbCdEfGhIjKlMnOpQrStUvWxYz01234561huhoC"
cat <<EOF

Tollgate is running.

Dashboard   http://$CONTROL_PLANE_ADDR/ui
  sign in with $signin
  the demo key's usage: http://$CONTROL_PLANE_ADDR/ui/keys/$key_id/usage

  workspace  $workspace_id (plan pro: 50 requests per second, 2,000 per minute)
  key        $key_id ($key_alias; may GET and POST under /v1/)
  secret     $secret

Demo traffic sent with the key, now on its usage page ($delivered of $sent requests recorded):
  $passes passed (200), $denials denied (403: DELETE is not allowed for this key),
  a burst of 150 at once: $burst_passed passed, $burst_limited rate-limited (429: plan pro's 50 per second)

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

Envoy stats: http://127.0.0.1:$ADMIN_PORT/stats?filter=tollgate   Logs: $LOG_DIR/
Press Ctrl-C to stop.

EOF

# --- foreground --------------------------------------------------------------------------------
while true; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      printf 'error: %s exited; see %s/\n' "${names[$i]}" "$LOG_DIR" >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
