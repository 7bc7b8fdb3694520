"""The training loop: schedules, exact resume, divergence handling."""

import json
import math

import pytest
import torch
from helpers import Crash, CrashingReporter, our_lrs, reference_lrs, tiny_config

from wsl_ray.config import Config
from wsl_ray.training.checkpoint import CHECKPOINT_FILE
from wsl_ray.training.loop import NonFiniteLossError, eval_epochs, train


def test_warmup_and_step_schedule_equal_the_reference():
    cfg = Config(epoch=30, lr=2e-3, drop=[10, 4], drop_gamma=0.2)
    milestones = [cfg.epoch - d for d in cfg.drop]
    ref = reference_lrs(cfg, 40, lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, 0.2))
    ours = our_lrs(cfg, 40)
    assert ours[0] == pytest.approx(2e-3 / 500) and ours[249] == pytest.approx(1e-3)
    assert ours == pytest.approx(ref, rel=1e-9)
    assert ours[-1] == pytest.approx(2e-3 * 0.04)


@pytest.mark.parametrize("drop", [[50, 25], [8, 2], [10]])
def test_step_schedule_with_drops_before_the_start_equals_the_reference(drop):
    cfg = Config(epoch=8, lr=1e-3, drop=drop, lr_warmup=False)
    milestones = [cfg.epoch - d for d in drop]
    sched = lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, 0.2)  # noqa: E731
    assert our_lrs(cfg, 5) == pytest.approx(reference_lrs(cfg, 5, sched), rel=1e-9)


@pytest.mark.parametrize("tmult", [1, 2])
def test_cosine_schedule_equals_the_reference(tmult):
    cfg = Config(epoch=40, lr=1e-3, lr_step="cos", T0=10, Tmult=tmult, eta_min=1e-5)
    sched = lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, 10, tmult, 1e-5)  # noqa: E731
    ref, ours = reference_lrs(cfg, 50, sched), our_lrs(cfg, 50)
    assert ours[:500] == pytest.approx(ref[:500], rel=1e-9)  # warm-up
    # afterwards the reference sets, after each step, the lr of the next iteration from
    # the current fractional epoch: its lr lags ours by one iteration
    for i in range(501, len(ours) - 1):
        assert ours[i] == pytest.approx(ref[i + 1], rel=1e-6, abs=1e-12)


def test_no_schedule_and_no_warmup_keep_the_lr():
    cfg = Config(epoch=3, lr=5e-3, lr_step="none", lr_warmup=False)
    assert set(our_lrs(cfg, 10)) == {5e-3}


def test_eval_epochs_follow_the_reference():
    cfg = Config(epoch=200, eval_every=20, eval_every_drop=5, drop=[50, 25])
    epochs = sorted(eval_epochs(cfg))
    assert epochs[:7] == [20, 40, 60, 80, 100, 120, 140]
    assert epochs[7:10] == [155, 160, 165] and epochs[-1] == 200
    assert sorted(eval_epochs(Config(epoch=7, eval_every=3, drop=[]))) == [3, 6, 7]
    assert sorted(eval_epochs(Config(epoch=7, eval_every=3))) == [3, 6, 7]  # drop beyond the run


@pytest.mark.parametrize("method", ["w_mse", "byol"])
def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path, tiny_data, method):
    straight = train(tiny_config(tmp_path / "a", method=method), data=tiny_data, progress=False)
    cfg = tiny_config(tmp_path / "b", method=method)
    with pytest.raises(Crash):
        train(cfg, CrashingReporter(cfg.out, at_epoch=2), data=tiny_data, progress=False)
    resumed = train(cfg, resume_from=tmp_path / "b", data=tiny_data, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2, 3]  # epoch 3 only, after the resume
    expected = [
        json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["loss"] for m in lines] == expected
    assert resumed["loss"] == straight["loss"] and resumed["acc_knn"] == straight["acc_knn"]


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_the_last_checkpoint(
    tmp_path, tiny_data
):
    cfg = tiny_config(tmp_path, lr_step="step", drop=[2], drop_gamma=1e30, epoch=3)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*lower --lr"):
        train(cfg, data=tiny_data, progress=False)
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 1
    assert all(math.isfinite(m["loss"]) for m in saved["history"])


def test_final_epoch_is_evaluated_and_summarised(tmp_path, tiny_data):
    summary = train(tiny_config(tmp_path, epoch=1), data=tiny_data, progress=False)
    assert summary["epochs"] == 1
    assert 0 <= summary["acc_knn"] <= 1 and summary["best_acc"] == summary["acc"]
    assert (tmp_path / CHECKPOINT_FILE).exists()


def test_eval_init_reports_the_untrained_encoder_the_run_starts_from(tmp_path, tiny_data):
    from wsl_ray.methods import get_method
    from wsl_ray.training.evaluate import evaluate

    cfg = tiny_config(tmp_path, epoch=1, eval_init=True, seed=3)
    summary = train(cfg, data=tiny_data, progress=False)
    torch.manual_seed(3)
    untrained = evaluate(get_method("w_mse")(cfg, 32), tiny_data, torch.device("cpu"), seed=3)
    assert {k: summary[f"init_{k}"] for k in untrained} == untrained
    assert torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)["init_metrics"] == untrained


def test_the_test_entry_point_evaluates_a_checkpoint_with_its_config(tmp_path, tiny_data, capsys):
    from wsl_ray.test import main

    train(tiny_config(tmp_path, epoch=1, subset=256), data=tiny_data, progress=False)
    assert main(["--fname", str(tmp_path), "--clf", "knn", "--knn", "3"]) == 0
    out = capsys.readouterr().out
    assert "256 train" in out and "features of size 64" in out and "3-NN" in out
