"""`python -m wsl_ray.tune --space wmse`: a hyperparameter sweep on Ray Tune.

Optuna's TPE proposes trials (the space's `first` point first), behind a concurrency limit;
ASHA stops weak trials early on the k-NN accuracy evaluated every `--eval_every` epochs.
Each trial is a Ray Train TorchTrainer run named `train-<trial_id>` on the sweep's storage,
so a restarted trial resumes from its last checkpoint. At the end: a summary table of the
best trials and `results.parquet` with every trial's config and metrics.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from .config import Config, ConfigError
from .data import ImageData, load_dataset
from .device import resolve_device
from .evaluate import evaluate
from .paths import absolute, absolute_paths
from .ray_train import make_trainer
from .results import ranked_rows, read_text, summarize_sweep, write_text
from .search_space import (
    CONFIG_KEYS,
    SearchSpace,
    SpaceError,
    load_space,
    parse_setting,
    parse_space,
)
from .trainer import initial_model

DEFAULT_STORAGE = "~/wsl_ray_results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wsl_ray.tune",
        description="Hyperparameter sweep of self-supervised training on Ray Tune + Optuna.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", default="wmse", help="search_spaces/NAME.yaml, or a path")
    p.add_argument("--num_trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (space default)")
    p.add_argument("--eval_every", type=int, default=None, help="evaluate every N epochs")
    p.add_argument("--dataset", default=None, help="dataset (space default)")
    p.add_argument("--data_dir", default=None)
    p.add_argument("--metric", default="acc_knn", choices=("acc_knn", "acc", "acc_5"))
    p.add_argument("--scheduler", default="asha", choices=("asha", "fifo"))
    p.add_argument("--grace", type=int, default=None, help="ASHA grace period in epochs")
    p.add_argument("--name", default=None, help="experiment name (default: the space's)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="local path or URI (s3://...)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    p.add_argument("--concurrency", type=int, default=None, help="trials at once (default: fit)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers per trial")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="may be fractional")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the search (and trials)")
    p.add_argument("--wandb", default=None, help="log every trial to this wandb project")
    p.add_argument(
        "--baseline", action="store_true",
        help="evaluate the default config's untrained encoder first, to show what SSL adds",
    )  # fmt: skip
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="fix training flags, or pin searched parameters to one value",
    )  # fmt: skip
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Training flags fixed on the command line, on top of the space's `config`."""
    fixed: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpaceError(f"--set {item!r}: write KEY=VALUE, e.g. --set arch=resnet18_w16")
        fixed[key] = parse_setting(key, value)
    named = {
        "epoch": args.epochs, "eval_every": args.eval_every, "dataset": args.dataset,
        "data_dir": args.data_dir, "wandb": args.wandb, "seed": args.seed,
    }  # fmt: skip
    return fixed | {k: v for k, v in named.items() if v is not None}


def storage_uri(storage: str) -> str:
    """A URI as given; a local path made absolute (Ray needs one)."""
    return absolute(storage)


class EvaluationReportCallback(TuneReportCallback):
    """Forwards to Tune only the epochs that were evaluated, so that every Tune result
    carries the metric that ASHA and Optuna read (Tune checks this strictly). The live
    table shows a result's first four metrics: epoch, k-NN, linear accuracy and loss."""

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if "acc_knn" in metrics[0]:
            shown_first = {k: metrics[0][k] for k in ("epoch", "acc_knn", "acc", "loss")}
            super().after_report(run_context, [shown_first | metrics[0], *metrics[1:]], checkpoint)


def make_trial(workers: int, gpus: float, cpus: float, storage: str):
    """The Tune trainable: builds the trial's TorchTrainer and runs it to completion.
    Its Train run is `storage/train-<trial_id>` (storage: the experiment's folder).

    The trial's config is its whole training configuration (see SearchSpace.suggest),
    plus helper ratios that are not training flags.
    """

    def trial(trial_config: dict[str, Any]) -> None:
        cfg = Config.from_dict({k: v for k, v in trial_config.items() if k in CONFIG_KEYS})
        trial_id = tune.get_context().get_trial_id()
        trainer = make_trainer(
            cfg,
            workers=workers,
            gpus_per_worker=gpus,
            cpus_per_worker=cpus,
            storage_path=storage,
            name=f"train-{trial_id}",
            callbacks=[EvaluationReportCallback()],
        )
        trainer.fit()

    return trial


def run_sweep(args: argparse.Namespace, space: SearchSpace) -> Any:
    """Runs (or resumes) the sweep and returns Tune's ResultGrid."""
    storage = storage_uri(args.storage)
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else _default_gpus()
    path = experiment_path(args)
    trial = make_trial(args.workers_per_trial, gpus, args.cpus_per_trial, path)
    # the trial driver only waits on its Train run: it asks for no CPU (Tune needs some resource)
    trainable = tune.with_resources(trial, {"CPU": 0, "memory": 64 * 2**20})
    if args.resume:
        if not tune.Tuner.can_restore(path):
            raise SpaceError(f"--resume: no experiment to resume at {path}")
        return tune.Tuner.restore(path, trainable, resume_errored=True).fit()
    write_text(f"{path}/search_space.yaml", space.to_yaml())  # for the analysis package
    sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True, constant_liar=True)
    searcher = OptunaSearch(
        space.suggest,
        metric=args.metric,
        mode="max",
        sampler=sampler,
        points_to_evaluate=[space.first] if space.first else None,
    )
    concurrency = args.concurrency or _fitting_trials(args, gpus)
    epochs = space.config.get("epoch", Config().epoch)
    eval_every = space.config.get("eval_every", Config().eval_every)
    if args.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=epochs,
            grace_period=args.grace or eval_every,
            reduction_factor=2,
        )
    else:
        scheduler = FIFOScheduler()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=args.metric,
            mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=scheduler,
            num_samples=args.num_trials,
        ),
        run_config=tune.RunConfig(
            name=path.rsplit("/", 1)[-1],
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            callbacks=exit_hooks(),
        ),
    )
    return tuner.fit()


EXIT_HOOK = "WSL_RAY_TEST_EXIT_AFTER_FINAL"


class _ExitAfterFinalResult(tune.Callback):
    """Test hook: with WSL_RAY_TEST_EXIT_AFTER_FINAL=N the driver dies (exit code 99) right
    after trial N's final result, whose checkpoint is on storage by then, and before Tune
    records the trial as finished: the moment that a kill of the driver can hit."""

    def __init__(self, number: str):
        self.number = number

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        final = result.get("epoch") == trial.config.get("epoch", Config().epoch)
        if final and str(trial.experiment_tag).split("_")[0] == self.number:
            os._exit(99)


def exit_hooks() -> list[tune.Callback]:
    return [_ExitAfterFinalResult(os.environ[EXIT_HOOK])] if os.environ.get(EXIT_HOOK) else []


def _default_gpus() -> float:
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _fitting_trials(args: argparse.Namespace, gpus: float) -> int:
    """How many trials the cluster fits at once, from its CPUs (and GPUs)."""
    resources = ray.cluster_resources()
    per_trial_cpus = args.workers_per_trial * args.cpus_per_trial
    fit = int(resources.get("CPU", 1) // max(per_trial_cpus, 1e-9))
    if gpus:
        fit = min(fit, int(resources.get("GPU", 0) // (gpus * args.workers_per_trial)))
    return max(1, fit)


def experiment_path(args: argparse.Namespace) -> str:
    name = args.name or Path(args.space).stem
    return f"{storage_uri(args.storage).rstrip('/')}/{name}"


def check_sweep_flags(args: argparse.Namespace) -> str | None:
    """The first problem with the sweep's own flags, or None."""
    positive = {"--num_trials": args.num_trials, "--concurrency": args.concurrency,
                "--workers-per-trial": args.workers_per_trial, "--grace": args.grace}  # fmt: skip
    for flag, value in positive.items():
        if value is not None and value < 1:
            return f"{flag} {value}: must be 1 or more"
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        return f"--gpus-per-trial {args.gpus_per_trial}: must be 0 or more"
    if args.cpus_per_trial < 0:
        return f"--cpus-per-trial {args.cpus_per_trial}: must be 0 or more"
    if args.max_failures < -1:
        return f"--max-failures {args.max_failures}: must be 0 or more (-1: retry forever)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := check_sweep_flags(args):
        parser.error(problem)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        if args.resume:  # the space as the sweep ran it, from the experiment folder
            saved = f"{experiment_path(args)}/search_space.yaml"
            try:
                text = read_text(saved)
            except FileNotFoundError:
                raise SpaceError(f"--resume: no experiment to resume ({saved} is missing); "
                                 "give its --name and --storage") from None  # fmt: skip
            space = parse_space(text, Path(experiment_path(args)))
        else:
            space = load_space(args.space, overrides_from_args(args))
        space.check(workers=args.workers_per_trial)
        space.config = absolute_paths(space.config)  # trials run in folders of their own
        default = Config.from_dict(space.resolve(space.default_point()))
        data = _check_data(default, space.name)
    except (SpaceError, ConfigError, FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    baseline = untrained_baseline(default, data) if args.baseline else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop our Ray
    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True)
    try:
        grid = run_sweep(args, space)
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()  # before the summary, so that no late worker log interleaves with it
    rows = summarize_sweep(grid, args.metric, space, experiment_path(args), baseline)
    if not ranked_rows(rows, args.metric):
        print(f"error: no trial finished with a {args.metric}", file=sys.stderr)
        return 1
    return 0


def untrained_baseline(cfg: Config, data: ImageData) -> dict[str, float]:
    """k-NN and linear accuracy of the encoder a run of `cfg` starts from."""
    device = resolve_device(cfg.device)
    model = initial_model(cfg, data.crop_size, device)
    print("evaluating the untrained encoder (--baseline) ...", flush=True)
    return evaluate(model, data.subset(cfg.subset), device, **cfg.eval_options)


def _check_data(cfg: Config, space_name: str) -> ImageData:
    """Loads the dataset once before Ray starts: missing files fail here, with the fix."""
    try:
        return load_dataset(cfg.dataset, cfg.data_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}\nEvery node that runs trials needs the data at this same path (a shared "
            "file system, or a copy on each node). Or sweep the embedded data: "
            f"python -m wsl_ray.tune --space {space_name} --dataset shapes"
        ) from None


if __name__ == "__main__":
    sys.exit(main())
