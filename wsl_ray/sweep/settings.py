"""A sweep's own settings, one value built once from the command line (`wsl_ray.tune`) and
taken by the sweep's functions instead of the parsed flags, and the part of them that the
sweep's record keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..utils.paths import absolute
from .experiment import FIXED_SETTINGS, Experiment


@dataclass(frozen=True)
class SweepSettings:
    """What the sweep's flags decide, beside its search space.

    experiment         where it runs: --name under --storage
    metric             the validation metric the search selects on (a resume: the recorded one)
    num_trials         trials the search runs
    scheduler          "asha" (stops poor trials at its rungs) or "fifo" (runs every trial out)
    grace              ASHA's grace period in epochs (None: the space's eval_every)
    concurrency        trials at once (None: as many as the cluster fits)
    max_failures       retries of a failed trial from its last checkpoint (-1: forever)
    seed               the seed of the search and of the trials
    workers_per_trial  Ray Train workers per trial
    cpus_per_trial     CPUs per worker
    gpus_per_trial     GPUs per worker (None: one each when the cluster has GPUs, else none)
    optuna_storage     the study's storage (None: a journal in the experiment folder)
    resume             continue the experiment instead of starting it
    confirm            top configurations the confirmation runs again (0: none)
    seeds              new seeds per confirmed configuration
    warm_start         an earlier sweep whose trials the study starts with (None: none)
    warm_start_top     how many of its best points the search tries first
    plan               measure one trial and print the sweep's cost instead of running it
    baseline           evaluate the default point's untrained encoder first
    wait_for_resources seconds to wait for the cluster to fit one trial before stopping
    seed_spread        --plan: a configuration's std over seeds, in points (None: measured
                       by an earlier confirmation)
    detect             --plan: also the seeds that detect a gain of this many points (None: not)
    """

    experiment: Experiment
    metric: str
    num_trials: int
    scheduler: str
    grace: int | None
    concurrency: int | None
    max_failures: int
    seed: int
    workers_per_trial: int
    cpus_per_trial: float
    gpus_per_trial: float | None
    optuna_storage: str | None
    resume: bool
    confirm: int
    seeds: int
    warm_start: str | None
    warm_start_top: int
    plan: bool
    baseline: bool
    wait_for_resources: float
    seed_spread: float | None
    detect: float | None


def recorded_settings(settings: SweepSettings) -> dict[str, Any]:
    """The sweep's settings for its record: those a --resume keeps, and the resources."""
    return {k: getattr(settings, k) for k in FIXED_SETTINGS} | {
        "workers_per_trial": settings.workers_per_trial,
        "gpus_per_trial": settings.gpus_per_trial,
        "cpus_per_trial": settings.cpus_per_trial,
        "optuna_storage": settings.optuna_storage,
        "warm_start": absolute(settings.warm_start) if settings.warm_start else None,
        "warm_start_top": settings.warm_start_top,
    }
