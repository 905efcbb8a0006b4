VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fgvr-installed

.PHONY: install demo test test-all lint bench clean remote-env check-remote-env

$(STAMP): pyproject.toml scripts/install.sh scripts/lib.sh scripts/constraints.txt
	VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

## the main job on an embedded default: tiny Idefics2 + synthetic CUB, both scorings, offline
demo: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/harness demo

## the default test suite (excludes tests marked slow)
test: $(STAMP)
	bash scripts/install_browser.sh
	bash scripts/install_postgres.sh
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

test-all: $(STAMP)
	bash scripts/install_browser.sh
	bash scripts/install_postgres.sh
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not gpu"

## ruff (lint and format) and the layering contracts (pyproject.toml [tool.importlinter])
LINT_PATHS := harness tasks models leaderboard finedefics_train tests benchmarks
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/lint-imports

## the environment for the remote-code models (transformers 4.40.2); see models/README-remote-code.md
remote-env:
	VENV=.venv-remote bash scripts/install_remote_env.sh

## the remote-code wrappers' tests, run inside that environment (the stand-ins load under the real ranges)
check-remote-env: remote-env
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 .venv-remote/bin/python -m pytest -q tests/test_models_remote.py

bench: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-remote .pytest_cache
