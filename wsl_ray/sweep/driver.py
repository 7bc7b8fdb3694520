"""The sweep driver: what `python -m wsl_ray.tune` does once its flags are settings and a
search space (a resume's: the recorded one).

Holding the experiment's lock, before Ray starts: the space is checked against a trial's
resources, the warm start read, the epoch budget fixed, the data loaded once and a new
sweep's record written. Then on Ray: it waits for the cluster to fit one trial, shares the
data, and prints the plan (--plan), or runs the sweep and its confirmation. Ray stops before
the summary, which ends with the exit code.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import ray

from ..config import Config, ConfigError, defaults_note
from ..data import ImageData
from ..data.paths import absolute_paths
from ..data.shared import share_dataset
from ..utils.ray_start import init_ray
from .asha import planned_trial_epochs
from .bill import Resources
from .confirmation import plan_confirmation, plan_power, report, run_confirmation
from .experiment import ExperimentError, experiment_lock, write_record
from .metrics import metric_problem, metric_spec
from .plan import sweep_plan
from .preflight import check_data, untrained_baseline
from .results import ranked
from .settings import SweepSettings, recorded_settings
from .space import SearchSpace
from .summary import summarize_sweep
from .tuner import (
    cluster_gpus,
    fitting_trials,
    run_sweep,
    sweep_epochs,
    tune_can_restore,
    wait_for_resources,
)
from .warm_start import WarmStart, load_warm_start


def drive_sweep(settings: SweepSettings, space: SearchSpace, overrides: dict[str, Any]) -> int:
    """Runs the sweep `settings` over `space` and prints its summary; the exit code: 0, or 1
    when no trial finished with the metric. `overrides`: the training flags the command line
    fixed, for a new sweep's record. What stops the sweep raises: SpaceError, ConfigError,
    FileNotFoundError, ValueError (ExperimentError among them) or OSError."""
    path = settings.experiment.path
    if settings.resume and not tune_can_restore(path):
        raise ExperimentError(
            f"--resume: {path} holds no Tune experiment (the sweep stopped before its first "
            "trial); delete the folder and start the sweep again"
        )
    with experiment_lock(path):  # held until the end; a second driver stops here
        space.check(workers=settings.workers_per_trial, gpus=settings.gpus_per_trial)
        warm = (
            load_warm_start(settings.warm_start, space, settings.metric, settings.warm_start_top)
            if settings.warm_start
            else None
        )
        limits = sweep_epochs(settings.grace, space)  # Ray asserts grace_period <= max_t
        space.config = absolute_paths(space.config)  # trials run in folders of their own
        default = Config.from_dict(space.resolve(space.default_point()))
        if problem := metric_problem(settings.metric, default.label_free):
            raise ConfigError(problem)
        if note := defaults_note(default):
            print(note, file=sys.stderr)
        data = check_data(default, space.name)
        if not (settings.resume or settings.plan):  # objective and space fixed before a trial
            mode = metric_spec(settings.metric).mode
            record = recorded_settings(settings)
            write_record(path, settings.metric, mode, space.to_yaml(), record, overrides)
        return run_on_ray(settings, space, limits, default, data, warm)


def run_on_ray(
    settings: SweepSettings,
    space: SearchSpace,
    limits: tuple[int, int],
    default: Config,
    data: ImageData,
    warm: WarmStart | None = None,
) -> int:
    """Runs the checked sweep (and its confirmation) on Ray and prints the summary; the exit
    code: 0, or 1 when no trial finished with the metric. `warm`: from --warm_start. With
    --plan: prints the plan instead, and starts no trial."""
    baseline = (
        untrained_baseline(default, data) if settings.baseline and not settings.plan else None
    )
    path = settings.experiment.path
    # a SIGTERM then runs `finally`: stops our Ray
    started_here = init_ray(os.environ.get("RAY_ADDRESS"))
    confirmed = None
    try:
        # now the cluster's GPUs are known (--sync_bn needs one)
        if settings.gpus_per_trial is None:
            space.check(workers=settings.workers_per_trial, gpus=cluster_gpus())
        gpus = settings.gpus_per_trial if settings.gpus_per_trial is not None else cluster_gpus()
        wait_for_resources(
            settings.workers_per_trial,
            settings.cpus_per_trial,
            gpus,
            settings.wait_for_resources,
            can_grow=not started_here,
        )
        # one copy per node, owned by this driver: a resumed sweep puts it again
        shared = share_dataset(data, default.dataset, default.data_dir)
        fit = fitting_trials(settings, gpus)
        trials = Resources(settings.workers_per_trial, settings.cpus_per_trial, gpus, fit)
        if settings.plan:
            print(sweep_plan(settings, limits, default, data, shared, trials))
            power = plan_power(
                settings.experiment.storage,
                space,
                default.dataset,
                settings.metric,
                settings.seeds,
                settings.seed_spread,
                settings.detect,
            )
            print(power)
            return 0
        started = time.monotonic()
        run_sweep(settings, space, limits, shared, warm)
        wall_s = time.monotonic() - started
        if settings.confirm:
            resources = {
                "workers": settings.workers_per_trial,
                "gpus": gpus,
                "cpus": settings.cpus_per_trial,
                "concurrency": fit,  # order does not matter here
            }
            try:
                configs = plan_confirmation(
                    path, space, settings.metric, settings.confirm, settings.seeds, settings.seed
                )
            except ValueError as err:  # the sweep's summary still follows
                print(f"note: no confirmation: {err}", file=sys.stderr)
            else:
                confirmed = run_confirmation(
                    path, configs, settings.metric, resources, settings.max_failures
                )
    finally:
        ray.shutdown()  # before the summary, so that no late worker log interleaves with it
    planned = planned_trial_epochs(settings.num_trials, default, limits[1], settings.scheduler)
    rows = summarize_sweep(path, settings.metric, space, baseline, (trials, planned, wall_s))
    if confirmed:
        report(path, settings.metric, space)
    if not ranked(rows, settings.metric):
        print(f"error: no trial finished with a {settings.metric}", file=sys.stderr)
        return 1
    return 0
