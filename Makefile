# Two commands set up a fresh machine: `make demo` (install, then the main job on the
# embedded data) and `make test` (install, then lint and the test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export RAY_USAGE_STATS_ENABLED ?= 0
export WANDB_MODE ?= offline

.PHONY: install demo test lint

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: install
	$(PY) -m wsl_ray.train --dataset shapes --arch resnet18_w16 --epoch 8 --bs 128 \
		--emb 16 --w_size 64 --w_eps 0.01 --lr 3e-3 --lr_step none --eval_every 4 \
		--head_size 256 --out runs/demo

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest
