# ivr-vault. `make run` and `make test` work on a fresh machine: each creates .venv and
# installs what it needs when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run run-ha test test-unit lint docs bench clean

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
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

# What is derived from code: docs/configuration.md (from service/settings.py and the compose
# files). tests/unit/devtools/test_config_doc.py fails while it is stale.
docs: $(STAMP)
	$(BIN)/python -m service.devtools.config_doc --write

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
