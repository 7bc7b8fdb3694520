"""Confirmation of a sweep over new seeds: choose the top configurations and the default,
run them as Tune trials of `<experiment>-confirm`, every configuration with the same seeds
(common random numbers: seed s gives each the same data order and augmentation draws, and
the same initialisation where the shapes match), and report test mean ± std with, against
the default, Welch's interval, the paired interval over the shared seeds and the
correlation between the arms."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import statistics
from typing import Any

import pyarrow.fs
import yaml

from ..utils.markdown import markdown_records
from ..utils.storage import filesystem, read_text
from .experiment import Experiment, experiment_lock
from .metrics import metric_spec, score
from .results import RUN_ONLY, CollectError, collect_rows, ranked, rows_table, write_parquet
from .space import SearchSpace, SpaceError
from .stats import (
    Difference,
    correlation,
    mean_std,
    paired_difference,
    power_text,
    seeds_needed,
    welch_difference,
)

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
    default), all with the same `seeds` new seeds, so that their results pair seed by seed;
    `confirm_label` names the configuration.

    A seed is new when no run of any of these configurations used it: neither a sweep trial
    (`rows`) nor an earlier confirmation (`done`, the rows of `<experiment>-confirm`), so a
    second confirmation adds new shared seeds to every arm and no configuration runs a seed
    twice. The seeds tried are seed + 1000, + 1001, ... (never the search's seed, unless
    --seed puts it there; then it is skipped). A configuration confirmed before keeps its
    label; a new one takes the first free `topN`."""
    done = done or []
    chosen: list[tuple[str, dict]] = [(DEFAULT_LABEL, space.resolve(space.default_point()))]
    for row in ranked([r for r in rows if r["status"] == "TERMINATED"], metric):
        if len(chosen) - 1 >= k:
            break
        config = space.resolve({n: _value(row[f"config/{n}"]) for n in space.params})
        if not any(_same(config, c) for _, c in chosen):
            chosen.append((_label(config, done, [label for label, _ in chosen]), config))
    used = {
        r.get("config/seed")
        for r in [*rows, *done]
        if r["status"] != "ERROR" and any(_same(c, _row_config(r, c)) for _, c in chosen)
    }
    fresh = (s for s in itertools.count(seed + SEED_OFFSET) if s not in used)
    shared = list(itertools.islice(fresh, seeds))
    return [
        config | {"seed": s, "confirm_label": label} for label, config in chosen for s in shared
    ]


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


Arm = list[tuple[Any, float]]  # one configuration's (seed, test value) per run


def compare(arm: Arm, default: Arm) -> Difference:
    """arm - default: paired over the seeds when every seed pairs (each arm ran the same
    distinct, known seeds: `paired_difference`), else as independent arms (Welch's)."""
    seeds, others = [s for s, _ in arm], [s for s, _ in default]
    if (
        None not in seeds
        and set(seeds) == set(others)
        and len(set(seeds)) == len(seeds) == len(others)
    ):
        return paired_difference(*shared_seeds(arm, default))
    return welch_difference(_values(arm), _values(default))


def shared_seeds(arm: Arm, default: Arm) -> tuple[list[float], list[float]]:
    """The values of the two arms at the seeds both ran (known seeds), seed by seed."""
    theirs = {s: v for s, v in default if s is not None}
    common = [(v, theirs[s]) for s, v in arm if s in theirs]
    return [a for a, _ in common], [b for _, b in common]


def arms(rows: list[dict[str, Any]], metric: str) -> dict[str, tuple[Arm, list[float]]]:
    """label -> (its runs' (seed, test metric), its runs' validation `metric`), in the
    order of the rows."""
    test = metric_spec(metric).test
    found: dict[str, tuple[Arm, list[float]]] = {}
    for r in rows:
        arm, vals = found.setdefault(r.get("config/confirm_label"), ([], []))
        if r.get(test) is not None:
            arm.append((r.get("config/seed"), r[test]))
        if r.get(metric) is not None:
            vals.append(r[metric])
    return found


def best_against_default(rows: list[dict[str, Any]], metric: str) -> tuple[str, Arm, Arm] | None:
    """(label, arm, default's arm) of the validation-selected best configuration (the best
    mean validation score, not the default), or None without the default and another."""
    found = arms(rows, metric)
    if DEFAULT_LABEL not in found or len(found) < 2:
        return None

    def validation(label: str) -> float:
        vals = found[label][1]
        return score(metric, statistics.fmean(vals)) if vals else -math.inf

    label = max((k for k in found if k != DEFAULT_LABEL), key=validation)
    return label, found[label][0], found[DEFAULT_LABEL][0]


def _points(d: Difference) -> str:
    """`diff [low, high]` of the 95% interval, in points."""
    lo, hi = d.interval()
    return f"{d.diff * 100:+.2f} [{lo * 100:+.2f}, {hi * 100:+.2f}]"


def summarize_confirmation(
    rows: list[dict[str, Any]], metric: str, runner_up: bool = False
) -> tuple[list[dict], str]:
    """(table rows, verdict): per configuration the val metric and the test metric as mean ±
    std over seeds and, against the default, Welch's 95% interval, how many seeds pair, the
    paired 95% interval over those and the correlation of the arms there (r); the verdict
    (`verdict`, `runner_up` as there) compares the best (best validation mean, not default)
    with the default."""
    test = metric_spec(metric).test
    found = arms(rows, metric)
    default = found.get(DEFAULT_LABEL, ([], []))[0]
    table = []
    for label, (arm, vals) in found.items():
        entry: dict[str, Any] = {
            "config": label,
            "seeds": len(arm),  # the runs that count: those with a test result
            f"{metric} mean ± std": mean_std(vals, 100 if metric_spec(metric).percent else 1),
            f"{test} mean ± std": mean_std([v for _, v in arm], 100),
        }
        if label != DEFAULT_LABEL and min(len(arm), len(default)) > 1:
            entry["vs default (95% CI)"] = _points(welch_difference(_values(arm), _values(default)))
            a, b = shared_seeds(arm, default)
            entry["pairs"] = len(a)
            if len(a) > 1:
                r = correlation(a, b)
                entry["paired (95% CI)"] = _points(paired_difference(a, b))
                entry["r"] = "-" if r is None else f"{r:+.2f}"
        table.append(entry)
    return table, verdict(rows, metric, runner_up)


def _values(arm: Arm) -> list[float]:
    return [v for _, v in arm]


def verdict(rows: list[dict[str, Any]], metric: str, runner_up: bool = False) -> str:
    """Whether the validation-selected best beats the default beyond noise (`runner_up`: the
    sweep's best was the default itself, so the other arm is its runner-up): the 95% interval
    of best - default on the test metric, paired when every seed pairs (`compare`), else
    Welch's. Not significant, it says which the comparison was: underpowered (the interval
    reaches the smallest difference it detects, X: about how many seeds would detect the
    observed difference) or excluding a gain of X or more (its upper end is below X); X is
    `Difference.detectable` (two-sided 5% level, 80% power)."""
    pair = best_against_default(rows, metric)
    if pair is None:
        return "no verdict: the confirmation needs the default and another configuration"
    label, arm, default = pair
    try:
        d = compare(arm, default)
    except ValueError as err:
        return f"no verdict: {err}"
    lo, hi = d.interval()
    if d.paired:
        r = correlation(*shared_seeds(arm, default))
        how = (
            f"paired t over {len(arm)} shared seeds, arms correlated r = "
            f"{'-' if r is None else f'{r:+.2f}'}; Welch's: "
            f"{_points(welch_difference(_values(arm), _values(default)))}"
        )
    else:
        how = f"Welch's t over {len(arm)} and {len(default)} seeds: not every seed pairs"
    span = (
        f"{metric_spec(metric).test} {d.diff * 100:+.2f} points, 95% CI "
        f"[{lo * 100:+.2f}, {hi * 100:+.2f}] ({how})"
    )
    best = (
        f"The sweep's runner-up ({label}; its best was the default itself)"
        if runner_up
        else f"The validation-selected best ({label})"
    )
    if lo > 0:
        return f"{best} beats the default beyond noise: {span}."
    if hi < 0:
        return f"{best} is worse than the default beyond noise: {span}."
    x = d.detectable()
    if hi < x:
        power = (
            f"It excludes a gain of {x * 100:.2f} points or more (its upper end is below the "
            "smallest difference it detects at 80% power)."
        )
    else:
        power = (
            f"Underpowered: it could not have seen less than {x * 100:.2f} points (80% power); "
            f"about {seeds_needed(d.diff, d.spread, d.paired)} seeds per configuration needed "
            f"to see the observed {d.diff * 100:+.2f} points."
        )
    return (
        f"{best} does NOT beat the default beyond noise (the interval includes 0): {span}. {power}"
    )


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


def report(experiment: str, metric: str, space: SearchSpace) -> str:
    """Writes the confirmation's results.parquet (in `<experiment>-confirm`) and prints (and
    returns) its table and verdict, which names the other arm the runner-up when the sweep's
    best was the default point."""
    confirm_experiment = confirm_folder(experiment)
    rows = collect_rows(confirm_experiment)
    name = Experiment.at(confirm_experiment).name
    table = rows_table(rows, {name: space.to_yaml()}, {name: metric})
    write_parquet(table, f"{confirm_experiment}/results.parquet")
    runner_up = default_is_best(collect_rows(experiment), space, metric)
    shown, verdict = summarize_confirmation(rows, metric, runner_up)
    text = f"\n== confirmation over seeds ({name}) ==\n{markdown_records(shown)}\n\n{verdict}"
    print(text)
    return text


def earlier_spread(
    storage: str, space: SearchSpace, dataset: str, metric: str
) -> tuple[Difference, str] | None:
    """(best - default of its verdict, its folder) of the earlier confirmation under
    `storage` whose sweep searched the same parameters (`space.params`) on `dataset`, the
    one with the most runs; None without one. Its Difference's `spread` is the seed
    spread it measured: the std of the per-seed differences when its seeds pair, else the
    root mean square of the arms' stds."""
    fs, root = filesystem(storage.rstrip("/"))
    params = yaml.safe_load(space.to_yaml())["params"]
    found = []
    for entry in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        if entry.type != pyarrow.fs.FileType.Directory or not entry.base_name.endswith("-confirm"):
            continue
        folder = f"{storage.rstrip('/')}/{entry.base_name}"
        try:
            stored = yaml.safe_load(
                read_text(f"{folder.removesuffix('-confirm')}/search_space.yaml")
            )
            same = stored["params"] == params and stored["config"].get("dataset") == dataset
            rows = collect_rows(folder) if same else []
        except (
            CollectError,
            FileNotFoundError,
            KeyError,
            TypeError,
            AttributeError,
            yaml.YAMLError,
        ):
            continue  # not a confirmation of a wsl_ray sweep
        if pair := best_against_default(rows, metric):
            with contextlib.suppress(ValueError):  # fewer than 2 seeds in an arm
                found.append((len(rows), folder, compare(pair[1], pair[2])))
    if not found:
        return None
    _, folder, difference = max(found, key=lambda f: (f[0], f[1]))
    return difference, folder


def plan_power(
    storage: str,
    space: SearchSpace,
    dataset: str,
    metric: str,
    seeds: int,
    spread_points: float | None = None,
    detect: float | None = None,
) -> str:
    """--plan's power of a confirmation (`stats.power_text`) from a seed spread: given in
    points (--seed_spread: one configuration's std, so independent arms) or read from an
    earlier confirmation (`earlier_spread`); says which, or that neither is there."""
    if spread_points is not None:
        return (
            f"{power_text(seeds, spread_points / 100, False, detect)} Seed spread: "
            f"{spread_points:g} points, given by --seed_spread (one configuration's std over "
            "seeds; pairing narrows the comparison as far as the arms correlate)."
        )
    found = earlier_spread(storage, space, dataset, metric)
    if found is None:
        return (
            "confirmation power: no seed spread known; give --seed_spread POINTS (one "
            "configuration's std of the test metric over seeds), or confirm a sweep of this "
            f"space and dataset under {storage} first"
        )
    d, folder = found
    what = "its per-seed differences best - default" if d.paired else "its arms (seeds unpaired)"
    return (
        f"{power_text(seeds, d.spread, d.paired, detect)} Seed spread: {d.spread * 100:.2f} "
        f"points, the std of {what} in the earlier confirmation {folder}."
    )


def check_counts(confirm: int, seeds: int) -> None:
    """Raises SpaceError for a --confirm below 0, or a confirmation with fewer than 2 seeds."""
    if confirm < 0:
        raise SpaceError(f"--confirm {confirm}: give the number of top configurations, >= 1")
    if confirm and seeds < 2:
        raise SpaceError(f"--seeds {seeds}: a confirmation needs at least 2 seeds per config")
