# The two commands of the README, plus helpers. Everything runs from a local virtualenv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test lint bench fuzz-api clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	$(BIN)/forlop run

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/forlop bench

# schemathesis over /openapi.json, the long run, on SQLite and PostgreSQL (figures: docs/reliability.md)
fuzz-api: $(STAMP)
	$(BIN)/python -m tools.fuzz_api $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
