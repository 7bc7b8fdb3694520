"""ASHA's arithmetic: the rungs and decision epochs of Ray's AsyncHyperBandScheduler, and the
trial-epochs a sweep runs under it (for `--plan`, the live ETA and the bill).

ASHA's rungs are computed as Ray's AsyncHyperBandScheduler (one bracket) computes them:
milestones grace * rf**k for k < int(log(max_t / grace) / log(rf) + 1). A trial reports its
evaluated epochs; at a result of epoch e < max_t Ray compares it with the highest milestone
<= e whose rung has not recorded it yet (so a trial that skipped a rung is compared with it
later), and stops it when its metric is below the median of the rung's earlier values; the
first trial to reach a rung always continues; a result at max_t ends the trial. The epochs
at which a trial meets a rung (`decision_epochs`) are the same for every trial, so with N
trials reaching the first decision and n_j reaching decision j:

    n_{j+1} = 1 + (n_j - 1) * keep,   trial-epochs = sum_j n_j (d_j - d_{j-1}) + n_last (E - d_k)

keep = 0: the lower bound (every trial ASHA can stop is stopped); keep = 1: the upper bound
(none stops, N * E); keep = 1/2: the expected figure when each later arrival is above the
rung's median with probability 1/2 (it is, exactly, for independent continuous values). When
evaluations skip a rung (eval_every above the grace), Ray compares a trial with the skipped
rung at a later result, and that rung also holds the last results of the trials stopped
before (recorded when they end): those are low, so more than 1 in 2 pass there and the
expected figure is somewhat low (tests/test_plan.py simulates both cases).
"""

from __future__ import annotations

import math

from ..config import Config
from ..training.loop import eval_epochs

REDUCTION_FACTOR = 2  # the sweep's ASHA scheduler (sweep.tuner) halves the trials at each rung
KEEP = {"lower bound": 0.0, "expected": 0.5, "upper bound": 1.0}


def milestones(max_t: int, grace: int, rf: float = REDUCTION_FACTOR) -> list[float]:
    """ASHA's rung milestones (epochs), lowest first, as Ray's _Bracket computes them."""
    count = int(math.log(max_t / grace) / math.log(rf) + 1)
    return [grace * rf**k for k in range(count)]


def decision_epochs(
    result_epochs: list[int], max_t: int, grace: int, rf: float = REDUCTION_FACTOR
) -> list[int]:
    """The result epochs at which ASHA compares a trial with a rung (and may stop it)."""
    recorded: set[float] = set()
    decisions = []
    for epoch in sorted(result_epochs):
        if epoch >= max_t:  # Ray stops the trial here: it ran its budget
            break
        rung = next(
            (m for m in reversed(milestones(max_t, grace, rf)) if m <= epoch and m not in recorded),
            None,
        )
        if rung is not None:
            recorded.add(rung)
            decisions.append(epoch)
    return decisions


def sweep_trial_epochs(trials: int, epochs: int, decisions: list[int], keep: float) -> float:
    """Trial-epochs of `trials` trials of `epochs` epochs when, at each decision epoch, the
    first arrival and a fraction `keep` of the others continue (module docstring)."""
    alive, total, at = float(trials), 0.0, 0
    for decision in decisions:
        total += alive * (decision - at)
        alive, at = min(alive, 1.0 + (alive - 1.0) * keep), decision
    return total + alive * (epochs - at)


def expected_left(epoch: int, epochs: int, decisions: list[int], keep: float = 0.5) -> float:
    """A running trial's expected epochs left after `epoch` when it passes each decision
    still ahead of it with probability `keep` (the live ETA's estimate)."""
    alive, left, at = 1.0, 0.0, epoch
    for decision in (d for d in decisions if d > epoch):
        left += alive * (decision - at)
        alive, at = alive * keep, decision
    return left + alive * (epochs - at)


def sweep_decisions(cfg: Config, grace: int, scheduler: str) -> list[int]:
    """The decision epochs of a sweep of trials like `cfg` (none under FIFO)."""
    if scheduler != "asha":
        return []
    return decision_epochs(sorted(eval_epochs(cfg)), cfg.epoch, grace)


def planned_trial_epochs(trials: int, cfg: Config, grace: int, scheduler: str) -> dict[str, float]:
    """{lower bound, expected, upper bound}: the sweep's trial-epochs (module docstring)."""
    decisions = sweep_decisions(cfg, grace, scheduler)
    return {k: sweep_trial_epochs(trials, cfg.epoch, decisions, v) for k, v in KEEP.items()}
