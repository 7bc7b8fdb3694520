"""The sweep run on Ray Tune: Optuna's TPE behind a concurrency limit, ASHA (or FIFO) on the
epoch, trials sized from the cluster's resources, and the driver-kill test hook."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from ..config import Config
from ..utils.paths import absolute
from .asha import REDUCTION_FACTOR, planned_trial_epochs, sweep_decisions
from .experiment import Experiment, check_name
from .history import HistoryKeeper
from .metrics import metric_spec
from .progress import SweepProgress
from .settings import SweepSettings
from .space import SearchSpace, SpaceError
from .study import EpochOptunaSearch, fail_stale_trials, study_storage, sync_study
from .trial import make_trial
from .warm_start import WarmStart, first_points, seed_study


def asha_limits(epochs: int, eval_every: int, grace: int | None) -> tuple[int, int]:
    """(max_t, grace_period) for ASHA, the grace clamped to the epoch budget: Ray asserts
    grace_period <= max_t, and --epochs below the space's eval_every would break that."""
    grace = grace or eval_every
    if grace < 1:
        raise SpaceError(f"--grace {grace}: give a whole number of epochs >= 1")
    if grace > epochs:
        print(f"note: ASHA grace period {grace} > --epochs {epochs}; using {epochs}")
    return epochs, min(grace, epochs)


def run_sweep(
    settings: SweepSettings,
    space: SearchSpace,
    limits: tuple[int, int],
    shared_data: dict[str, Any] | None = None,
    warm: WarmStart | None = None,
) -> Any:
    """Runs (or resumes) the sweep and returns Tune's ResultGrid; `limits` is
    (epoch budget, ASHA grace period) from `sweep_epochs`; `warm`: the earlier trials that
    a new sweep's study starts with (--warm_start)."""
    gpus = settings.gpus_per_trial if settings.gpus_per_trial is not None else cluster_gpus()
    experiment = settings.experiment
    path = experiment.path
    trial = make_trial(
        settings.workers_per_trial,
        gpus,
        settings.cpus_per_trial,
        experiment,
        settings.metric,
        shared_data,
    )
    # the trial driver only waits on its Train run: it asks for no CPU (Tune needs some resource)
    trainable = tune.with_resources(trial, {"CPU": 0, "memory": 64 * 2**20})
    study, local_study = study_storage(settings.optuna_storage, path, experiment.name)
    if settings.resume:  # drive_sweep checked that the folder holds a Tune experiment
        sync_study(local_study, path, upload=False)
        stale = fail_stale_trials(study, experiment.name)
        if stale:
            print(f"--resume: {stale} trial(s) left RUNNING by the crash marked FAIL in the study")
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        tuner = _new_tuner(settings, space, limits, trainable, study, gpus, warm)
    grid = tuner.fit()
    sync_study(local_study, path, upload=True)
    return grid


def _new_tuner(
    settings: SweepSettings,
    space: SearchSpace,
    limits: tuple[int, int],
    trainable: Any,
    study: Any,
    gpus: float,
    warm: WarmStart | None = None,
) -> tune.Tuner:
    """The Tuner of a new sweep: TPE (the warm start's top points, then the space's first
    point, first) behind a concurrency limit, ASHA or FIFO on the epoch, the study in `study`
    (holding the warm trials), the test hook if set."""
    experiment = settings.experiment
    name = experiment.name
    mode = metric_spec(settings.metric).mode
    if warm:
        seed_study(study, name, mode, warm)
    sampler = optuna.samplers.TPESampler(seed=settings.seed, multivariate=True, constant_liar=True)
    epochs, grace = limits
    searcher = EpochOptunaSearch(
        space.suggest,
        metric=settings.metric,
        mode=mode,
        sampler=sampler,
        points_to_evaluate=first_points(warm, space.first),
        study_name=name,
        storage=study,
        epochs=epochs,
    )
    concurrency = settings.concurrency or fitting_trials(settings, gpus)
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=epochs, grace_period=grace, reduction_factor=REDUCTION_FACTOR
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=settings.metric,
            mode=mode,
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=scheduler,
            num_samples=settings.num_trials,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=experiment.storage,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            # HistoryKeeper before Tune's loggers
            callbacks=[HistoryKeeper(), live_eta(settings, space, grace), *exit_hooks()],
        ),
    )


def live_eta(settings: SweepSettings, space: SearchSpace, grace: int) -> SweepProgress:
    """The sweep's ETA printer (wsl_ray.sweep.progress), from its first point's epochs."""
    cfg = Config.from_dict(space.resolve(space.default_point()))
    expected = planned_trial_epochs(settings.num_trials, cfg, grace, settings.scheduler)["expected"]
    decisions = sweep_decisions(cfg, grace, settings.scheduler)
    return SweepProgress(settings.num_trials, cfg.epoch, decisions, expected / settings.num_trials)


def sweep_epochs(grace: int | None, space: SearchSpace) -> tuple[int, int]:
    """The trials' epoch budget and ASHA's grace period (`grace`, else the space's
    eval_every; clamped to the budget)."""
    epochs = space.config.get("epoch", Config().epoch)
    eval_every = space.config.get("eval_every", Config().eval_every)
    return asha_limits(epochs, eval_every, grace)


EXIT_HOOK = "WSL_RAY_TEST_EXIT_AFTER_FINAL"


class _ExitAfterFinalResult(tune.Callback):
    """Test hook: with WSL_RAY_TEST_EXIT_AFTER_FINAL=N the driver dies (exit code 99) right
    after trial N's final result, whose checkpoint is on storage by then, and before Tune
    records the trial as finished: the moment that a kill of the driver can hit."""

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # read now, not when built: Tuner.restore brings the callback back from the pickled
        # experiment, and the resumed sweep must run to its end
        number = os.environ.get(EXIT_HOOK)
        final = result.get("epoch") == trial.config.get("epoch", Config().epoch)
        if final and number and str(trial.experiment_tag).split("_")[0] == number:
            os._exit(99)


def exit_hooks() -> list[tune.Callback]:
    """The test hook's callback when WSL_RAY_TEST_EXIT_AFTER_FINAL is set, else none."""
    return [_ExitAfterFinalResult()] if os.environ.get(EXIT_HOOK) else []


def cluster_gpus() -> float:
    """GPUs per trial worker when --gpus-per-trial is not given: one if the Ray *cluster*
    has any GPU (ray.cluster_resources; Ray must be initialised), else none. This is a
    question about the cluster, not about this process's torch.cuda."""
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def resource_problem(workers: int, cpus: float, gpus: float | None) -> str | None:
    """The first problem with a trial's resources (per worker: `cpus` CPUs, `gpus` GPUs,
    None: decided from the cluster), or None. A worker needs a CPU share > 0 (with none it
    never starts); GPUs are 0, a fraction of one for a one-worker trial (several NCCL ranks
    cannot share one GPU), or whole GPUs."""
    if not math.isfinite(cpus) or cpus <= 0:
        return f"--cpus-per-trial {cpus}: must be a number > 0 (a CPU share per worker)"
    if gpus is None:
        return None
    if not math.isfinite(gpus) or gpus < 0:
        return f"--gpus-per-trial {gpus}: must be a number, 0 or more"
    if gpus > 1 and not float(gpus).is_integer():
        return f"--gpus-per-trial {gpus}: give a fraction of one GPU, or whole GPUs"
    if 0 < gpus < 1 and workers > 1:
        return (
            f"--gpus-per-trial {gpus} with --workers-per-trial {workers}: several workers "
            "cannot share one GPU; give 1 (or more) GPUs per worker"
        )
    return None


def missing_resources(
    total: dict[str, float], workers: int, cpus: float, gpus: float
) -> str | None:
    """What the cluster (`total`, as ray.cluster_resources) lacks to run one trial of
    `workers` workers with `cpus` CPUs and `gpus` GPUs each, or None when it fits."""
    need = {"CPU": workers * cpus, "GPU": workers * gpus}
    short = [k for k, v in need.items() if v > total.get(k, 0)]
    if not short:
        return None
    has = " and ".join(f"{total.get(k, 0):g} {k}" for k in short)
    wants = " and ".join(f"{need[k]:g} {k}" for k in short)
    return (
        f"each trial asks for {wants} ({workers} worker(s) x {cpus:g} CPU, {gpus:g} GPU), "
        f"the cluster has {has}"
    )


def wait_for_resources(
    workers: int,
    cpus: float,
    gpus: float,
    timeout: float,
    can_grow: bool = True,
    resources: Callable[[], dict[str, float]] = ray.cluster_resources,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Returns once the cluster can run one trial; waits up to `timeout` seconds for an
    autoscaler to add what is missing, then raises SpaceError naming it (a trial that asks
    for resources no node has would otherwise stay PENDING forever). A cluster that cannot
    grow (`can_grow` False: the local Ray this command started) is not waited for: what it
    lacks raises at once."""
    deadline = clock() + timeout
    told = False
    change = "lower --gpus-per-trial, --cpus-per-trial or --workers-per-trial"
    while problem := missing_resources(resources(), workers, cpus, gpus):
        if not can_grow:
            raise SpaceError(
                f"{problem}; this command started a local Ray, which never grows: {change}, "
                "or run on a cluster (RAY_ADDRESS)"
            )
        left = deadline - clock()
        if left <= 0:
            raise SpaceError(
                f"{problem}, after waiting {timeout:g} s (--wait-for-resources); {change}, "
                "or add nodes"
            )
        if not told:
            print(f"waiting up to {timeout:g} s for the cluster: {problem}", flush=True)
            told = True
        sleep(min(5.0, left))


def fitting_trials(settings: SweepSettings, gpus: float) -> int:
    """How many trials the cluster fits at once, from its CPUs (and GPUs)."""
    resources = ray.cluster_resources()
    per_trial_cpus = settings.workers_per_trial * settings.cpus_per_trial
    fit = int(resources.get("CPU", 1) // max(per_trial_cpus, 1e-9))
    if gpus:
        fit = min(fit, int(resources.get("GPU", 0) // (gpus * settings.workers_per_trial)))
    return max(1, fit)


def sweep_experiment(storage: str, name: str | None, space: str) -> Experiment:
    """The sweep's experiment: `name` (--name, else the stem of the --space file) under
    `storage`. Raises ExperimentError for a --name that is not a plain name."""
    if name is not None:
        check_name(name)
    name = name or Path(space).stem
    check_name(name, "--name (from --space)")
    return Experiment(absolute(storage).rstrip("/"), name)


def tune_can_restore(path: str) -> bool:
    """Whether the folder holds a Tune experiment's state (no Ray needed)."""
    return tune.Tuner.can_restore(path)
