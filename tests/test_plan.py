"""The plan's trial-epochs against a simulation of Ray's ASHA on synthetic results.

The simulation follows AsyncHyperBandScheduler (one bracket, stop_last_trials) step by step,
for trials run one after another: a result at max_t stops the trial; any other result is
compared with the highest milestone at or below its epoch whose rung has not recorded the
trial (stop when below the rung's median, numpy's percentile as Ray's; an empty rung lets
it pass), then recorded there; a trial's end records its last result once more, as Tune's
stop_trial calls on_trial_complete. No Ray.
"""

import math
import random

import numpy as np
import pytest

from wsl_ray.config import Config
from wsl_ray.sweep.asha import expected_left, planned_trial_epochs, sweep_decisions

# (trials, epochs, eval_every, grace, skips): the demo's; a rung every epoch; results that skip
# a rung (Ray compares them with it later, when it also holds the last results of trials it
# stopped, which are low: more than 1 in 2 pass there); budgets that are no power of two
CASES = [
    (4, 4, 2, 2, False),
    (8, 16, 1, 1, False),
    (6, 12, 2, 1, True),
    (7, 9, 3, 2, False),
    (5, 6, 1, 4, False),
]


def simulate(trials: int, epochs: int, evaluated: list[int], grace: int, value) -> int:
    """Trial-epochs of a sequential ASHA sweep; value(trial, epoch) is a result's metric."""
    count = int(math.log(epochs / grace) / math.log(2) + 1)
    rungs = [(grace * 2**k, {}) for k in reversed(range(count))]

    def on_result(trial: int, epoch: int, metric: float) -> bool:  # True: stop
        for milestone, recorded in rungs:
            if epoch < milestone or trial in recorded:
                continue
            stop = bool(recorded) and metric < np.percentile(list(recorded.values()), 50)
            recorded[trial] = metric
            return stop
        return False

    total = 0
    for trial in range(trials):
        for epoch in evaluated:
            metric = value(trial, epoch)
            if epoch >= epochs or on_result(trial, epoch, metric):
                break
        on_result(trial, epoch, metric)  # on_trial_complete
        total += epoch
    return total


def config(epochs: int, eval_every: int) -> Config:
    return Config(epoch=epochs, eval_every=eval_every, drop=[])


@pytest.mark.parametrize("trials, epochs, eval_every, grace, skips", CASES)
def test_the_plans_trial_epochs_are_those_of_asha(trials, epochs, eval_every, grace, skips):
    cfg = config(epochs, eval_every)
    evaluated = sorted({e for e in range(1, epochs + 1) if e % eval_every == 0} | {epochs})
    plan = planned_trial_epochs(trials, cfg, grace, "asha")
    # each trial worse than all before it: every trial that can be stopped is
    assert simulate(trials, epochs, evaluated, grace, lambda t, e: -t) == plan["lower bound"]
    # each better than all before: none stops
    assert simulate(trials, epochs, evaluated, grace, lambda t, e: t) == plan["upper bound"]
    assert plan["upper bound"] == trials * epochs
    # independent results: on average 1 in 2 later arrivals passes each rung
    rng = random.Random(0)
    runs = [
        simulate(trials, epochs, evaluated, grace, lambda t, e: rng.random()) for _ in range(1000)
    ]
    mean, se = np.mean(runs), np.std(runs) / math.sqrt(len(runs))
    if skips:  # results that skip a rung are judged at a later one: the plan's expected
        # figure may fall short of the mean (32 against 32.6 +- 0.2 for 6 trials), never above
        assert plan["expected"] < mean + 4 * se and mean < plan["upper bound"], (mean, se, plan)
    else:
        assert abs(mean - plan["expected"]) < 4 * se + 1e-9, (mean, se, plan)


def test_fifo_and_a_grace_at_the_budget_stop_nothing():
    cfg = config(4, 2)
    assert set(planned_trial_epochs(3, cfg, 2, "fifo").values()) == {12}
    assert set(planned_trial_epochs(3, cfg, 4, "asha").values()) == {12}
    assert sweep_decisions(cfg, 4, "asha") == []


def test_a_running_trials_expected_epochs_left():
    decisions = sweep_decisions(config(16, 1), 1, "asha")  # rungs at 1, 2, 4, 8
    assert decisions == [1, 2, 4, 8]
    assert expected_left(8, 16, decisions) == 8  # past its last rung: it runs to the end
    assert expected_left(4, 16, decisions) == 4 + 8 / 2
    assert expected_left(0, 16, decisions) == 1 + 1 / 2 + 2 / 4 + 4 / 8 + 8 / 16


def test_the_live_eta_counts_running_and_waiting_trials_at_their_seconds_per_epoch(capsys):
    from types import SimpleNamespace

    from wsl_ray.sweep.progress import SweepProgress

    decisions = sweep_decisions(config(4, 2), 2, "asha")  # a rung at epoch 2
    now = [0.0]
    progress = SweepProgress(4, 4, decisions, 13 / 4, clock=lambda: now[0])
    a = SimpleNamespace(trial_id="a", status="RUNNING", last_result={})
    b = SimpleNamespace(trial_id="b", status="RUNNING", last_result={})
    progress.on_trial_start(0, [a, b], a)
    progress.on_trial_start(0, [a, b], b)
    now[0] = 60.0
    progress.on_trial_result(0, [a, b], a, {"epoch": 2})  # a: 30 s per epoch
    assert "no epoch timed" not in capsys.readouterr().out
    a.last_result = {"epoch": 2}
    now[0] = 80.0
    progress.on_trial_result(0, [a, b], b, {"epoch": 2})  # b: 40 s per epoch
    # a and b are past their rung: 2 epochs each; 2 trials not started: 13/4 each
    left = 2 + 2 + 2 * 13 / 4
    line = capsys.readouterr().out
    assert f"({left:.1f} trial-epochs at 35.0 s, 2 running)" in line, line
    assert f"about {left * 35 / 2 / 60:.1f} min left" in line and "a 30.0, b 40.0" in line


def test_the_plans_duration_gives_one_figure_when_its_bounds_print_alike():
    from wsl_ray.sweep.bill import duration_range

    assert duration_range(420, 300, 540) == "about 7.0 min (between 5.0 min and 9.0 min)"
    assert duration_range(420, 420, 420) == "about 7.0 min"
    assert duration_range(421, 419, 422) == "about 7.0 min"  # 7.0 min both: one figure
    assert duration_range(30, 30.2, 29.9) == "about 30 s"
