"""`python -m wsl_ray.confirm EXPERIMENT`: is the sweep's winner better than the default?

Re-runs the top K configurations of a finished sweep by validation score (TERMINATED trials,
distinct configurations) and the space's default point, with S new seeds each at the full
epoch budget, as Tune trials of the experiment `<name>-confirm` beside it. Reports test mean
± sample std per configuration, and the difference best - default with a 95% Welch's t
interval (unequal variances, Welch-Satterthwaite degrees of freedom; a t interval rather
than a bootstrap, which with a handful of seeds per arm is far too narrow). The best
beats the default beyond noise when the interval lies above zero.
`python -m wsl_ray.tune ... --confirm K --seeds S` runs this stage after the search.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from .sweep.results import (
    CollectError,
    collect_rows,
    format_table,
    ranked,
    read_text,
    rows_table,
    test_metric_for,
    write_parquet,
)
from .sweep.space import SearchSpace, SpaceError, parse_space

DEFAULT_LABEL = "default"
SEED_OFFSET = 1000  # confirmation seeds are seed + 1000 + i: never a seed the search used


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p > 0.5) of Student's t with `df` > 0 degrees of freedom (any real
    df): bisection on the CDF 1/2 + integral_0^t of the density
    Gamma((df+1)/2) / (sqrt(df pi) Gamma(df/2)) (1 + x^2/df)^(-(df+1)/2), integrated by
    Simpson's rule on the substitution x = tan(u), which keeps the heavy tails smooth."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        upper, n = math.atan(t), 2000

        def f(u: float) -> float:  # the density at tan(u), times d tan(u) / du
            x = math.tan(u)
            return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df)) * (1 + x * x)

        h = upper / n
        total = f(0) + f(upper) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
        return 0.5 + total * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def welch_interval(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, ...]:
    """(mean(a) - mean(b), low, high): the Welch's t interval of the difference of means,
    se = sqrt(s_a^2/n_a + s_b^2/n_b), df = se^4 / sum_i (s_i^2/n_i)^2 / (n_i - 1).
    Needs two or more values per side; zero spread gives a zero-width interval."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("Welch's interval needs at least 2 seeds per configuration (--seeds)")
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return diff, diff - half, diff + half


def confirm_configs(
    rows: list[dict[str, Any]], space: SearchSpace, metric: str, k: int, seeds: int, seed: int
) -> list[dict[str, Any]]:
    """Trial configs of the confirmation: the default point, then the top k TERMINATED
    configurations by `metric` (a top config equal to the default is run once, labelled
    default), each with `seeds` new seeds; `confirm_label` names the configuration."""
    chosen: list[tuple[str, dict]] = []
    chosen.append((DEFAULT_LABEL, space.resolve(space.default_point())))
    for row in ranked([r for r in rows if r["status"] == "TERMINATED"], metric):
        if len(chosen) - 1 >= k:
            break
        config = space.resolve({n: _value(row[f"config/{n}"]) for n in space.params})
        if any(_same(config, c) for _, c in chosen):
            continue
        chosen.append((f"top{len(chosen)}", config))
    return [
        config | {"seed": seed + SEED_OFFSET + i, "confirm_label": label}
        for label, config in chosen
        for i in range(seeds)
    ]


def _value(v: Any) -> Any:
    """A config value from its results column (lists are stored as JSON text)."""
    return json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v


def _same(a: dict, b: dict) -> bool:
    ignore = {"seed", "out", "wandb", "data_dir", "device"}
    return {k: v for k, v in a.items() if k not in ignore} == {
        k: v for k, v in b.items() if k not in ignore
    }


def summarize_confirmation(rows: list[dict[str, Any]], metric: str) -> tuple[list[dict], str]:
    """(table rows, verdict): per configuration the val metric and the test metric as mean ±
    std over seeds; the verdict compares the best (highest validation mean, not default)
    with the default by Welch's 95% interval on the test metric."""
    test = test_metric_for(metric)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("config/confirm_label"), []).append(r)
    table = []
    for label, runs in groups.items():
        vals = [r[metric] for r in runs if r.get(metric) is not None]
        tests = [r[test] for r in runs if r.get(test) is not None]
        table.append(
            {
                "config": label,
                "seeds": len(runs),
                f"{metric} mean ± std": _mean_std(vals, metric != "rankme"),
                f"{test} mean ± std": _mean_std(tests, True),
                "_test": tests,
                "_val": statistics.fmean(vals) if vals else -math.inf,
            }
        )
    default = next((t for t in table if t["config"] == DEFAULT_LABEL), None)
    others = [t for t in table if t["config"] != DEFAULT_LABEL]
    verdict = "no verdict: the confirmation needs the default and another configuration"
    if default and others:
        best = max(others, key=lambda t: t["_val"])
        try:
            diff, lo, hi = welch_interval(best["_test"], default["_test"])
        except ValueError as err:
            verdict = f"no verdict: {err}"
        else:
            span = f"{test} {diff * 100:+.2f} points, 95% CI [{lo * 100:+.2f}, {hi * 100:+.2f}]"
            if lo > 0:
                words = "beats the default beyond noise"
            elif hi < 0:
                words = "is worse than the default beyond noise"
            else:
                words = "does NOT beat the default beyond noise (the interval includes 0)"
            verdict = (
                f"The validation-selected best ({best['config']}) {words}: {span} "
                f"(Welch's t over {len(best['_test'])} and {len(default['_test'])} seeds)."
            )
        for t in table:
            if t is not default and min(len(t["_test"]), len(default["_test"])) > 1:
                d, lo, hi = welch_interval(t["_test"], default["_test"])
                t["vs default (95% CI)"] = f"{d * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}]"
    shown = [{k: v for k, v in t.items() if not k.startswith("_")} for t in table]
    return shown, verdict


def _mean_std(values: list[float], percent: bool) -> str:
    if not values:
        return "-"
    scale = 100 if percent else 1
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * statistics.fmean(values):.2f} ± {scale * std:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    header = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(
        lines + ["| " + " | ".join(str(r.get(h, "")) for h in header) + " |" for r in rows]
    )


def run_confirmation(
    experiment: str,
    space: SearchSpace,
    metric: str,
    k: int,
    seeds: int,
    seed: int = 0,
    resources: dict[str, Any] | None = None,
    max_failures: int = 2,
) -> str:
    """Runs the confirmation trials (Ray must be initialised) and returns their experiment
    folder, `<experiment>-confirm`, whose trials `report` reads."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from .tune import make_trial

    resources = resources or {}
    configs = confirm_configs(collect_rows(experiment), space, metric, k, seeds, seed)
    storage, name = experiment.rstrip("/").rsplit("/", 1)
    print(f"\nconfirming {len(configs) // seeds} configuration(s) over {seeds} new seeds ...")
    trial = make_trial(
        resources.get("workers", 1),
        resources.get("gpus", 0.0),
        resources.get("cpus", 1),
        f"{storage}/{name}-confirm",
        metric,
    )
    tuner = tune.Tuner(
        tune.with_resources(trial, {"CPU": 0, "memory": 64 * 2**20}),
        param_space=dict(configs[0]),  # the keys the points fill (Tune asks for them)
        tune_config=tune.TuneConfig(
            search_alg=BasicVariantGenerator(
                points_to_evaluate=configs, max_concurrent=resources.get("concurrency", 0)
            ),
            num_samples=len(configs),
        ),
        run_config=tune.RunConfig(
            name=f"{name}-confirm",
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    tuner.fit()
    return f"{experiment.rstrip('/')}-confirm"


def report(confirm_experiment: str, metric: str, space: SearchSpace) -> str:
    """Writes confirm.parquet and prints (and returns) the confirmation table and verdict."""
    rows = collect_rows(confirm_experiment)
    name = confirm_experiment.rsplit("/", 1)[-1]
    table = rows_table(rows, {name: space.to_yaml()})
    write_parquet(table, f"{confirm_experiment}/results.parquet")
    shown, verdict = summarize_confirmation(rows, metric)
    text = f"\n== confirmation over seeds ({name}) ==\n{markdown(shown)}\n\n{verdict}"
    print(text)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wsl_ray.confirm", description=__doc__.splitlines()[0]
    )
    p.add_argument("experiment", help="a finished sweep's folder, e.g. ~/wsl_ray_results/wmse")
    p.add_argument("--confirm", type=int, default=1, help="how many top configurations")
    p.add_argument("--seeds", type=int, default=3, help="new seeds per configuration")
    p.add_argument("--metric", default=None, help="selection metric (default: the sweep's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--gpus-per-trial", type=float, default=0)
    p.add_argument("--max-failures", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    experiment = os.path.expanduser(args.experiment)
    if "://" not in experiment:
        experiment = os.path.abspath(experiment)
    try:
        check_counts(args.confirm, args.seeds)
        space = parse_space(read_text(f"{experiment}/search_space.yaml"), Path(experiment))
        metric = args.metric or sweep_metric(experiment)
        collect_rows(experiment)
    except (CollectError, SpaceError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True)
    try:
        folder = run_confirmation(
            experiment,
            space,
            metric,
            args.confirm,
            args.seeds,
            args.seed,
            {"cpus": args.cpus_per_trial, "gpus": args.gpus_per_trial},
            args.max_failures,
        )
    finally:
        ray.shutdown()
    print(format_table(collect_rows(experiment), metric, list(space.params)))
    report(folder, metric, space)
    return 0


def check_counts(confirm: int, seeds: int) -> None:
    if confirm < 0:
        raise SpaceError(f"--confirm {confirm}: give the number of top configurations, >= 1")
    if confirm and seeds < 2:
        raise SpaceError(f"--seeds {seeds}: a confirmation needs at least 2 seeds per config")


def sweep_metric(experiment: str) -> str:
    """The metric a sweep selected on (sweep.json, written by wsl_ray.tune)."""
    try:
        return json.loads(read_text(f"{experiment}/sweep.json"))["metric"]
    except FileNotFoundError:
        return "val_acc_knn"


if __name__ == "__main__":
    sys.exit(main())
