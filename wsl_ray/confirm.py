"""`python -m wsl_ray.confirm EXPERIMENT`: is the sweep's winner better than the default?

Re-runs the top K configurations of a finished sweep by validation score (TERMINATED trials,
distinct configurations) and the space's default point, all with the same S new seeds at the
full epoch budget, as Tune trials of the experiment `<name>-confirm` beside it. Reports test
mean ± sample std per configuration, and the difference best - default with a 95% Welch's t
interval (unequal variances, Welch-Satterthwaite degrees of freedom; a t interval rather
than a bootstrap, which with a handful of seeds per arm is far too narrow) beside the paired
t interval on the per-seed differences and the arms' correlation. The best beats the
default beyond noise when the interval (the paired one when every seed pairs) lies above
zero; when it does not, the verdict says whether the comparison was underpowered or
excludes a gain of the size it could detect.
`python -m wsl_ray.tune ... --confirm K --seeds S` runs this stage after the search.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .sweep.confirmation import check_counts, plan_confirmation, report, run_confirmation
from .sweep.experiment import ExperimentError, recorded_metric
from .sweep.metrics import DEFAULT_METRIC, METRIC_CHOICES
from .sweep.results import CollectError, collect_rows
from .sweep.space import parse_space
from .sweep.summary import format_table
from .sweep.tuner import resource_problem
from .utils.cli import Parser, command_name
from .utils.paths import absolute
from .utils.ray_start import init_ray
from .utils.storage import read_text


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=command_name("wsl_ray.confirm"), description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="a finished sweep's folder, e.g. ~/wsl_ray_results/wmse")
    p.add_argument("--confirm", type=int, default=1, help="how many top configurations (>= 1)")
    p.add_argument(
        "--seeds", type=int, default=3, help="new seeds, shared by every configuration (>= 2)"
    )
    p.add_argument(
        "--metric",
        default=None,
        choices=METRIC_CHOICES,
        help="selection metric (default: the sweep's, from its sweep.json)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds tried: seed + 1000, + 1001, ...")
    p.add_argument("--cpus-per-trial", "--cpus_per_trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", "--gpus_per_trial", type=float, default=0)
    p.add_argument("--max-failures", "--max_failures", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    experiment = absolute(args.experiment)
    try:
        if args.confirm < 1:
            raise ValueError(
                f"--confirm {args.confirm}: give how many top configurations to confirm, >= 1"
            )
        check_counts(args.confirm, args.seeds)
        if problem := resource_problem(1, args.cpus_per_trial, args.gpus_per_trial):
            raise ValueError(problem)
        if args.max_failures < -1:
            raise ValueError(f"--max-failures {args.max_failures}: must be 0 or more")
        collect_rows(experiment)  # a folder of trials, or the error that says what it lacks
        space = parse_space(read_text(f"{experiment}/search_space.yaml"), Path(experiment))
        metric = args.metric or recorded_metric(experiment) or DEFAULT_METRIC
        configs = plan_confirmation(experiment, space, metric, args.confirm, args.seeds, args.seed)
    except (CollectError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import ray

    init_ray(os.environ.get("RAY_ADDRESS"))
    try:
        resources = {"cpus": args.cpus_per_trial, "gpus": args.gpus_per_trial}
        run_confirmation(experiment, configs, metric, resources, args.max_failures)
    except ExperimentError as err:  # another confirmation of this experiment runs
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    print(format_table(collect_rows(experiment), metric, list(space.params)))
    report(experiment, metric, space)
    return 0


if __name__ == "__main__":
    sys.exit(main())
