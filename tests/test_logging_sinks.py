"""wandb and TensorBoard sinks: one wandb run per training run, resumed, step = epoch."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import Crash, CrashingReporter, offline_runs, tiny_config

from wsl_ray.sweep import trial as wsl_trial
from wsl_ray.sweep.experiment import Experiment
from wsl_ray.training.loop import train
from wsl_ray.training.sinks import WANDB_ID_FILE, open_sinks


def crash(cfg, epoch, data, **kwargs):
    """Trains until the report of `epoch` raises Crash, as a killed process would stop. The
    traceback is dropped (pytest.raises would keep its frames, and with them the wandb run,
    alive; a dead process keeps nothing)."""
    try:
        train(cfg, CrashingReporter(cfg.out, at_epoch=epoch), data=data, progress=False, **kwargs)
    except Crash:
        return
    raise AssertionError("no crash")


def test_a_retried_attempt_continues_its_wandb_run_after_the_checkpoint(tmp_path, tiny_data):  # noqa: F811
    cfg = tiny_config(tmp_path / "trial", wandb="proj")
    log_dir = tmp_path / "experiment"

    def sinks():
        return open_sinks(cfg, 0, run_id="3277852f", group="wmse", log_dir=log_dir)

    first = sinks()
    crash(cfg, 2, tiny_data, sinks=first)
    first.close()  # as the dying worker's wandb service would flush
    time.sleep(1.1)  # offline folders are named by the second they start
    train(cfg, resume_from=Path(cfg.out), data=tiny_data, progress=False, sinks=sinks())
    runs = offline_runs(log_dir)
    assert [(r["id"], r["group"]) for r in runs] == [("3277852f", "wmse")] * 2
    assert all(r["folder"].endswith("-3277852f") for r in runs)
    assert [r["steps"] for r in runs] == [[1, 2], [3]]  # the retry logs only epoch 3


def test_a_direct_run_keeps_one_wandb_id_and_resumes_it(tmp_path):
    """Two processes, as a user runs them: 1 epoch, then --resume to 2 epochs."""
    flags = [
        "--dataset",
        "shapes",
        "--subset",
        "256",
        "--arch",
        "resnet18_w8",
        "--bs",
        "64",
        "--emb",
        "8",
        "--w_size",
        "32",
        "--head_size",
        "32",
        "--lr_step",
        "none",
        "--no_lr_warmup",
        "--w_eps",
        "0.01",
        "--eval_every",
        "100",
        "--out",
        str(tmp_path),
        "--wandb",
        "proj",
    ]
    env = {k: v for k, v in os.environ.items() if k != "WSL_RAY_CACHE"} | {
        "WANDB_MODE": "offline",
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    for extra in (["--epoch", "1"], ["--epoch", "2", "--resume"]):
        done = subprocess.run(
            [sys.executable, "-m", "wsl_ray.train", *flags, *extra],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        time.sleep(1.1)  # offline folders are named by the second they start
    run_id = (tmp_path / WANDB_ID_FILE).read_text().strip()
    runs = offline_runs(tmp_path)
    assert [r["id"] for r in runs] == [run_id] * 2 and runs[0]["group"] == ""
    assert [r["steps"] for r in runs] == [[1], [2]]
    config = {item.key: json.loads(item.value_json) for item in runs[0]["config"].update}
    assert config["lr"] == 1e-3 and config["arch"] == "resnet18_w8"  # the whole config
    # and TensorBoard events, on by default for direct runs, one file per process
    assert [step for step, _ in tensorboard_scalars(tmp_path)["train/loss"]] == [1, 2]


def test_the_trial_function_passes_its_id_and_the_sweep_name_to_wandb(monkeypatch, tmp_path):
    seen = {}

    class Trainer:
        def fit(self):
            pass

    def make_trainer(cfg, **kwargs):
        seen.update(kwargs)
        return Trainer()

    class Context:
        def get_trial_id(self):
            return "ab12cd34_7"

        def get_trial_dir(self):
            return str(tmp_path / "trial_ab12cd34_7")

    monkeypatch.setattr(wsl_trial, "make_trainer", make_trainer)
    monkeypatch.setattr(wsl_trial, "EvaluationReportCallback", lambda *a: None)  # needs a session
    monkeypatch.setattr(wsl_trial.tune, "get_context", lambda: Context())
    experiment = Experiment.at(str(tmp_path / "sweeps" / "wmse"))
    wsl_trial.make_trial(1, 0, 1, experiment, "acc_knn")({"lr": 1e-3})
    assert seen["name"] == "train-ab12cd34_7"
    assert seen["wandb"] == {"run_id": "ab12cd34_7", "group": "wmse", "log_dir": experiment.path}


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Per tag, the (step, value) pairs of the event files in folder (TFRecord framing:
    length u64, its crc u32, the Event proto, its crc u32)."""
    from tensorboardX.proto import event_pb2

    logged: dict[str, list] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        raw, pos = path.read_bytes(), 0
        while pos < len(raw):
            (length,) = struct.unpack("<Q", raw[pos : pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(raw[pos + 12 : pos + 12 + length])
            pos += 16 + length
            for value in event.summary.value:
                logged.setdefault(value.tag, []).append((event.step, value.simple_value))
    return logged


def test_tensorboard_events_hold_the_epoch_scalars(tmp_path, tiny_data):  # noqa: F811
    cfg = tiny_config(tmp_path, epoch=2, eval_every=1)
    train(cfg, data=tiny_data, progress=False, sinks=open_sinks(cfg, tensorboard=True))
    logged = tensorboard_scalars(tmp_path)
    history = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (
        ("train/loss", "loss"),
        ("train/lr", "lr"),
        ("eval/acc_knn", "acc_knn"),
        ("train/images_per_s", "images_per_s"),
        ("eval/acc", "acc"),
        ("train/whiten_retries", "whiten_retries"),
    ):
        assert logged[tag] == [(m["epoch"], pytest.approx(m[key], rel=1e-6)) for m in history]


def test_without_tensorboardx_the_run_goes_on_with_a_note(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_tensorboardx(name, *args, **kwargs):
        if name == "tensorboardX":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboardx)
    sinks = open_sinks(tiny_config(tmp_path), tensorboard=True)
    assert sinks.sinks == [] and "tensorboardX is not installed" in capsys.readouterr().err
