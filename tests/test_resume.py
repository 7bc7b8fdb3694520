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
from pathlib import Path

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
        "2",
        "--epochs",
        "2",
        "--eval_every",
        "1",
        "--scheduler",
        "fifo",
        "--concurrency",
        "1",
        "--metric",
        "rankme",
    )
    monkeypatch.setenv(EXIT_HOOK, "1")  # the driver dies right after trial 1's final result
    proc = sweep(cluster, space, tmp_path, *flags, wait=False)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 99, out[-3000:]
    before = trial_epochs(tmp_path)  # the driver died: none of its lines may be flushed yet
    assert len(before) == 1, before
    record = json.loads((tmp_path / "t" / "sweep.json").read_text())  # written before trial 1
    assert (record["metric"], record["settings"]["num_trials"]) == ("rankme", 2), record
    monkeypatch.delenv(EXIT_HOOK)

    out = sweep(cluster, space, tmp_path, "--resume", "--scheduler", "fifo")
    assert "removing the stale lock" in out  # the dead driver's
    assert "| rank | trial | status | rankme |" in out  # selected on the recorded metric
    assert not (tmp_path / "t" / "driver.lock").exists()
    rows = results(tmp_path)
    assert len(rows) == 2, rows
    for r in rows:  # every trial ends with its metrics: the one it died in, and the one after
        assert r["status"] == "TERMINATED" and r["epochs"] == 2, r
        assert r["val_acc_knn"] is not None and r["test_acc_knn"] is not None, r
    after = trial_epochs(tmp_path)
    assert after == {trial: [1, 2] for trial in after}, after  # each epoch once, none lost
    for trial in after:  # Tune's CSV log too, and the Parquet history
        assert _csv_epochs(tmp_path / "t" / trial / "progress.csv") == [1, 2], trial
    assert [[h["epoch"] for h in r["history"]] for r in rows] == [[1, 2]] * 2, rows
    experiment = tmp_path / "t"
    study = optuna.load_study(
        study_name="t",
        storage=JournalStorage(JournalFileBackend(str(experiment / "optuna.journal"))),
    )  # the crash left trial 1 RUNNING in the study: --resume closed it
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    assert len(list(experiment.glob("train-*"))) == 2  # Train runs under their experiment
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


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def _csv_epochs(path):
    import csv

    with open(path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_the_journal_keeps_the_epochs_a_checkpoint_covers(tmp_path):
    from wsl_ray.training.journal import Journal

    journal = Journal(str(tmp_path / "train-x" / "history.jsonl"))
    journal.start(0)
    for epoch in (1, 2, 3):  # epoch 3 reported, then a kill before its checkpoint
        journal.append({"epoch": epoch, "loss": 1.0 / epoch})
    Journal(journal.uri).start(2)  # the resumed run, from the checkpoint of epoch 2
    assert [m["epoch"] for m in _lines(tmp_path / "train-x" / "history.jsonl")] == [1, 2]
    assert not list(tmp_path.glob("train-x/*.tmp*"))  # written atomically


@pytest.mark.parametrize("where", ["resume", "retry"])
def test_a_restarted_trial_keeps_each_epoch_once(tmp_path, where):
    """`resume`: a new driver session, whose staging folder is empty; the storage's copy of
    result.json stopped at epoch 1 (the kill came before the next copy), progress.csv was
    never copied. `retry`: the same session restarts a failed trial from its checkpoint of
    epoch 2, while its staging files hold epoch 3 already. Either way the Train run resumes
    at epoch 3, and its journal holds epochs 1-3 (with test metrics, which Tune never sees)."""
    from types import SimpleNamespace

    import pyarrow.fs

    from wsl_ray.sweep.history import HistoryKeeper
    from wsl_ray.training.journal import journal_uri

    experiment, staging = tmp_path / "exp", tmp_path / "staging" / "trial_abc_1"
    stored = experiment / "trial_abc_1"
    stored.mkdir(parents=True)
    journal = [
        {"epoch": e, "loss": 1.0 / e, "rankme": 2.0, "val_acc_knn": e / 10, "test_acc": 0.5}
        for e in (1, 2, 3)
    ]
    Path(journal_uri(str(experiment), "abc")).parent.mkdir()
    Path(journal_uri(str(experiment), "abc")).write_text(
        "".join(json.dumps(m) + "\n" for m in journal)
    )
    tune_line = {"epoch": 1, "loss": 1.0, "rankme": 2.0, "val_acc_knn": 0.1, "trial_id": "abc"}
    if where == "resume":
        (stored / "result.json").write_text(json.dumps(tune_line) + "\n")
    else:
        staging.mkdir(parents=True)
        lines = [tune_line | {"epoch": e, "val_acc_knn": e / 10} for e in (1, 2, 3)]
        (staging / "result.json").write_text("".join(json.dumps(m) + "\n" for m in lines))
        rows = "".join(f"{e},{1 / e},2.0,{e / 10},abc\n" for e in (1, 2, 3))
        (staging / "progress.csv").write_text("epoch,loss,rankme,val_acc_knn,trial_id\n" + rows)
    trial = SimpleNamespace(
        trial_id="abc",
        local_path=str(staging),
        storage=SimpleNamespace(
            storage_filesystem=pyarrow.fs.LocalFileSystem(),
            trial_fs_path=str(stored),
            experiment_fs_path=str(experiment),
        ),
    )
    keeper = HistoryKeeper()
    keeper.on_trial_start(0, [], trial)
    logger = open(staging / "result.json", "a")  # Tune's JSON logger opens it after us
    first = {"epoch": 3, "loss": 0.33, "rankme": 2.0, "val_acc_knn": 0.3, "config": {"lr": 1}}
    keeper.on_trial_result(0, [], trial, first)
    logger.write(json.dumps(first) + "\n")  # and appends the new result to the same file
    logger.close()
    keeper.on_trial_result(0, [], trial, first | {"epoch": 4})  # later results: untouched
    got = _lines(staging / "result.json")
    assert [m["epoch"] for m in got] == [1, 2, 3]
    assert got[1]["val_acc_knn"] == 0.2 and not [k for m in got for k in m if "test_" in k]
    assert _csv_epochs(staging / "progress.csv") == [1, 2]  # its logger adds epoch 3 next
    header = (staging / "progress.csv").read_text().splitlines()[0].split(",")
    assert "epoch" in header and "config" not in header


def test_results_read_each_epoch_once_and_fill_gaps_from_the_journal(tmp_path):
    from wsl_ray.sweep.results import collect_rows
    from wsl_ray.training.journal import journal_uri

    trial = tmp_path / "exp" / "trial_abc_00001_lr=1"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text(json.dumps({"epoch": 3, "method": "w_mse"}))
    line = {"epoch": 1, "rankme": 2.0, "val_acc_knn": 0.1, "trial_id": "abc"}
    lines = [line, line | {"val_acc_knn": 0.15}, line | {"epoch": 3, "val_acc_knn": 0.3}]
    (trial / "result.json").write_text("".join(json.dumps(m) + "\n" for m in lines))
    Path(journal_uri(str(tmp_path / "exp"), "abc")).parent.mkdir()
    Path(journal_uri(str(tmp_path / "exp"), "abc")).write_text(
        json.dumps({"epoch": 2, "rankme": 2.0, "val_acc_knn": 0.2, "test_acc": 0.9}) + "\n"
    )
    (row,) = collect_rows(str(tmp_path / "exp"))
    history = [(h["epoch"], h["val_acc_knn"], h["test_acc"]) for h in row["history"]]
    assert history == [(1, 0.15, None), (2, 0.2, None), (3, 0.3, None)]
    assert row["status"] == "TERMINATED" and row["epochs"] == 3


def test_a_trial_cut_short_by_the_driver_is_interrupted_not_stopped(tmp_path):
    """ASHA's stop and a driver kill both leave a trial short of its budget; only a trial
    that Tune saw end has ended.json (HistoryKeeper.on_trial_complete)."""
    from types import SimpleNamespace

    import pyarrow.fs

    from wsl_ray.sweep.history import HistoryKeeper
    from wsl_ray.sweep.results import collect_rows
    from wsl_ray.training.journal import journal_uri

    for number, trial_id in ((1, "aaa"), (2, "bbb")):
        folder = tmp_path / "exp" / f"trial_{trial_id}_{number:05d}"
        folder.mkdir(parents=True)
        (folder / "params.json").write_text(json.dumps({"epoch": 4}))
        line = {"epoch": 2, "rankme": 2.0, "val_acc_knn": 0.3, "trial_id": trial_id}
        (folder / "result.json").write_text(json.dumps(line) + "\n")
        Path(journal_uri(str(tmp_path / "exp"), trial_id)).parent.mkdir()
        Path(journal_uri(str(tmp_path / "exp"), trial_id)).write_text(json.dumps(line) + "\n")
    storage = SimpleNamespace(
        storage_filesystem=pyarrow.fs.LocalFileSystem(),
        trial_fs_path=str(tmp_path / "exp" / "trial_aaa_00001"),
    )
    stopped = SimpleNamespace(trial_id="aaa", storage=storage, last_result={"epoch": 2})
    HistoryKeeper().on_trial_complete(0, [], stopped)  # ASHA stopped it; trial bbb: a kill
    statuses = {r["trial_id"]: r["status"] for r in collect_rows(str(tmp_path / "exp"))}
    assert statuses == {"aaa": "STOPPED", "bbb": "INTERRUPTED"}


def test_a_sigterm_after_ray_starts_still_runs_finally(cluster):
    """ray.init installs Ray's fatal-signal handler for SIGTERM (it aborts: exit -6, no
    `finally`); init_ray puts ours back, so a terminated driver stops its Ray and says so."""
    code = (
        "import os, signal, time\n"
        "from wsl_ray.utils.ray_start import init_ray\n"
        f"init_ray({cluster!r})\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "finally:\n"
        "    print('finally ran', flush=True)\n"
    )
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 143 and "finally ran" in done.stdout, done.stderr[-2000:]
