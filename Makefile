# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   - set up, then run the main job on the built-in data
#   make test   - set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokzoo-installed

.PHONY: setup demo test clean

$(STAMP): pyproject.toml plugins/semhitok/pyproject.toml plugins/baselines/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]" -e plugins/semhitok -e plugins/baselines
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo plugins
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo train vq-tiny run_dir=runs/demo/vq-tiny

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
