# Two commands do everything on a fresh machine with Python 3.11 and pip:
#   make demo   - set up, then run the main job on the built-in data
#   make test   - set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokzoo-installed

.PHONY: setup demo test test-paper clean

$(STAMP): pyproject.toml plugins/semhitok/pyproject.toml plugins/baselines/pyproject.toml plugins/zoo/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# PYTHONWARNINGS: setuptools' notice on every editable install ("be careful with folders in
	@# your working directory...") is a wall of text a newcomer can do nothing about
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e ".[test]" -e plugins/semhitok \
		-e "plugins/baselines[siglip]" -e "plugins/zoo[diffusers]"
	touch $(STAMP)

setup: $(STAMP)

# the demo's run folders are its own: a re-run starts them afresh. Tiny models
# on a 2-core CPU train faster as two one-thread jobs side by side than as one
# two-thread job, so each phase runs two trainings at once (the second one's
# log goes to runs/logs/ and its last lines are shown when it ends).
TOKZOO := HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/tokzoo
define pair  # $(call pair,shown,background): train both, fail if either fails
	$(TOKZOO) train $(2) > runs/logs/$(2).log 2>&1 & bg=$$!; \
	$(TOKZOO) train $(1); fg=$$?; wait $$bg; rc=$$?; \
	tail -n 2 runs/logs/$(2).log; \
	if [ $$rc -ne 0 ]; then cat runs/logs/$(2).log; fi; [ $$fg -eq 0 ] && [ $$rc -eq 0 ]
endef

demo: $(STAMP)
	rm -rf runs/clip runs/vqgan-tiny runs/vilau-tiny runs/semhitok-tiny runs/bench runs/logs
	mkdir -p runs/logs
	$(TOKZOO) plugins
	$(call pair,clip,vqgan-tiny)
	$(call pair,semhitok-tiny,vilau-tiny)
	HF_HUB_OFFLINE=1 $(BIN)/tokzoo bench --tokenizers semhitok-tiny,vilau-tiny,vqgan-tiny

# pytest-xdist runs the tests on every core (-n auto; each worker takes its share of
# the threads, tests/conftest.py)
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n auto

# every other preset end to end (the paper-size ones on stand-in weights at
# the real architectures; the zoo's tiny ones): one step per stage, resume,
# load elsewhere, bench; the released tokenizers at their real shapes; the
# longer reliability, webdataset and CLI end-to-end checks (every test marked
# `paper`). About 25 minutes; CI runs it after `make test`.
test-paper: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m paper -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs
