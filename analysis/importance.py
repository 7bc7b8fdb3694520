"""Hyperparameter importances with Optuna (PED-ANOVA, its default; fANOVA with scikit-learn).

The study is rebuilt from the collected trials with `optuna.trial.create_trial`, using
the distributions of the experiment's search space.
"""

from __future__ import annotations

from typing import Any

import optuna
import pyarrow as pa

EVALUATORS = {
    "ped-anova": optuna.importance.PedAnovaImportanceEvaluator,
    "fanova": optuna.importance.FanovaImportanceEvaluator,
}


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


def importances(
    table: pa.Table, space: dict[str, Any], metric: str = "acc_knn", evaluator: str = "ped-anova"
) -> list[dict[str, Any]]:
    """[{parameter, importance}] over the trials that reported `metric` (ASHA-stopped ones
    count with their last value, as OptunaSearch records them), most important first."""
    dists = distributions(space["params"])
    trials = []
    for row in table.to_pylist():
        if row.get(metric) is None:
            continue
        params = {n: row.get(f"config/{n}") for n in dists}
        if any(v is None for v in params.values()):
            continue
        trials.append(
            optuna.trial.create_trial(params=params, distributions=dists, value=row[metric])
        )
    if len(trials) < 2:
        raise ValueError(f"importances need at least 2 trials with {metric}, got {len(trials)}")
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    scores = optuna.importance.get_param_importances(study, evaluator=EVALUATORS[evaluator]())
    return [{"parameter": p, "importance": f"{v:.3f}"} for p, v in scores.items()]
