VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fgvr-installed

.PHONY: install demo test test-all lint bench clean

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

install: $(STAMP)

## the main job on an embedded default: tiny Idefics2 + synthetic CUB, both scorings, offline
demo: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/harness demo

## the default test suite (excludes tests marked slow)
test: $(STAMP)
	bash scripts/install_browser.sh
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

test-all: $(STAMP)
	bash scripts/install_browser.sh
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m "not gpu"

lint: $(STAMP)
	$(VENV)/bin/ruff check harness tasks models leaderboard finedefics_train tests benchmarks

bench: $(STAMP)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache
