# ivr-vault. `make run` and `make test` work on a fresh machine: each creates .venv and
# installs what it needs when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run run-ha test test-unit lint bench clean lock

# The runtime dependencies exactly as requirements.lock pins them (the image's), so the
# tests run what ships; the dev tools resolve within them.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# requirements.lock afresh: ivr-vault alone in a clean venv, its closure pinned (then
# `make test` reinstalls to match).
lock:
	rm -rf $(VENV)-lock && $(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet .
	{ grep '^#' requirements.lock; $(VENV)-lock/bin/python -m pip freeze \
	  | grep -vi '^ivr[-_]vault' | awk -F'==' '{n=tolower($$1); gsub(/[_.]/,"-",n); print n"=="$$2}' \
	  | LC_ALL=C sort -t= -k1,1; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(VENV)-lock build  # setuptools builds in the tree

run: $(STAMP)
	$(BIN)/ivr-vault dev

# Past one machine, on loopback: 3 OpenBao nodes (Raft), 2 backends, 2 webhooks behind Caddy
# on 127.0.0.1:8080, a shared store. Needs caddy (and PostgreSQL's server binaries).
run-ha: $(STAMP)
	$(BIN)/ivr-vault dev --ha

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast half: no Vault, no processes (tests/integration/ is marked `integration`).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service tests
	$(BIN)/mypy

# The benchmark (bench/RESULTS.md). BENCH_QUICK=1: a short run (~4 min) into bench/.work/;
# BENCH_HA=0: without make run-ha's topology.
# wrk is a Debian package: installed here when missing (needs root), else say how.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq wrk); } \
	  || { echo "make bench: needs wrk: sudo apt-get install -y wrk" >&2; exit 1; }
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf .dev .pytest_cache .mypy_cache .ruff_cache
