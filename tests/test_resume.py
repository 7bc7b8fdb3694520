"""Resuming leaves no mess and loses no trial.

The end-to-end test kills the sweep's driver at the worst moment, deterministically: the
test hook WSL_RAY_TEST_EXIT_AFTER_FINAL=N makes the driver exit right after trial N's final
result, whose checkpoint is on storage by then, before Tune records the trial as finished.
The rest are unit tests of the pieces: metrics.jsonl truncated to the checkpoint's epoch,
stale `.tmp<pid>` files removed only when their writer is gone, the NaN message.
"""

import json
import os
import subprocess
import sys

import optuna
import pytest
from helpers import SPACE, results, sweep, trial_epochs
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from wsl_ray.sweep.tuner import EXIT_HOOK
from wsl_ray.training.loop import LocalReporter, NonFiniteLossError, _check_finite
from wsl_ray.utils.atomic import atomic_save, remove_stale_tmp


def test_driver_dead_after_a_final_checkpoint_resumes_every_trial(cluster, tmp_path, monkeypatch):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    flags = (
        "--num_trials",
        "3",
        "--epochs",
        "2",
        "--eval_every",
        "1",
        "--scheduler",
        "fifo",
        "--concurrency",
        "1",
    )
    monkeypatch.setenv(EXIT_HOOK, "2")  # the driver dies right after trial 2's final result
    proc = sweep(cluster, space, tmp_path, *flags, wait=False)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 99, out[-3000:]
    before = trial_epochs(tmp_path)  # trial 2's lines may not be flushed: the driver died
    assert len(before) == 2 and [1, 2] in before.values(), before
    monkeypatch.delenv(EXIT_HOOK)

    sweep(cluster, space, tmp_path, "--resume", "--scheduler", "fifo")
    rows = results(tmp_path)
    assert len(rows) == 3, rows
    for r in rows:  # every trial ends with its metrics
        assert r["status"] == "TERMINATED" and r["epochs"] == 2, r
        assert r["val_acc_knn"] is not None and r["test_acc_knn"] is not None, r
    after = trial_epochs(tmp_path)
    for trial, epochs in before.items():  # finished trial 1 kept; trial 2 not trained again
        number = trial.split("_")[2]  # trial_<id>_<number>_<params>
        assert after[trial] == epochs if number == "1" else after[trial][-1] == 2, after
        assert after[trial].count(1) <= 1, after
    experiment = tmp_path / "t"
    study = optuna.load_study(
        study_name="t",
        storage=JournalStorage(JournalFileBackend(str(experiment / "optuna.journal"))),
    )  # the crash left trial 2 RUNNING in the study: --resume closed it
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    assert len(list(experiment.glob("train-*"))) == 3  # Train runs under their experiment
    assert not list(tmp_path.glob("train-*"))


def test_resume_truncates_metrics_to_the_checkpoint(tmp_path):
    reporter = LocalReporter(tmp_path)
    for epoch in (1, 2, 3):  # the checkpoint is of epoch 2; epoch 3 was reported, then a kill
        reporter.report({"epoch": epoch, "loss": 1.0 / epoch}, None)
    reporter.start(2)
    reporter.report({"epoch": 3, "loss": 0.25}, None)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(m["epoch"], m["loss"]) for m in lines] == [(1, 1.0), (2, 0.5), (3, 0.25)]


def test_only_leftovers_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"checkpoint.pt.tmp{int(dead.stdout)}"
    live = tmp_path / f"data.pt.tmp{os.getpid()}"  # a running writer
    other = tmp_path / "notes.tmpx"
    for path in (stale, live, other):
        path.write_text("partial")
    atomic_save({"epoch": 1}, tmp_path / "checkpoint.pt")
    assert (tmp_path / "checkpoint.pt").exists()
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_tmp(tmp_path) == []


@pytest.mark.parametrize(
    "saved,phrase",
    [
        (3, "the last good checkpoint, of epoch 3, is in /runs/x"),
        (0, "no checkpoint was written before it"),
    ],
)
def test_a_nan_stop_says_which_checkpoint_exists(saved, phrase):
    reporter = LocalReporter.__new__(LocalReporter)
    reporter.location = "/runs/x"
    with pytest.raises(NonFiniteLossError, match=phrase) as err:
        _check_finite(float("nan"), 4, 9, reporter, saved)
    assert "epoch 5, iteration 10" in str(err.value) and "lower --lr" in str(err.value)
