"""`python -m wsl_ray.tune --space wmse`: a hyperparameter sweep on Ray Tune.

Optuna's TPE proposes trials (the space's `first` point first), behind a concurrency limit;
ASHA stops weak trials early on a validation metric (`val_acc_knn` by default: k-NN fit on
the classifier set minus a fixed, stratified validation split, scored on that split)
evaluated every `--eval_every` epochs. Test metrics never reach Tune: a trial that runs its
whole budget computes them once, at the end, into `test_metrics.json` in its trial folder.
Each trial is a Ray Train TorchTrainer run named `train-<trial_id>` on the sweep's storage,
so a restarted trial resumes from its last checkpoint; a trial whose loss diverges ends once,
as DIVERGED, and is not retried. The Optuna study is stored (a JournalStorage file in the
experiment folder by default) with PRUNED for trials that ASHA ended early. At the end: a
summary of the best trials, `results.parquet`, and with `--confirm K --seeds S` a
confirmation of the top K and the default over S new seeds (wsl_ray.confirm).
`--warm_start PATH` starts the study with an earlier experiment's trials (wsl_ray.sweep.warm_start).

This module reads the flags into a SweepSettings and a search space; wsl_ray.sweep.driver
runs the sweep from there.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path
from typing import Any

from .config import ConfigError
from .sweep.confirmation import check_counts
from .sweep.driver import drive_sweep
from .sweep.experiment import FIXED_SETTINGS, Experiment, refuse_existing, resumed_sweep
from .sweep.metrics import DEFAULT_METRIC, METRIC_CHOICES
from .sweep.settings import SweepSettings
from .sweep.space import SearchSpace, SpaceError, load_space, parse_setting, space_path
from .sweep.study import STUDY_FILE
from .sweep.tuner import resource_problem, sweep_experiment
from .sweep.warm_start import warm_start_problem
from .utils.cli import Parser, command_name
from .utils.paths import writable_folder

DEFAULT_STORAGE = "~/wsl_ray_results"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=command_name("wsl_ray.tune"),
        description="Hyperparameter sweep of self-supervised training on Ray Tune + Optuna.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", default="wmse", help="search_spaces/NAME.yaml, or a path")
    p.add_argument("--num_trials", "--num-trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (space default)")
    p.add_argument(
        "--eval_every", "--eval-every", type=int, default=None, help="evaluate every N epochs"
    )
    p.add_argument("--dataset", default=None, help="dataset (space default)")
    p.add_argument("--data_dir", "--data-dir", default=None)
    p.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        choices=METRIC_CHOICES,
        help="what the search selects on: a validation accuracy, or a label-free metric "
        "(rankme, alpha_req = |alpha - 1|, lidar with --set label_free=lidar)",
    )
    p.add_argument(
        "--val_size", "--val-size", type=float, default=None, help="validation split (0.1)"
    )
    p.add_argument("--scheduler", default="asha", choices=("asha", "fifo"))
    p.add_argument(
        "--grace",
        type=int,
        default=None,
        help="ASHA grace period in epochs (--scheduler asha only; default: the space's eval_every)",
    )
    p.add_argument("--name", default=None, help="experiment name (default: the space's)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="local path or URI (s3://...)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name")
    p.add_argument(
        "--optuna-storage",
        "--optuna_storage",
        default=None,
        help="Optuna storage: a journal file path, or an RDB URL (sqlite:///f.db); default "
        f"EXPERIMENT/{STUDY_FILE}",
    )
    p.add_argument("--confirm", type=int, default=0, help="re-run the top K configs and default")
    p.add_argument("--seeds", type=int, default=3, help="new seeds per confirmed config")
    p.add_argument(
        "--seed_spread",
        "--seed-spread",
        type=float,
        default=None,
        metavar="POINTS",
        help="with --plan: one configuration's std over seeds of the test metric, in points, "
        "for the smallest difference a confirmation with --seeds detects (default: measured "
        "by the earlier confirmation of the same space and dataset under --storage)",
    )
    p.add_argument(
        "--detect",
        type=float,
        default=None,
        metavar="POINTS",
        help="with --plan: also print the seeds per configuration that a confirmation needs "
        "to detect a gain of POINTS (95%% two-sided, 80%% power)",
    )
    p.add_argument(
        "--max-failures", "--max_failures", type=int, default=2, help="retries of a failed trial"
    )
    p.add_argument("--concurrency", type=int, default=None, help="trials at once (default: fit)")
    p.add_argument(
        "--workers-per-trial",
        "--workers_per_trial",
        type=int,
        default=1,
        help="DDP workers per trial",
    )
    p.add_argument(
        "--gpus-per-trial", "--gpus_per_trial", type=float, default=None, help="may be fractional"
    )
    p.add_argument("--cpus-per-trial", "--cpus_per_trial", type=float, default=1)
    p.add_argument(
        "--wait-for-resources",
        "--wait_for_resources",
        type=float,
        default=300,
        metavar="SECONDS",
        help="how long to wait for the cluster to offer one trial's CPUs and GPUs (an "
        "autoscaler adding nodes) before the sweep stops with what is missing; a local Ray "
        "that the command started (no RAY_ADDRESS) never grows and is not waited for",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the search (and trials)")
    p.add_argument("--wandb", default=None, help="log every trial to this wandb project")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="evaluate the default config's untrained encoder first, to show what SSL adds",
    )
    p.add_argument(
        "--warm_start",
        "--warm-start",
        default=None,
        metavar="PATH",
        help="an earlier experiment folder or Optuna journal: its finished trials join the "
        "new study before the first suggestion (docs/sweeps.md, Warm starts)",
    )
    p.add_argument(
        "--warm_start_top",
        "--warm-start-top",
        type=int,
        default=0,
        metavar="K",
        help="run the earlier experiment's top K configurations first",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="fix training flags, or pin searched parameters to one value; VALUE is read as "
        "the flag's type (text for a string flag: cuda_graph=off; YAML for booleans and lists)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="check the sweep, measure one trial's steps and evaluation on this cluster, print "
        "its trial-epochs, wall time and GPU-hours (CPU-hours), and exit without a trial",
    )
    return p


# training flags that the sweep sets itself: a --set of them would be overwritten
FLAG_OF = {
    "seed": "use the sweep's --seed (it seeds the search and the trials)",
    "eval_on": "sweeps always select on the validation split (eval_on val)",
}


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Training flags fixed on the command line, on top of the space's `config`."""
    fixed: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpaceError(f"--set {item!r}: write KEY=VALUE, e.g. --set arch=resnet18_w16")
        if key in FLAG_OF:
            raise SpaceError(f"--set {item}: {FLAG_OF[key]}")
        fixed[key] = parse_setting(key, value)
    named = {
        "epoch": args.epochs,
        "eval_every": args.eval_every,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "wandb": args.wandb,
        "seed": args.seed,
        "val_size": args.val_size,
        "eval_on": "val",
    }
    return fixed | {k: v for k, v in named.items() if v is not None}


def check_sweep_flags(args: argparse.Namespace) -> str | None:
    """The first problem with the sweep's own flags, or None."""
    positive = {
        "--num_trials": args.num_trials,
        "--concurrency": args.concurrency,
        "--workers-per-trial": args.workers_per_trial,
        "--grace": args.grace,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            return f"{flag} {value}: must be 1 or more"
    if args.grace is not None and args.scheduler != "asha":
        return (
            f"--grace {args.grace} is ASHA's grace period, and --scheduler {args.scheduler} "
            "stops no trial early: drop --grace, or use --scheduler asha"
        )
    resources = (args.workers_per_trial, args.cpus_per_trial, args.gpus_per_trial)
    if problem := resource_problem(*resources):
        return problem
    if args.max_failures < -1:
        return f"--max-failures {args.max_failures}: must be 0 or more (-1: retry forever)"
    if args.plan and args.resume:
        return "--plan plans a new sweep: drop --resume (or --plan, to continue the sweep)"
    if not 0 <= args.wait_for_resources < math.inf:
        return f"--wait-for-resources {args.wait_for_resources}: give seconds, 0 or more"
    for flag, value in {"--seed_spread": args.seed_spread, "--detect": args.detect}.items():
        if value is not None and not 0 < value < math.inf:
            return f"{flag} {value}: give points of the test metric, a number > 0"
        if value is not None and not args.plan:
            return f"{flag} is read by --plan only: add --plan, or drop {flag}"
    return None


def given_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> set[str]:
    """The flags (their dests) whose value is not the default: what the command line asked."""
    return {a.dest for a in parser._actions if getattr(args, a.dest, None) != a.default} - {"help"}


def sweep_space(
    parser: argparse.ArgumentParser, args: argparse.Namespace, experiment: Experiment
) -> SearchSpace:
    """The space of the sweep: a new one's from --space and the flags (refused when the
    experiment folder exists), a resumed one's from its sweep.json, where every explicitly
    given flag must agree (args.metric then becomes the recorded metric)."""
    path = experiment.path
    if not args.resume:
        refuse_existing(path, experiment.name)
        return load_space(args.space, overrides_from_args(args))
    given = given_flags(parser, args)
    space_text = space_path(args.space).read_text() if "space" in given else None
    defaults = overrides_from_args(parser.parse_args([]))
    set_keys = {item.partition("=")[0] for item in args.set}
    overrides = {  # only what the command line changes: the rest keeps its recorded value
        k: v
        for k, v in overrides_from_args(args).items()
        if k in set_keys or k not in defaults or defaults[k] != v
    }
    settings = {k: getattr(args, k) for k in FIXED_SETTINGS if k in given}
    metric = args.metric if "metric" in given else None
    space, args.metric = resumed_sweep(path, space_text, overrides, metric, settings)
    return space


def settings_of(args: argparse.Namespace, experiment: Experiment) -> SweepSettings:
    """The sweep's settings from its flags (read after a --resume set args.metric)."""
    named = (f.name for f in dataclasses.fields(SweepSettings) if f.name != "experiment")
    return SweepSettings(experiment, **{name: getattr(args, name) for name in named})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := check_sweep_flags(args) or warm_start_problem(
        args.warm_start, args.warm_start_top, args.resume
    ):
        parser.error(problem)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        experiment = sweep_experiment(args.storage, args.name, args.space)
        writable_folder(args.storage, "--storage")
        if args.optuna_storage and "://" not in args.optuna_storage:  # a journal file's folder
            folder = Path(args.optuna_storage).expanduser().parent
            writable_folder(folder, f"--optuna-storage {args.optuna_storage}: its folder")
        check_counts(args.confirm, args.seeds)
        space = sweep_space(parser, args, experiment)
        return drive_sweep(settings_of(args, experiment), space, overrides_from_args(args))
    except (SpaceError, ConfigError, FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
