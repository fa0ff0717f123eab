# Every target that needs Python depends on the venv, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint fixtures clean conformance

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
	rm -rf $(VENV) $(AM_VENV) .pytest_cache .ruff_cache demo-out

# The AutoModel conformance suite: AutoModel's own ChatDataset vs dataprep, row by row (tests/test_automodel_conformance.py).
# .venv-automodel holds nemo-automodel 0.7.0 on a CPU torch (built once, reused) with dataprep installed editable.
AM_VENV := .venv-automodel
AM_STAMP := $(AM_VENV)/.installed

$(AM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(AM_VENV)
	$(AM_VENV)/bin/pip install -q --upgrade pip
	# torch 2.13.0 is a CPU wheel here; triton 3.9.0 breaks importing AutoModel's LoRA module, 3.8.0 works
	$(AM_VENV)/bin/pip install -q torch==2.13.0
	$(AM_VENV)/bin/pip install -q nemo-automodel==0.7.0 triton==3.8.0
	$(AM_VENV)/bin/pip install -q -e '.[dev]'
	touch $(AM_STAMP)

conformance: $(AM_STAMP)
	$(AM_VENV)/bin/python -m pytest -q -m automodel tests/test_automodel_conformance.py -p no:cacheprovider
