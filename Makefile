# Every target that needs Python depends on the venv, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint fixtures clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,ray]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m dataprep.demo

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check dataprep converters tests bench fixtures
	$(BIN)/ruff format --check dataprep converters tests bench fixtures

fixtures: $(STAMP)
	$(BIN)/python fixtures/make_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-out
