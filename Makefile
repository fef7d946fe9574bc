# switchyard: the README's commands.
#   make demo   a release end to end on local stand-ins for the cloud
#   make test   install what is missing, then fmt check, clippy, every test
#   make bench  side-by-side benchmarks, reported as ratios
#   make ci     what CI runs

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
export CARGO_TERM_COLOR ?= never

.PHONY: all build release deps test test-unit ci fmt fmt-check lint bench demo schema clean-demo

all: build

## deps: tools the tests start for real (moto's server, the aws CLI, a JUnit parser, openssl, curl, HAProxy)
deps:
	@command -v moto_server >/dev/null 2>&1 && $(PYTHON) -c 'import flask, flask_cors, yaml' 2>/dev/null \
	  || { echo "installing moto[server]"; $(PIP) install --quiet 'moto[server]>=5,<6'; }
	@command -v aws >/dev/null 2>&1 || { echo "installing awscli"; $(PIP) install --quiet 'awscli>=1.32,<2'; }
	@$(PYTHON) -c 'import junitparser' 2>/dev/null || { echo "installing junitparser"; $(PIP) install --quiet 'junitparser>=3'; }
	@command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 \
	  || { echo "installing openssl and curl"; apt-get update -qq && apt-get install -y -qq openssl curl >/dev/null; }
	@command -v haproxy >/dev/null 2>&1 || command -v /usr/sbin/haproxy >/dev/null 2>&1 \
	  || { echo "installing haproxy"; apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }

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

## test: everything; the integration tests start moto_server on loopback themselves
test: deps fmt-check lint build
	@set -o pipefail; $(CARGO) test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0) }' target/test-output.txt

ci: test

## bench: release builds, measured side by side in one run
bench: deps
	$(CARGO) build --workspace --bins --release
	$(CARGO) run --release -p switchyard-tests --bin bench

demo: deps
	$(CARGO) build --workspace --bins --release
	bash pipelines/demo/run.sh

## schema: regenerate schema/state-v1.schema.json from the Rust types
schema:
	SWITCHYARD_BLESS=1 $(CARGO) test -p switchyard --lib state::store::tests::json_schema_is_the_published_one
