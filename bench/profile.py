#!/usr/bin/env python3
"""Deterministic profile (`make bench-profile`): Envoy's CPU instructions per request, counted by
valgrind's callgrind, for A (no filter), C (Envoy's native api_key_auth + local_ratelimit),
N (empty wasm filter), B and its diagnostic variants, B-native (the same filter core as an Envoy
dynamic module), and each kind of proxy-wasm host call alone (bench/hostcall-probe).

Instruction counts do not depend on what else the machine is doing, so this explains the
throughput ratios of `make bench` (which are wall-clock, and noisy on a shared machine): on one
core, throughput is inversely proportional to instructions per request. Runs take ~1 min each
(Envoy under valgrind); the whole profile ~15 min. Results: a table on stdout and
bench/results/<stamp>-profile/profile.json.
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("BENCH_QUICK", "1")  # bench.py settings: few cold keys, no long phases
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROOT = bench.ROOT
PROBE_WASM = ROOT / "target/bench-hostcall-probe.wasm"
MEASURE_S = 4
# PROFILE_ONLY=B,B-nousage: only these configurations (and no host-call probes unless "probes"
# is listed), for iterating on one change. Names: A, C, N, B, the B variants below, B-native,
# B-baseline (with BENCH_BASELINE_WASM), probes.
ONLY = {x for x in os.environ.get("PROFILE_ONLY", "").split(",") if x}
REPEAT = 10  # each probed host call is made this many times per request

B_VARIANTS = {
    "B": {},
    "B-downstream-ip": {"client_ip": {"source": "downstream"}},
    "B-nousage": {"usage": False},
    "B-nolimits": {"headers": "none", "secret": True},
    "B-bare": {"usage": False, "ip_blocking": False, "headers": "none", "secret": True},
}
# (probe operation, what it is)
PROBES = [
    ("headers", "read the request header map (SDK get_map_bytes)"),
    ("header", "read one request header"),
    ("address", "read property source.address"),
    ("status", "read response :status"),
    ("shared_get", "read a shared-data key"),
    ("clock", "read the clock"),
    ("add", "add a request header"),
    ("set", "replace a request header"),
    ("remove", "remove a request header"),
    ("response_set", "replace a response header"),
    ("set_property", "set a filter-state property (on_log)"),
]


def stat(admin_port: int, name: str) -> int:
    s, body, _ = bench.request(admin_port, "GET", f"/stats?filter={name}", timeout=60)
    text = body if isinstance(body, str) else json.dumps(body)
    for line in str(text).splitlines():
        k, _, v = line.partition(": ")
        if k == name:
            return int(v)
    return 0


def measure(yaml_text: str, name: str, out: Path, key: str) -> dict:
    """Envoy under callgrind: warm up, zero the counters, drive MEASURE_S of load, dump."""
    admin_port, port = bench.free_port(), bench.free_port()
    yaml_text = yaml_text.replace("{{ADMIN}}", str(admin_port)).replace("{{PORT}}", str(port))
    cfg = out / f"envoy-{name}.yaml"
    cfg.write_text(yaml_text)
    prefix = out / f"callgrind-{name}"
    for f in glob.glob(f"{prefix}*"):
        os.unlink(f)
    argv = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file",
            f"--callgrind-out-file={prefix}.out", bench.envoy_binary(), "-c", str(cfg),
            "--concurrency", "1", "--base-id", str(bench.BASE_ID + 500), "--log-level", "warn"]
    log = open(out / f"envoy-{name}.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "TOLLGATE_FILTER_TOKEN": bench.FILTER_TOKEN},
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if bench.request(admin_port, "GET", "/ready", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                bench.die(f"Envoy {name} under valgrind exited; see {log.name}")
            time.sleep(0.5)
        else:
            bench.die(f"Envoy {name} under valgrind not ready after 300 s")
        url = f"http://127.0.0.1:{port}{bench.PATH}"
        wrk = ["wrk", "-t1", "-c4", "--timeout=30s", "-H", f"x-api-key: {key}"]
        subprocess.run(wrk + ["-d3s", url], capture_output=True)  # warm-up (V8 tiers up)
        time.sleep(1.5)
        before = stat(admin_port, "http.bench_ingress.downstream_rq_total")
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True)
        r = subprocess.run(wrk + [f"-d{MEASURE_S}s", url], capture_output=True, text=True)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True)
        after = stat(admin_port, "http.bench_ingress.downstream_rq_total")
        total = 0
        for f in glob.glob(f"{prefix}.out.*"):
            for line in open(f, errors="replace"):
                if line.startswith("summary:") or line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
        # The two stat reads are admin requests, not listener requests.
        requests = after - before
        non2xx = "Non-2xx" in r.stdout
        if requests <= 0 or total <= 0:
            bench.die(f"{name}: no requests measured ({requests}) or no callgrind dump")
        return {"instructions_per_request": total / requests, "requests": requests,
                "non_2xx": non2xx}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            os.unlink(f"/dev/shm/envoy_shared_memory_{(bench.BASE_ID + 500) * 10}")
        except OSError:
            pass


def placeholders(y: str) -> str:
    """Configs are rendered with admin port 1 and listener port 2; measure() picks free ones."""
    return (y.replace("port_value: 1 }", "port_value: {{ADMIN}} }")
             .replace("port_value: 2 }", "port_value: {{PORT}} }"))


def probe_yaml(cp, info, ops: str) -> str:
    y = placeholders(bench.render("N", cp, info, 1, 2))
    y = y.replace(str(ROOT / "target/bench-empty-filter.wasm"), str(PROBE_WASM))
    marker = '                  code: { local: { filename: "' + str(PROBE_WASM) + '" } }\n'
    if marker not in y:
        bench.die("probe: could not place the configuration in filters-n.yaml's rendering")
    return y.replace(marker, marker + (
        "                configuration:\n"
        '                  "@type": type.googleapis.com/google.protobuf.StringValue\n'
        f'                  value: "{ops}"\n'))


def main() -> None:
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if not bench.shutil.which(tool):
            bench.die(f"{tool} not found (make bench-profile installs it)")
    if not PROBE_WASM.exists() and (not ONLY or "probes" in ONLY):
        bench.die(f"{PROBE_WASM} missing: run 'make bench-profile'")
    if not bench.NATIVE_SO.exists() and (not ONLY or "B-native" in ONLY):
        bench.die(f"{bench.NATIVE_SO} missing: run 'make native'")
    out = ROOT / "bench/results" / (time.strftime("%Y%m%d-%H%M%S") + "-profile")
    out.mkdir(parents=True, exist_ok=True)
    if bench.NATIVE_SO.exists():
        bench.snapshot_native(out)  # B-native loads a private copy (see bench.NATIVE_MODULE)
    bench.COLD_KEYS = 2
    cp = bench.ControlPlane(out)
    info = bench.setup_tollgate(cp, [])
    results: dict = {"configs": {}, "host_calls": {}}
    try:
        def run(name, y, key):
            if ONLY and name not in ONLY and not (name.startswith("probe") and "probes" in ONLY):
                return None
            res = measure(y, name, out, key)
            results["configs" if not name.startswith("probe") else "host_calls"][name] = res
            bench.log(f"{name:18s} {res['instructions_per_request']:10.0f} instructions/request"
                      f"  ({res['requests']} requests)")
            return res

        def render_b(kind, variant=None):
            return placeholders(bench.render(kind, cp, info, 1, 2, variant))

        run("A", render_b("A"), info["secret"])
        # C's credential list holds the same key (bench's filters-c.yaml renders it in).
        run("C", render_b("C"), info["secret"])
        run("N", render_b("N"), info["secret"])
        for name, v in B_VARIANTS.items():
            v = dict(v)
            key = info["nolimits_secret"] if v.pop("secret", False) else info["secret"]
            run(name, render_b("B", v), key)
        # The native build of the same core: B's plugin configuration, the dynamic module.
        run("B-native", render_b("B-native"), info["secret"])
        if bench.BASELINE_WASM:
            # BENCH_BASELINE_WASM=path: B with another commit's build, for a before/after.
            wasm = str(Path(bench.BASELINE_WASM).resolve())
            run("B-baseline", render_b("B", {"wasm": wasm}), info["secret"])
        base = run("probe-none", probe_yaml(cp, info, ""), info["secret"])
        for op, what in PROBES:
            res = run(f"probe-{op}", probe_yaml(cp, info, f"{op}={REPEAT}"), info["secret"])
            if res is None or base is None:
                continue
            res["per_call"] = (res["instructions_per_request"]
                               - base["instructions_per_request"]) / REPEAT
            res["what"] = what
    finally:
        bench.cleanup()
    c = {k: v["instructions_per_request"] for k, v in results["configs"].items()}
    lines = ["", "instructions per request (Envoy process, callgrind; lower is faster):"]
    for name, v in c.items():
        vs_n = (f"   {c['N'] / v:5.2f} x N's throughput   {v - c['N']:+9.0f} vs N"
                if "N" in c else "")
        lines.append(f"  {name:18s} {v:10.0f}{vs_n}")
    lines.append("")
    if "N" in c and "B" in c:
        lines.append(f"profile B/N throughput {c['N'] / c['B']:.2f}   (instructions N / B)")
    if "A" in c and "B" in c:
        lines.append(f"profile B/A throughput {c['A'] / c['B']:.2f}")
    if "B" in c and "B-baseline" in c:
        lines.append(f"profile B/B-baseline throughput {c['B-baseline'] / c['B']:.2f}"
                     f"   (this build against {bench.BASELINE_WASM})")
    if "B" in c and "B-nousage" in c:
        lines.append(f"profile B/B-nousage throughput {c['B-nousage'] / c['B']:.2f}"
                     "   (what usage records cost)")
    for other, target in (("A", 0.85), ("C", 1.00)):
        if other in c and "B-native" in c:
            v = c[other] / c["B-native"]
            lines.append(f"profile B-native/{other} throughput {v:.2f}   (instructions {other} / "
                         f"B-native; target >= {target:g})  {'PASS' if v >= target else 'MISS'}")
    if "N" in c and "A" in c and results["host_calls"]:
        lines.append("")
        lines.append(f"cost of one host call (instructions; N itself costs {c['N'] - c['A']:.0f} "
                     "over A):")
    for op, what in PROBES:
        r = results["host_calls"].get(f"probe-{op}")
        if r and "per_call" in r:
            lines.append(f"  {op:14s} {r['per_call']:8.0f}   {what}")
    text = "\n".join(lines)
    print(text)
    (out / "report.txt").write_text(text + "\n")
    (out / "profile.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
