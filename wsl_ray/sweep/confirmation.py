"""Confirmation of a sweep over new seeds: choose the top configurations and the default,
run them as Tune trials of `<experiment>-confirm`, and report test mean ± std with Welch's
interval of each against the default."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from typing import Any

from ..utils.markdown import markdown_records
from .experiment import Experiment, experiment_lock
from .metrics import metric_spec, score
from .results import RUN_ONLY, CollectError, collect_rows, ranked, rows_table, write_parquet
from .space import SearchSpace, SpaceError
from .stats import mean_std, welch_interval

DEFAULT_LABEL = "default"
SEED_OFFSET = 1000  # confirmation seeds are seed + 1000 + i: never a seed the search used


def confirm_configs(
    rows: list[dict[str, Any]],
    space: SearchSpace,
    metric: str,
    k: int,
    seeds: int,
    seed: int,
    done: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Trial configs of the confirmation: the default point, then the top k TERMINATED
    configurations by `metric` (a top config equal to the default is run once, labelled
    default), each with `seeds` new seeds; `confirm_label` names the configuration.

    A seed is new for a configuration when no run of it used it: neither a sweep trial
    (`rows`) nor an earlier confirmation (`done`, the rows of `<experiment>-confirm`). The
    seeds tried are seed + 1000, + 1001, ... (never the search's seed, unless --seed puts
    it there; then it is skipped). A configuration confirmed before keeps its label; a new
    one takes the first free `topN`."""
    done = done or []
    chosen: list[tuple[str, dict]] = [(DEFAULT_LABEL, space.resolve(space.default_point()))]
    for row in ranked([r for r in rows if r["status"] == "TERMINATED"], metric):
        if len(chosen) - 1 >= k:
            break
        config = space.resolve({n: _value(row[f"config/{n}"]) for n in space.params})
        if not any(_same(config, c) for _, c in chosen):
            chosen.append((_label(config, done, [label for label, _ in chosen]), config))
    configs = []
    for label, config in chosen:
        used = {
            r.get("config/seed")
            for r in [*rows, *done]
            if _same(config, _row_config(r, config)) and r["status"] != "ERROR"
        }
        fresh = (s for s in itertools.count(seed + SEED_OFFSET) if s not in used)
        configs += [
            config | {"seed": s, "confirm_label": label} for s in itertools.islice(fresh, seeds)
        ]
    return configs


def _row_config(row: dict[str, Any], like: dict[str, Any]) -> dict[str, Any]:
    """The values of a results row for the keys of the config `like`."""
    return {key: _value(row.get(f"config/{key}")) for key in like}


def _label(config: dict, done: list[dict[str, Any]], taken: list[str]) -> str:
    """The label an earlier confirmation gave `config`, else the first free topN."""
    for r in done:
        label = r.get("config/confirm_label")
        if label and label != DEFAULT_LABEL and _same(config, _row_config(r, config)):
            return label
    labels = {r.get("config/confirm_label") for r in done} | set(taken)
    return next(f"top{n}" for n in itertools.count(1) if f"top{n}" not in labels)


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
                "seeds": len(tests),  # the runs that count: those with a test result
                f"{metric} mean ± std": mean_std(vals, 100 if metric_spec(metric).percent else 1),
                f"{test} mean ± std": mean_std(tests, 100),
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


def confirm_folder(experiment: str) -> str:
    """The confirmation's experiment folder, `<experiment>-confirm`, beside the sweep's."""
    return f"{experiment.rstrip('/')}-confirm"


def plan_confirmation(
    experiment: str, space: SearchSpace, metric: str, k: int, seeds: int, seed: int = 0
) -> list[dict[str, Any]]:
    """The trial configs of a confirmation of `experiment` (see confirm_configs), from its
    trials and those of its earlier confirmations. Raises ValueError when there is nothing
    to compare with the default: no TERMINATED configuration besides it."""
    try:
        done = collect_rows(confirm_folder(experiment))
    except CollectError:  # not confirmed before
        done = []
    rows = collect_rows(experiment)
    configs = confirm_configs(rows, space, metric, k, seeds, seed, done)
    if all(c["confirm_label"] == DEFAULT_LABEL for c in configs):
        raise ValueError(
            f"{experiment}: no TERMINATED trial with a {metric} besides the default point; "
            "there is nothing to confirm against it"
        )
    if default_is_best(rows, space, metric):
        print(
            "note: the sweep's validation-selected best is the default point itself (tuning "
            "found nothing better on validation); the confirmation compares the next-best "
            "configuration(s) with it"
        )
    return configs


def default_is_best(rows: list[dict[str, Any]], space: SearchSpace, metric: str) -> bool:
    """Whether the best TERMINATED trial by `metric` trains the space's default point."""
    best = ranked([r for r in rows if r["status"] == "TERMINATED"], metric)[:1]
    default = space.resolve(space.default_point())
    return any(_same(default, _row_config(r, default)) for r in best)


def run_confirmation(
    experiment: str,
    configs: list[dict[str, Any]],
    metric: str,
    resources: dict[str, Any] | None = None,
    max_failures: int = 2,
) -> str:
    """Runs the confirmation trials `configs` (plan_confirmation's; Ray must be initialised)
    as trials of `<experiment>-confirm`, holding its lock, and returns that folder, whose
    trials (these and any earlier ones) `report` reads."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from .history import HistoryKeeper
    from .trial import make_trial

    resources = resources or {}
    confirmation = Experiment.at(confirm_folder(experiment))
    labels = dict.fromkeys(c["confirm_label"] for c in configs)
    print(
        f"\nconfirming {len(labels)} configuration(s) ({', '.join(labels)}) over "
        f"{len(configs) // len(labels)} new seeds each ..."
    )
    trial = make_trial(
        resources.get("workers", 1),
        resources.get("gpus", 0.0),
        resources.get("cpus", 1),
        confirmation,
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
            name=confirmation.name,
            storage_path=confirmation.storage,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[HistoryKeeper()],
        ),
    )
    with experiment_lock(confirmation.path):
        tuner.fit()
    return confirmation.path


def report(confirm_experiment: str, metric: str, space: SearchSpace) -> str:
    """Writes confirm.parquet and prints (and returns) the confirmation table and verdict."""
    rows = collect_rows(confirm_experiment)
    name = Experiment.at(confirm_experiment).name
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
