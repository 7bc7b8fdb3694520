"""The sweep's live ETA: a Tune callback that prints, at each result, the time left and each
running trial's seconds per epoch.

A trial's seconds per epoch: the driver's wall time between two of its results divided by the
epochs between them (its first result counts from the trial's start, start-up included).
The time left: the expected trial-epochs left, times the mean seconds per epoch of the
running trials, divided by the number of trials running now (at least one). The expected
trial-epochs left: for each running trial `plan.expected_left` from its last epoch (it passes
each rung still ahead with probability 1/2), for each trial not started yet the plan's
expected trial-epochs per trial (wsl_ray.sweep.plan); none for a trial that ended.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from ray import tune

from .asha import expected_left
from .bill import duration


class SweepProgress(tune.Callback):
    """Prints `eta: ...` lines (see the module docstring) for a sweep of `trials` trials of
    `epochs` epochs whose ASHA decides at `decisions`, `per_trial` expected trial-epochs
    each."""

    def __init__(
        self,
        trials: int,
        epochs: int,
        decisions: list[int],
        per_trial: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trials, self.epochs, self.decisions = trials, epochs, decisions
        self.per_trial = per_trial
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # trial id -> (time, epoch) last seen
        self.seconds_per_epoch: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        self._last[trial.trial_id] = (self.clock(), _epoch(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info
    ) -> None:
        epoch = result.get("epoch")
        if not isinstance(epoch, int):
            return
        now = self.clock()
        then, before = self._last.get(trial.trial_id, (now, epoch))
        if epoch > before:
            self.seconds_per_epoch[trial.trial_id] = (now - then) / (epoch - before)
        self._last[trial.trial_id] = (now, epoch)
        print(self.line(trials, trial.trial_id, epoch), flush=True)

    def line(self, trials: list, current: str, epoch: int) -> str:
        """The ETA line, with `current` (at `epoch`, its result just in) counted as running."""
        running = [t for t in trials if t.status == "RUNNING" or t.trial_id == current]
        epochs = {t.trial_id: epoch if t.trial_id == current else _epoch(t) for t in running}
        waiting = self.trials - sum(t.status != "PENDING" or t.trial_id == current for t in trials)
        left = sum(expected_left(e, self.epochs, self.decisions) for e in epochs.values())
        left += max(0, waiting) * self.per_trial
        timed = {i: self.seconds_per_epoch[i] for i in epochs if i in self.seconds_per_epoch}
        rates = list(timed.values()) or list(self.seconds_per_epoch.values())
        if not rates:
            return f"eta: {left:.1f} trial-epochs left; no epoch timed yet"
        at = statistics.fmean(rates)
        seconds = left * at / max(1, len(running))
        return (
            f"eta: about {duration(seconds)} left ({left:.1f} trial-epochs at {at:.1f} s, "
            f"{len(running)} running) | s/epoch: "
            + ", ".join(f"{i} {s:.1f}" for i, s in timed.items())
        )


def _epoch(trial: Any) -> int:
    """The epoch of a trial's last result (0 before its first)."""
    return (trial.last_result or {}).get("epoch", 0) or 0
