"""Would a label-free metric have picked what the labels picked? One sweep, each label-free
metric (rankme, alpha_req, lidar) against the labelled `val_acc_knn`:

- Kendall's tau-b between the two over the trials, with its 95% interval, at the final epoch
  (the TERMINATED trials) and at each earlier evaluated epoch (the rungs ASHA decides at:
  every trial that reached that epoch, STOPPED ones included). The label-free metric enters
  oriented (negated where lower is better, as alpha_req), so tau > 0 means agreement.
- The regret of selecting on it: among the TERMINATED trials, the validation and the test
  k-NN accuracy of the trial it ranks first, minus the best of each over those trials.
- Whether it picks the trial that val_acc_knn picks.

`python -m analysis agreement EXPERIMENT` prints the table (`agreement_rows`); the sweep's
summary prints `agreement_line`. Torch-free and Ray-free, as the analysis package needs.
"""

from __future__ import annotations

import math
from typing import Any

from .metrics import LABEL_FREE, metric_spec, score
from .results import RANKED
from .stats import FISHER_VARIANCE, kendall_tau_b, rank_interval

REFERENCE = "val_acc_knn"  # the labelled metric each label-free one is compared with
MIN_TAU = 3  # trials for a tau worth printing
MIN_INTERVAL = FISHER_VARIANCE["kendall"][1] + 1  # the variance 0.437 / (n - 4) needs n > 4


def _tau(x: list[float], y: list[float]) -> float | None:
    """Kendall's tau-b of paired values (`stats.kendall_tau_b`); None where x or y is constant."""
    tau = kendall_tau_b(x, y)
    return None if math.isnan(tau) else tau


def _pairs(trials: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    both = [t for t in trials if t.get(metric) is not None and t.get(REFERENCE) is not None]
    return [score(metric, t[metric]) for t in both], [t[REFERENCE] for t in both]


def _tau_cell(trials: list[dict[str, Any]], metric: str) -> str:
    """tau-b of `metric` against REFERENCE over `trials` (dicts holding both), as a cell."""
    x, y = _pairs(trials, metric)
    n = len(x)
    if n < MIN_TAU:
        return f"needs {MIN_TAU} or more trials (has {n})"
    tau = _tau(x, y)
    if tau is None:
        return f"undefined: a metric is constant (n={n})"
    interval = rank_interval(tau, n, "kendall") if abs(tau) < 1 else None
    if interval is None:
        why = "at |tau| = 1" if n >= MIN_INTERVAL else f"needs {MIN_INTERVAL}+ trials"
        return f"{tau:+.2f} (no interval: {why}), n={n}"
    return f"{tau:+.2f} [{interval[0]:+.2f}, {interval[1]:+.2f}], n={n}"


def _at(row: dict[str, Any], epoch: int) -> dict[str, Any] | None:
    return next((h for h in row.get("history") or [] if h.get("epoch") == epoch), None)


def _choices(done: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    """Among `done` (TERMINATED rows), the trial `metric` picks, the one REFERENCE picks, and
    the regrets: {pick, reference_pick, val_regret, test_regret}; None without such trials.
    Ties go to the earlier trial, as the summary's ranking does."""
    test = metric_spec(REFERENCE).test
    done = [r for r in done if all(r.get(k) is not None for k in (metric, REFERENCE, test))]
    if not done:
        return None
    pick = max(done, key=lambda r: score(metric, r[metric]))
    return {
        "pick": pick,
        "reference_pick": max(done, key=lambda r: r[REFERENCE]),
        "val_regret": pick[REFERENCE] - max(r[REFERENCE] for r in done),
        "test_regret": pick[test] - max(r[test] for r in done),
        "trials": len(done),
    }


def _computed(rows: list[dict[str, Any]]) -> list[str]:
    """The label-free metrics that some ranked trial reported."""
    return [m for m in LABEL_FREE if any(r.get(m) is not None for r in rows)]


def agreement_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per label-free metric the trials computed (results-schema rows of one sweep):
    tau-b at the final epoch and at each earlier evaluated epoch, the regrets in points and
    whether it picks REFERENCE's trial (module docstring). ValueError when no ranked trial
    has REFERENCE or none has a label-free metric."""
    ranked = [r for r in rows if r["status"] in RANKED]
    if not any(r.get(REFERENCE) is not None for r in ranked):
        raise ValueError(f"no finished or stopped trial has {REFERENCE} (a sweep of --eval_on val)")
    metrics = _computed(ranked)
    if not metrics:
        raise ValueError(f"no trial computed a label-free metric ({', '.join(LABEL_FREE)})")
    done = [r for r in ranked if r["status"] == "TERMINATED"]
    final = max((r["epochs"] for r in done), default=None)
    rungs = sorted(
        {h["epoch"] for r in ranked for h in r.get("history") or [] if h.get(REFERENCE) is not None}
        - {final}
    )
    out = []
    for metric in metrics:
        row = {
            "metric": f"{metric} ({metric_spec(metric).mode})",
            "tau_b final" + (f" (epoch {final})" if final else ""): _tau_cell(done, metric),
        }
        for epoch in rungs:
            reached = [h for h in (_at(r, epoch) for r in ranked) if h is not None]
            row[f"tau_b epoch {epoch}"] = _tau_cell(reached, metric)
        chosen = _choices(done, metric)
        if chosen is None:
            row |= {"val regret": "-", "test regret": "-", "same trial": "-"}
        else:
            pick, ref = chosen["pick"], chosen["reference_pick"]
            row |= {
                "val regret": f"{100 * chosen['val_regret']:+.2f}",
                "test regret": f"{100 * chosen['test_regret']:+.2f}",
                "same trial": f"yes ({pick['trial_id']})"
                if pick is ref
                else f"no ({pick['trial_id']}, not {ref['trial_id']})",
            }
        out.append(row)
    return out


def agreement_line(rows: list[dict[str, Any]], experiment: str) -> str | None:
    """The summary's one line: each computed label-free metric's final-epoch tau-b against
    REFERENCE and its test regret (or why there is none), and the command that prints the
    whole table; None when no trial computed a label-free metric and REFERENCE."""
    done = [r for r in rows if r["status"] == "TERMINATED"]
    metrics = [m for m in _computed(done) if _pairs(done, m)[0]]
    if not metrics:
        return None
    parts = []
    for metric in metrics:
        x, y = _pairs(done, metric)
        tau = _tau(x, y) if len(x) >= MIN_TAU else None
        if len(x) < MIN_TAU:
            part = f"{metric} tau_b needs {MIN_TAU}+ finished trials"
        else:
            part = f"{metric} tau_b " + ("undefined (constant)" if tau is None else f"{tau:+.2f}")
        chosen = _choices(done, metric)
        if chosen is not None:
            part += f", test regret {100 * chosen['test_regret']:+.2f} points"
        parts.append(part)
    return (
        f"label-free selection against {REFERENCE} over the finished trials: "
        + "; ".join(parts)
        + f" (python -m analysis agreement {experiment})"
    )
