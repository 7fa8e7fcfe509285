# herder: the two commands are `make up` and `make test`; everything else is for developers.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install chromium bytecode up test chaos js lint format typecheck bench openapi docs lock clean

# scripts/install_venv.py installs the locked set with uv (a few seconds of CPU where pip
# takes a minute), handing it pip's index settings, and falls back to pip if uv fails.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python scripts/install_venv.py $(BIN)/python requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with herder and its locked dependencies

# An editable install leaves herder's own modules uncompiled, and with
# PYTHONDONTWRITEBYTECODE set (as on CI machines) every start would compile them again:
# a third of the agent's start-up. Only changed files are recompiled.
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q src/herder

up: bytecode ## run a manager (127.0.0.1:8020) and an agent working for it (127.0.0.1:8010), data in ./.herder
	$(BIN)/herder up --data-dir ./.herder --agent-port 8010 --manager-port 8020

# Most tests wait on real servers and processes, not on the CPU: four workers on two
# cores finish the suite in well under half the time of one (pytest-xdist; 521 s against
# 601 s with three, on a fresh clone of the 2026-12-07 suite). PYTEST_WORKERS=0: one.
PYTEST_WORKERS ?= 4

# The browser tests (tests/browser) drive Debian's chromium through Playwright: the
# browser comes from apt (CI runs as root), never from `playwright install`.
CHROMIUM_STAMP := $(VENV)/.chromium-stamp

# It needs nothing of the venv but its directory, so that `make test` installs both at once.
$(CHROMIUM_STAMP):
	test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null)
	mkdir -p $(VENV) && touch $(CHROMIUM_STAMP)

chromium: $(CHROMIUM_STAMP) ## Debian's chromium, for the browser tests

# The venv and chromium are installed side by side (one waits on the network and the disk,
# the other on the CPU), and mypy runs beside the suite (whose workers mostly wait): on a
# fresh clone both cut what CI waits for, which must stay under ten minutes on two cores.
test: ## lint, type-check, check generated files, run the whole suite
	$(MAKE) --no-print-directory -j2 $(STAMP) $(CHROMIUM_STAMP)
	$(BIN)/ruff check src tests bench scripts docs/examples clients/js/test
	$(BIN)/ruff format --check src tests bench scripts docs/examples clients/js/test
	$(BIN)/python scripts/gen_openapi.py --check
	$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & typecheck=$$!; \
	$(BIN)/pytest -n $(PYTEST_WORKERS); suite=$$?; \
	wait $$typecheck; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.log; \
	test $$suite -eq 0 && test $$typed -eq 0

# The chaos suite's long form (tests/chaos, docs/operations.md "Chaos suite"): three
# managers on one PostgreSQL and six agents in network namespaces (needs root and
# iproute2), a dozen kills, stalls and partitions under load; minutes. `make test` runs
# its short form. PostgreSQL: HERDER_TEST_POSTGRES_URL, or the local server's `test`.
CHAOS_POSTGRES_URL ?= $(or $(HERDER_TEST_POSTGRES_URL),postgresql://postgres@127.0.0.1:5432/test)

chaos: $(STAMP) ## the chaos suite's long form (root): kills, stalls and partitions of three managers
	HERDER_CHAOS=long HERDER_TEST_POSTGRES_URL=$(CHAOS_POSTGRES_URL) $(BIN)/pytest -s -m chaos -o faulthandler_timeout=1500 tests/chaos

# herder.js (clients/js): its node tests and tsc check; `make test` runs them too
# (tests/test_js_client.py, which runs `npm ci` only when node_modules is out of date).
js: $(STAMP) ## herder.js's own tests and type check
	cd clients/js && npm ci --no-audit --no-fund && npm test && npm run typecheck

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src tests bench scripts docs/examples clients/js/test
	$(BIN)/ruff format --check src tests bench scripts docs/examples clients/js/test
	$(BIN)/mypy

typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench scripts docs/examples clients/js/test
	$(BIN)/ruff format src tests bench scripts docs/examples clients/js/test

openapi: $(STAMP) ## regenerate docs/api/openapi.json and docs/api/agent.md
	$(BIN)/python scripts/gen_openapi.py

# Benchmark 7 measures the router beside nginx under wrk: both from apt, as chromium is.
BENCH_TOOLS_STAMP := $(VENV)/.bench-tools-stamp

$(BENCH_TOOLS_STAMP):
	(test -x /usr/bin/wrk && test -x /usr/sbin/nginx) || (apt-get update -qq && apt-get install -y -qq --no-install-recommends wrk nginx-light >/dev/null)
	mkdir -p $(VENV) && touch $(BENCH_TOOLS_STAMP)

bench: bytecode $(BENCH_TOOLS_STAMP) ## run every benchmark against herder and its peers (see bench/README.md)
	$(BIN)/python bench/run_all.py

lock: ## re-resolve the locked dependencies from pyproject.toml
	rm -rf .lock-venv && $(PY) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e '.[dev]'
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^herder' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
