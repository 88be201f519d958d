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

# the demo's run folders are its own: a re-run starts them afresh
demo: $(STAMP)
	rm -rf runs/clip runs/vqgan-tiny runs/vilau-tiny runs/semhitok-tiny runs/bench
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo plugins
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo train clip
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo train vqgan-tiny
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo train vilau-tiny
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo train semhitok-tiny
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo bench --tokenizers semhitok-tiny,vilau-tiny,vqgan-tiny

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
