# ivr-vault. `make run` and `make test` work on a fresh machine: each creates .venv and
# installs what it needs when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run run-ha test test-unit lint bench bench-scale clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

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
# BENCH_HA=0: without make run-ha's topology; BENCH_SCALE=0: without "Accounts at scale",
# which `make bench-scale` runs alone (1,000,000 accounts per engine; BENCH_QUICK=1: 100,000).
# wrk is a Debian package: installed here when missing (needs root), else say how.
bench: $(STAMP)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && (apt-get update -qq && apt-get install -y -qq wrk); } \
	  || { echo "make bench: needs wrk: sudo apt-get install -y wrk" >&2; exit 1; }
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale

clean:
	rm -rf .dev .pytest_cache .mypy_cache .ruff_cache
