"""Confirmation of a sweep over new seeds: choose the top configurations and the default,
run them as Tune trials of `<experiment>-confirm`, and report test mean ± std with Welch's
interval of each against the default."""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from ..utils.markdown import markdown_records
from .metrics import metric_spec, score
from .results import RUN_ONLY, collect_rows, ranked, rows_table, write_parquet
from .space import SearchSpace, SpaceError
from .stats import welch_interval

DEFAULT_LABEL = "default"
SEED_OFFSET = 1000  # confirmation seeds are seed + 1000 + i: never a seed the search used


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
    """Whether two configs train the same thing (they may differ in RUN_ONLY keys)."""
    return {k: v for k, v in a.items() if k not in RUN_ONLY} == {
        k: v for k, v in b.items() if k not in RUN_ONLY
    }


def summarize_confirmation(rows: list[dict[str, Any]], metric: str) -> tuple[list[dict], str]:
    """(table rows, verdict): per configuration the val metric and the test metric as mean ±
    std over seeds; the verdict compares the best (best validation mean, not default)
    with the default by Welch's 95% interval on the test metric."""
    test = metric_spec(metric).test
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
                f"{metric} mean ± std": _mean_std(vals, metric_spec(metric).percent),
                f"{test} mean ± std": _mean_std(tests, True),
                "_test": tests,
                "_val": score(metric, statistics.fmean(vals)) if vals else -math.inf,
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

    from .history import HistoryKeeper
    from .trial import make_trial

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
            callbacks=[HistoryKeeper()],
        ),
    )
    tuner.fit()
    return f"{experiment.rstrip('/')}-confirm"


def report(confirm_experiment: str, metric: str, space: SearchSpace) -> str:
    """Writes confirm.parquet and prints (and returns) the confirmation table and verdict."""
    rows = collect_rows(confirm_experiment)
    name = confirm_experiment.rsplit("/", 1)[-1]
    table = rows_table(rows, {name: space.to_yaml()}, {name: metric})
    write_parquet(table, f"{confirm_experiment}/results.parquet")
    shown, verdict = summarize_confirmation(rows, metric)
    text = f"\n== confirmation over seeds ({name}) ==\n{markdown_records(shown)}\n\n{verdict}"
    print(text)
    return text


def check_counts(confirm: int, seeds: int) -> None:
    """Raises SpaceError for a --confirm below 0, or a confirmation with fewer than 2 seeds."""
    if confirm < 0:
        raise SpaceError(f"--confirm {confirm}: give the number of top configurations, >= 1")
    if confirm and seeds < 2:
        raise SpaceError(f"--seeds {seeds}: a confirmation needs at least 2 seeds per config")
