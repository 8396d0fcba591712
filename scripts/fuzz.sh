#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/) with libFuzzer and SanitizerCoverage on the stable toolchain
# and runs each for FUZZ_SECONDS (fuzz/README.md). Prints per target: executions, exec/s, corpus
# size and findings; exits non-zero when a target found a crash (its input is left in
# fuzz/artifacts/<target>/ to be fixed and copied to fuzz/regressions/<target>/).
#
#   scripts/fuzz.sh [TARGET...]     FUZZ_SECONDS=60 by default; FUZZ_BUILD_ONLY=1 only builds
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ="$ROOT/fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TARGET_DIR="$ROOT/target/fuzz"
HOST="$(rustc -vV | sed -n 's/^host: //p')"
BIN="$TARGET_DIR/$HOST/fuzz"
ALL_TARGETS=(api_key plugin_config header_map lookup_answer record_batch ingest_payload api_query)
TARGETS=("${@:-${ALL_TARGETS[@]}}")
[ $# -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")

# What `cargo fuzz build -s none` passes, without nightly: SanitizerCoverage through LLVM's
# pass and options (stable rustc flags), `--cfg fuzzing`, no sanitizer (-Zsanitizer is nightly).
# Overflow checks and debug assertions come from the `fuzz` profile (Cargo.toml). An explicit
# --target keeps RUSTFLAGS off build scripts and proc macros (they run without libFuzzer).
export RUSTFLAGS="--cfg fuzzing -C passes=sancov-module \
-C llvm-args=-sanitizer-coverage-level=4 \
-C llvm-args=-sanitizer-coverage-inline-8bit-counters \
-C llvm-args=-sanitizer-coverage-pc-table \
-C llvm-args=-sanitizer-coverage-trace-compares \
-C force-frame-pointers=yes"
echo "==> building the fuzz targets (target/fuzz, profile fuzz)"
cargo build --manifest-path "$ROOT/Cargo.toml" -p tollgate-fuzz --features libfuzzer --bins \
  --profile fuzz --target "$HOST" --target-dir "$TARGET_DIR" --quiet
[ "${FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0

found=0
summary=()
for target in "${TARGETS[@]}"; do
  corpus="$TARGET_DIR/corpus/$target"
  artifacts="$FUZZ/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  log="$TARGET_DIR/$target.log"
  seeds=("$FUZZ/corpus/$target")
  [ -d "$FUZZ/regressions/$target" ] && seeds+=("$FUZZ/regressions/$target")
  dict=()
  [ -f "$FUZZ/dict/$target.dict" ] && dict=(-dict="$FUZZ/dict/$target.dict")
  echo "==> $target: ${SECONDS_PER_TARGET}s"
  before=$(find "$artifacts" -type f | wc -l)
  # The working corpus (target/fuzz/corpus/<target>) grows; the committed seeds are read only.
  status=0
  "$BIN/$target" "$corpus" "${seeds[@]}" "${dict[@]}" -max_total_time="$SECONDS_PER_TARGET" \
    -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  size=$(find "$corpus" -type f | wc -l)
  after=$(find "$artifacts" -type f | wc -l)
  findings=$((after - before))
  if [ "$status" -ne 0 ] && [ "$findings" -eq 0 ]; then findings=1; fi
  line=$(printf '%-16s executions %10s  exec/s %7s  corpus %5s  findings %s' \
    "$target" "${runs:-?}" "${rate:-?}" "$size" "$findings")
  echo "$line"
  summary+=("$line")
  if [ "$findings" -ne 0 ]; then
    found=1
    echo "    log: $log" >&2
    grep -m1 -A12 -E '^(thread .* panicked|==[0-9]+== ERROR)' "$log" >&2 || tail -20 "$log" >&2
  fi
done
echo "==> fuzzing summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${summary[@]}"
exit "$found"
