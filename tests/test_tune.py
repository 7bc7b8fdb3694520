"""Sweeps on a real local Ray cluster (a `ray start` head on loopback, 2 CPUs).

The sweeps run `python -m wsl_ray.tune` as a separate driver process, as a user would,
so that a test can kill it, or kill a trial's Train worker, while it runs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wsl_ray.config import Config, validate_config

RAY = str(Path(sys.executable).parent / "ray")
# a throwaway test cluster on loopback: no usage stats, no token (a fresh `ray.init()` on this
# machine may have left one behind that a later cluster would otherwise demand)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
SPACE = """
config:
  method: w_mse
  dataset: shapes
  arch: resnet18_w8
  head_size: 64
  bs: 128
  subset: 512
  lr_warmup: false
  w_eps: 0.01
  ckpt_every: 1
params:
  lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}
  emb: {distribution: categorical, choices: [8, 16]}
  w_ratio: {distribution: categorical, choices: [2, 4]}
derived: {w_size: emb * w_ratio}
first: {lr: 3.0e-3, emb: 16, w_ratio: 4}
"""


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    return path


def sweep(cluster, space_file, storage, *args, wait=True):
    cmd = [
        sys.executable, "-m", "wsl_ray.tune", "--space", str(space_file),
        "--storage", str(storage), "--name", "t", *args,
    ]  # fmt: skip
    env = dict(os.environ, RAY_ADDRESS=cluster, **RAY_ENV)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if not wait:
        return proc
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def results(storage):
    return pq.read_table(storage / "t" / "results.parquet").to_pylist()


def trial_epochs(storage):
    """Per Tune trial folder, the epochs it reported, in order."""
    epochs = {}
    for result_file in (storage / "t").glob("*/result.json"):
        lines = result_file.read_text().splitlines()
        epochs[result_file.parent.name] = [json.loads(x)["epoch"] for x in lines]
    return epochs


def wait_for(condition, timeout=400):
    start = time.time()
    while not condition():
        assert time.time() - start < timeout, "timed out"
        time.sleep(1)


def test_asha_sweep_finishes_and_stops_weak_trials_early(cluster, space_file, tmp_path):
    out = sweep(
        cluster, space_file, tmp_path, "--num_trials", "6", "--epochs", "4",
        "--eval_every", "1", "--grace", "1", "--scheduler", "asha", "--baseline",
    )  # fmt: skip
    rows = results(tmp_path)
    assert len(rows) == 6 and not any(r["status"] == "ERROR" for r in rows)
    assert any(r["status"] == "STOPPED" and r["epoch"] < 4 for r in rows), rows
    assert any(r["epoch"] == 4 for r in rows)
    for r in rows:  # every sampled config satisfies the constraints
        cfg = Config(**{k[7:]: v for k, v in r.items() if k.startswith("config/")} | {"drop": []})
        validate_config(cfg)
        assert cfg.w_size in (16, 32, 64) and cfg.bs % cfg.w_size == 0 and cfg.w_size > cfg.emb
    first = rows[0]
    assert (first["config/lr"], first["config/emb"], first["config/w_size"]) == (3e-3, 16, 64)
    assert "default config" in out and "results.parquet" in out
    assert "untrained encoder (default config): acc_knn" in out


def test_a_failed_trial_is_retried_from_its_checkpoint(cluster, space_file, tmp_path):
    import ray
    from ray.util.state import list_actors

    proc = sweep(
        cluster, space_file, tmp_path, "--num_trials", "1", "--epochs", "8",
        "--eval_every", "1", "--scheduler", "fifo", "--max-failures", "2", wait=False,
    )  # fmt: skip
    wait_for(lambda: any(len(e) >= 1 for e in trial_epochs(tmp_path).values()))
    os.environ.update(RAY_ENV)
    ray.init(address=cluster)
    try:
        alive = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
        wait_for(lambda: list_actors(filters=alive), timeout=60)
        os.kill(list_actors(filters=alive)[0].pid, signal.SIGKILL)  # the training process dies
    finally:
        ray.shutdown()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    ((trial, epochs),) = trial_epochs(tmp_path).items()
    assert list((tmp_path / "t" / trial).glob("error.*"))  # the trial did fail once
    assert epochs[-1] == 8 and epochs.count(1) == 1  # resumed, not restarted from scratch
    assert results(tmp_path)[0]["status"] == "TERMINATED"


def test_missing_data_says_how_to_point_at_it(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "wsl_ray.tune", "--space", "wmse", "--data_dir", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert str(tmp_path) in out.stderr and "--dataset shapes" in out.stderr
