# Two commands set up a fresh machine: `make demo` (install, then the main job on the
# embedded data) and `make test` (install, then lint and the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED ?= 0
export WANDB_MODE ?= offline

.PHONY: install demo test test-fast test-slow lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,dashboard]'
	touch $@

DEMO := --space wmse --dataset shapes --num_trials 4 --epochs 4 --eval_every 2 --grace 2 \
	--seed 1 --baseline --confirm 1 --seeds 3 --storage runs/sweeps --name demo \
	--set arch=resnet18_w8 subset=5000 bs=128 emb=32 head_size=256 crop_s0=0.5 \
	lr_warmup=false lr_step=none

demo: install  # a small W-MSE sweep on shapes: its plan, then the sweep, confirmed over 3 seeds
	rm -rf runs/sweeps/demo runs/sweeps/demo-confirm
	$(PY) -m wsl_ray.tune $(DEMO) --plan
	$(PY) -m wsl_ray.tune $(DEMO)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

test-fast: lint  # the suite without the tests that start Ray: the inner loop while editing
	$(PY) -m pytest -m 'not ray and not slow'

test-slow: install  # the learning checks that do not fit the suite's 15 minutes
	$(PY) -m pytest -m slow
