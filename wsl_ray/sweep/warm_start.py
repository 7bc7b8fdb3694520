"""Warm starts: an earlier experiment's finished trials in a new sweep's study, before its
first suggestion (`--warm_start PATH`), and its best configurations run first
(`--warm_start_top K`).

PATH is an experiment folder (its sweep.json, or search_space.yaml, and trial folders, read
as `analysis collect` reads them) or an Optuna journal file (every COMPLETE and PRUNED trial
of the one study it holds). Each earlier trial becomes an Optuna trial of the new study:

- TERMINATED (a folder) or COMPLETE (a journal): state COMPLETE, value = the metric at its
  last evaluation; STOPPED (ASHA ended it) or PRUNED: state PRUNED, no value. Both keep
  their intermediate values (epoch -> metric): TPE ranks pruned trials below every complete
  one, by the last epoch they reached and then by their value there. Failed, diverged and
  interrupted trials are left out (TPE ignores FAIL).
- Params: the new space's names (the `params` names Optuna sees: w_ratio, not w_size), with
  the new space's distributions, so that TPE's intersection search space keeps them. A value
  comes from the trial's searched params or, from a folder, from its config (a setting the
  earlier sweep fixed). An earlier searched parameter that the new space lacks, or a new one
  with no value, is an error (the trials were measured at values the new sweep cannot
  place); a trial with a value outside the new range is left out with a note (narrowing a
  range is what a second sweep does; Optuna's create_trial refuses such a value).
- TPE samples at random until n_startup_trials trials are COMPLETE or PRUNED; warm trials
  count like the sweep's own, so with 10 or more TPE models the very first suggestion.

The earlier experiment must select on the same metric in the same direction (a journal
records only its direction, and its metric when a sweep.json lies beside it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
from optuna.trial import FrozenTrial, TrialState

from ..utils.paths import absolute
from ..utils.storage import filesystem, read_text
from .experiment import ExperimentError, read_record, space_differences
from .metrics import DEFAULT_METRIC, metric_spec
from .results import RUN_ONLY, CollectError, collect_rows
from .space import SearchSpace, contains, parse_space
from .study import STUDY_FILE

TPE_STARTUP = 10  # TPESampler's n_startup_trials, which the sweep leaves at its default
STATE_OF = {"TERMINATED": TrialState.COMPLETE, "STOPPED": TrialState.PRUNED}


@dataclass
class Earlier:
    """One finished trial of the earlier experiment: its state (COMPLETE or PRUNED), final
    value (None when pruned), intermediate values (epoch -> metric) and every setting known
    of it (its searched params included)."""

    number: int
    state: TrialState
    value: float | None
    intermediate: dict[int, float]
    config: dict[str, Any]


@dataclass
class WarmStart:
    """What a new sweep starts from: the trials to add to its study and, best first, the
    parameter points of the top K complete ones, to run before anything else."""

    trials: list[FrozenTrial]
    top: list[dict[str, Any]]


def warm_start_problem(warm_start: str | None, top: int, resume: bool) -> str | None:
    """The first problem with --warm_start `warm_start` and --warm_start_top `top` (with
    --resume when `resume`), or None."""
    if top < 0:
        return f"--warm_start_top {top}: must be 0 or more"
    if top and not warm_start:
        return f"--warm_start_top {top} needs --warm_start PATH (the trials)"
    if warm_start and resume:
        return "--warm_start seeds a new sweep's study, --resume continues its own: drop one"
    return None


def load_warm_start(path: str, space: SearchSpace, metric: str, top: int) -> WarmStart:
    """Reads the earlier experiment at `path` into trials of `space` for a sweep on
    `metric` (see the module docstring); raises ExperimentError saying what to change."""
    where = absolute(path)
    flag = f"--warm_start {path}"
    journal = "://" not in where and Path(where).is_file()
    trials = (_read_journal if journal else _read_folder)(where, flag, metric, space)
    kept = _in_space(trials, space, flag)
    print(_counted(kept, where))
    return WarmStart(kept, _top(kept, metric_spec(metric).mode, top, flag))


def _check_compatible(
    flag: str, earlier: str | None, mode: str, names: list[str], metric: str, space: SearchSpace
) -> None:
    """Raises ExperimentError unless the earlier sweep (on `earlier`, None: unrecorded, in
    direction `mode`, searching `names`) selected as this one does, on no parameter that
    `space` lacks."""
    want = metric_spec(metric).mode
    if (earlier or metric, mode) != (metric, want):
        raise ExperimentError(
            f"{flag}: that experiment selected on {earlier or 'its metric'} ({mode}), "
            f"this sweep on {metric} ({want}); give --metric {earlier or metric} or "
            "warm-start from a sweep of the same metric"
        )
    lacking = sorted(set(names) - set(space.params))
    if lacking:
        raise ExperimentError(
            f"{flag}: it searched {', '.join(lacking)}, which the space {space.name!r} does "
            "not: search them in the new space too, or pin them there (--set NAME=VALUE for a "
            "training flag) to keep the trials at that value"
        )


def _read_folder(path: str, flag: str, metric: str, space: SearchSpace) -> list[Earlier]:
    """The finished trials of an experiment folder, once it is checked against the sweep."""
    fs, where = filesystem(path)
    if fs.get_file_info(where).type != pyarrow.fs.FileType.Directory:
        raise ExperimentError(f"{flag}: no such experiment folder or Optuna journal")
    record = read_record(path) or {}
    try:
        text = record.get("space") or read_text(f"{path}/search_space.yaml")
    except FileNotFoundError:
        raise ExperimentError(
            f"{flag}: not an experiment folder (it has no sweep.json or search_space.yaml); "
            "give the folder of a `python -m wsl_ray.tune` sweep, or its optuna.journal"
        ) from None
    earlier = parse_space(text, Path(path))
    selected = record.get("metric") or DEFAULT_METRIC
    mode = record.get("mode") or metric_spec(selected).mode
    _check_compatible(flag, selected, mode, list(earlier.params), metric, space)
    if changed := _config_changes(earlier.config, space):
        print(f"note: {flag}: its trials ran with other settings: {'; '.join(changed)}")
    try:
        rows = collect_rows(path)
    except CollectError as err:
        raise ExperimentError(f"{flag}: {err}") from None
    trials = []
    for row in rows:
        state = STATE_OF.get(row["status"])
        if state is None or row.get(metric) is None:
            continue
        config = {k[7:]: v for k, v in row.items() if k.startswith("config/") and v is not None}
        steps = {h["epoch"]: h[metric] for h in row["history"] if h.get(metric) is not None}
        value = row[metric] if state == TrialState.COMPLETE else None
        trials.append(Earlier(row["trial_number"], state, value, steps, config))
    return trials


def _read_journal(path: str, flag: str, metric: str, space: SearchSpace) -> list[Earlier]:
    """The COMPLETE and PRUNED trials of the one study of an Optuna journal file, once it is
    checked against the sweep (its metric from a sweep.json beside it, or the study's
    metric name, where either exists)."""
    try:
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
        names = optuna.study.get_all_study_names(storage)
    except (ValueError, UnicodeDecodeError):
        names = []
    if len(names) != 1:
        raise ExperimentError(
            f"{flag}: a file, but not the Optuna journal of one study (it holds "
            f"{len(names)}: {', '.join(names) or 'none'}); give a sweep's optuna.journal"
        )
    study = optuna.load_study(study_name=names[0], storage=storage)
    mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
    record = read_record(str(Path(path).parent)) if Path(path).name == STUDY_FILE else None
    selected = (record or {}).get("metric") or (study.metric_names or [None])[0]
    trials = [
        Earlier(t.number, t.state, t.value, dict(t.intermediate_values), t.params)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    ]
    _check_compatible(
        flag, selected, mode, sorted({n for t in trials for n in t.config}), metric, space
    )
    return trials


def _config_changes(config: dict[str, Any], space: SearchSpace) -> list[str]:
    """The fixed settings the earlier sweep ran with that the new one changes (run-only keys
    and the searched parameters aside)."""
    kept = {k: v for k, v in config.items() if k not in space.params and k not in RUN_ONLY}
    given = {k: v for k, v in space.config.items() if k in kept}
    return space_differences({"config": kept}, {"config": given})


def _in_space(trials: list[Earlier], space: SearchSpace, flag: str) -> list[FrozenTrial]:
    """The earlier trials as trials of `space`'s study, those outside it left out (noted)."""
    distributions = space.distributions()
    kept, outside = [], []
    for t in trials:
        missing = [n for n in space.params if n not in t.config]
        if missing:
            raise ExperimentError(
                f"{flag}: its trials have no value for {', '.join(missing)}, which the space "
                f"{space.name!r} searches; search the same parameters, or pin these to a value"
            )
        params = {n: t.config[n] for n in space.params}
        bad = next((n for n in params if not contains(space.params[n], params[n])), None)
        if bad:
            outside.append(f"{bad}={params[bad]!r} outside {_shown(space.params[bad])}")
            continue
        kept.append(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                value=t.value,
                state=t.state,
                intermediate_values=t.intermediate,
                user_attrs={"warm_start_number": t.number},
            )
        )
    if outside and not kept:
        raise ExperimentError(
            f"{flag}: none of its {len(trials)} finished trials lies in the space "
            f"{space.name!r} (e.g. {outside[0]}); widen the new ranges or warm-start from "
            "another experiment"
        )
    if not kept:
        raise ExperimentError(f"{flag}: it has no finished trial (TERMINATED or STOPPED)")
    if outside:
        print(
            f"note: {flag}: {len(outside)} of its {len(trials)} finished trials lie outside "
            f"the new space and are left out (e.g. {outside[0]})"
        )
    return kept


def _shown(spec: dict[str, Any]) -> str:
    if spec["distribution"] == "categorical":
        return f"choices {spec['choices']}"
    return f"{spec['distribution']} [{spec['low']}, {spec['high']}]"


def _counted(kept: list[FrozenTrial], source: str) -> str:
    """The line saying what the warm start adds and how TPE's start-up counts it."""
    pruned = sum(t.state == TrialState.PRUNED for t in kept)
    then = (
        "TPE models from the first suggestion"
        if len(kept) >= TPE_STARTUP
        else f"TPE samples {TPE_STARTUP - len(kept)} more at random before modelling"
    )
    return (
        f"warm start: {len(kept)} trials of {source} ({len(kept) - pruned} complete, {pruned} "
        f"pruned) join the study; they count toward TPE's n_startup_trials ({TPE_STARTUP}): "
        f"{then}"
    )


def _top(kept: list[FrozenTrial], mode: str, k: int, flag: str) -> list[dict[str, Any]]:
    """The params of the best k complete trials (distinct points), best first."""
    complete = [t for t in kept if t.state == TrialState.COMPLETE]
    complete.sort(key=lambda t: -t.value if mode == "max" else t.value)
    points: list[dict[str, Any]] = []
    for t in complete:
        if len(points) < k and t.params not in points:
            points.append(dict(t.params))
    if len(points) < k:
        print(f"note: {flag}: {len(points)} distinct complete trials to run first, not {k}")
    return points


def seed_study(storage: Any, name: str, mode: str, warm: WarmStart) -> None:
    """Creates the sweep's study `name` in `storage` holding the warm trials (the searcher
    then loads it, and enqueues its first points after them)."""
    direction = "maximize" if mode == "max" else "minimize"
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, load_if_exists=True
    )
    study.add_trials(warm.trials)


def first_points(warm: WarmStart | None, first: dict[str, Any]) -> list[dict[str, Any]] | None:
    """What the searcher runs before it samples: the warm start's top points, then the
    space's `first` point unless one of them is it."""
    points = list(warm.top) if warm else []
    if first and first not in points:
        points.append(first)
    return points or None
