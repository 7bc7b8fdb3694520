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
	$(PY) -m pip install -q --no-compile -e '.[test,dashboard]'  # Python compiles what it imports
	touch $@

# Every trial runs its 4 epochs (FIFO: a confirmation always has a second configuration to
# compare), two at a time with one thread each; with no early stopping and 4 trials inside
# TPE's random start-up, neither the points nor the results depend on which trial ends first,
# so two runs print the same tables. The warm-up + cosine schedule is sized to the run
# (BENCHMARKS.md, "Seed spread of short CPU runs by regime").
DEMO := --space wmse --dataset shapes --num_trials 4 --epochs 4 --eval_every 2 \
	--scheduler fifo --concurrency 2 --seed 1 --baseline --confirm 1 --seeds 3 \
	--storage runs/sweeps --name demo \
	--set arch=resnet18_w8 subset=5000 bs=128 emb=32 head_size=256 crop_s0=0.5 \
	warmup_epochs=1 lr_step=cos_step

demo: install  # a small W-MSE sweep on shapes: its plan, then the sweep, confirmed over 3 seeds
	rm -rf runs/sweeps/demo runs/sweeps/demo-confirm
	$(PY) -m wsl_ray.tune $(DEMO) --plan
	$(PY) -m wsl_ray.tune $(DEMO)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint  # two workers: the Ray tests in order on one (tests/conftest.py), the rest on the other
	$(PY) -m pytest -n 2 --dist loadgroup

test-fast: lint  # the suite without the tests that start Ray: the inner loop while editing
	$(PY) -m pytest -m 'not ray and not slow'

test-slow: install  # the learning checks that do not fit the suite's 15 minutes
	$(PY) -m pytest -m slow
