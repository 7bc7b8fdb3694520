"""Hyperparameter importances with Optuna (PED-ANOVA, its default; fANOVA with scikit-learn).

An experiment folder's stored study (optuna.journal, written by wsl_ray.tune) is read when
the metric is the one the sweep optimised: its COMPLETE trials are what TPE learned from.
Otherwise the study is rebuilt from the collected trials with `optuna.trial.create_trial`,
using the distributions of the experiment's search space.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import optuna
import pyarrow as pa

from wsl_ray.sweep.experiment import Experiment
from wsl_ray.sweep.metrics import DEFAULT_METRIC, metric_spec
from wsl_ray.sweep.results import RANKED

EVALUATORS = {
    "ped-anova": optuna.importance.PedAnovaImportanceEvaluator,
    "fanova": optuna.importance.FanovaImportanceEvaluator,
}


NEEDS = {"fanova": "sklearn"}  # evaluator -> the module it imports when it runs


def check_evaluator(name: str) -> None:
    """Raises ValueError, before any work, for an evaluator whose library is missing."""
    module = NEEDS.get(name)
    if module and importlib.util.find_spec(module) is None:
        raise ValueError(
            f"--evaluator {name} needs scikit-learn: pip install scikit-learn, or use "
            "--evaluator ped-anova (the default)"
        )


def distributions(
    params: dict[str, dict[str, Any]],
) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of a search space's `params` section."""
    out = {}
    for name, spec in params.items():
        kind = spec["distribution"]
        if kind == "categorical":
            out[name] = optuna.distributions.CategoricalDistribution(spec["choices"])
        elif kind == "int":
            out[name] = optuna.distributions.IntDistribution(
                spec["low"], spec["high"], log=spec.get("log", False), step=spec.get("step", 1)
            )
        else:
            out[name] = optuna.distributions.FloatDistribution(
                spec["low"], spec["high"], log=kind == "loguniform"
            )
    return out


def stored_study(experiment: str) -> tuple[optuna.Study | None, str | None]:
    """(the sweep's stored Optuna study, EXPERIMENT/optuna.journal, and the metric it
    optimised), or (None, None). A remote experiment's journal is copied locally first."""
    import json
    import tempfile

    import pyarrow.fs

    from wsl_ray.utils.storage import filesystem, read_text

    root = experiment.rstrip("/")
    fs, path = filesystem(f"{root}/optuna.journal")
    if experiment.endswith(".parquet") or fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None, None
    local = path
    if "://" in root:
        local = tempfile.mkdtemp() + "/optuna.journal"
        pyarrow.fs.copy_files(
            path, local, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
        )
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(local))
    try:
        metric = json.loads(read_text(f"{root}/sweep.json"))["metric"]
    except FileNotFoundError:
        metric = None
    names = optuna.get_all_study_names(storage)
    name = Experiment.at(root).name
    if name not in names and len(names) == 1:  # an experiment folder renamed after the sweep
        name = names[0]
    return optuna.load_study(study_name=name, storage=storage), metric


MIN_TRIALS = 10  # below this many trials an importance ranking is mostly noise


def study_importances(study: optuna.Study, evaluator: str = "ped-anova") -> list[dict[str, Any]]:
    """[{parameter, importance}] of a study's COMPLETE trials, most important first. A
    parameter with one value in all of them (pinned by --set, or never varied) explains
    nothing: it is listed last as not varied, not ranked. With fewer than MIN_TRIALS trials
    the last row says that the ranking is rough."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 2:
        raise ValueError(f"importances need at least 2 complete trials, the study has {len(done)}")
    names = sorted({n for t in done for n in t.params})
    values = {n: {json.dumps(t.params.get(n), default=str) for t in done} for n in names}
    varied = [n for n in names if len(values[n]) > 1]
    if not varied:
        raise ValueError(f"no parameter takes more than one value in the {len(done)} trials")
    scores = optuna.importance.get_param_importances(
        study, evaluator=EVALUATORS[evaluator](), params=varied
    )
    rows = [{"parameter": p, "importance": f"{v:.3f}"} for p, v in scores.items()]
    rows += [
        {"parameter": n, "importance": f"not varied (always {next(iter(values[n]))})"}
        for n in names
        if n not in varied
    ]
    if len(done) < MIN_TRIALS:
        rows.append(
            {
                "parameter": f"(only {len(done)} trials)",
                "importance": f"rough: a ranking needs about {MIN_TRIALS} or more",
            }
        )
    return rows


def importances(
    table: pa.Table,
    space: dict[str, Any],
    metric: str = DEFAULT_METRIC,
    evaluator: str = "ped-anova",
) -> list[dict[str, Any]]:
    """[{parameter, importance}] over the trials that reported `metric` (ASHA-stopped ones
    count with their last value), most important first, from a study rebuilt from rows."""
    dists = distributions(space["params"])
    trials = []
    for row in table.to_pylist():
        if row.get(metric) is None or row.get("status") not in (*RANKED, None):
            continue
        params = {n: row.get(f"config/{n}") for n in dists}
        if any(v is None for v in params.values()):
            continue
        trials.append(
            optuna.trial.create_trial(params=params, distributions=dists, value=row[metric])
        )
    if len(trials) < 2:
        raise ValueError(f"importances need at least 2 trials with {metric}, got {len(trials)}")
    study = optuna.create_study(direction=metric_spec(metric).mode + "imize")
    study.add_trials(trials)
    return study_importances(study, evaluator)
