# The two commands: `make run` (train on the bundled data) and `make test` (the test suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 4200

.PHONY: run test test-fast lint bench bench-scale bench-tune server clean-cache setup screenshots docs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/foldflow run $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check flows tasks tests data benchmarks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The pure and in-process tests (a few minutes), for the edit-test loop; `make test` runs all.
test-fast: $(STAMP)
	$(BIN)/ruff check flows tasks tests data benchmarks
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check flows tasks tests data benchmarks

bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench $(ARGS)

# 2 000 / 20 000 / 200 000 synthetic rows, fit vs foldflow with 1 and 2 workers (a few minutes).
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale $(ARGS)

# foldflow tune with and without pruning: 30 trials x 5 folds x 100 epochs (many minutes).
bench-tune: $(STAMP)
	$(BIN)/python -m benchmarks.tune $(ARGS)

# The docs' UI screenshots (docs/*.png) (needs: apt-get install chromium chromium-driver).
screenshots: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[docs]"
	$(BIN)/python docs/screenshot.py $(ARGS)

# The documentation site (mkdocs.yml, docs/) into build/site; --strict: a broken link fails.
docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# A local Prefect server on 127.0.0.1; state in ./.prefect unless PREFECT_HOME says otherwise.
server: $(STAMP)
	@export PREFECT_HOME="$${PREFECT_HOME:-$(CURDIR)/.prefect}"; \
	echo "Prefect UI:      http://127.0.0.1:$(PORT)"; \
	echo "In other shells: export PREFECT_API_URL=http://127.0.0.1:$(PORT)/api"; \
	echo "State kept in:   $$PREFECT_HOME"; \
	export PREFECT_UI_API_URL="http://127.0.0.1:$(PORT)/api"; \
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PORT)

clean-cache:
	rm -rf .foldflow output
