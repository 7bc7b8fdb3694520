"""The end-of-sweep summary: the best trials as a Markdown table, how the default point
(and the untrained encoder) did, the selected trial's test metric, whether an early epoch
ranked the trials as the end did, and the sweep's bill."""

from __future__ import annotations

import math
from typing import Any

from ..utils.markdown import markdown_table
from .agreement import agreement_line
from .bill import bill_line, sweep_bill
from .experiment import Experiment, add_to_record
from .metrics import metric_spec
from .results import STATUSES, collect_rows, ranked, rows_table, write_parquet
from .stats import format_agreement, rung_agreements


def format_table(rows: list[dict[str, Any]], metric: str, searched: list[str], top: int = 5) -> str:
    """The best `top` trials by `metric`, with their searched values, as Markdown."""
    header = ["rank", "trial", "status", metric, "epochs", *searched]
    cells = [
        [i, r["trial_id"], r["status"], _metric(metric, r[metric]), r["epochs"]]
        + [_fmt(r.get(f"config/{name}")) for name in searched]
        for i, r in enumerate(ranked(rows, metric)[:top], 1)
    ]
    return markdown_table(header, cells)


def _metric(name: str, value: float) -> str:
    return f"{value:.2%}" if metric_spec(name).percent else f"{value:.2f}"


def _gap(name: str, diff: float) -> str:
    return f"{diff * 100:+.1f} points" if metric_spec(name).percent else f"{diff:+.2f}"


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.3g}"
    return str(value)


def rung_title(metric: str, ended: int) -> str:
    """What the rank agreement of early and final `metric` covers, over the `ended` trials
    that ran their whole budget, or why there is none (fewer than 3 such trials)."""
    if ended < 3:
        return (
            f"rank agreement of early and final {metric}: {ended} trial(s) ran their whole "
            f"budget with a {metric}; it needs 3 or more (--scheduler fifo runs every trial "
            "to the end)"
        )
    return (
        f"rank agreement of each evaluated epoch's {metric} with the final one, over the "
        f"{ended} trials that ran their whole budget (95% intervals: Fisher z, variances "
        "1.06/(n-3) for Spearman, 0.437/(n-4) for Kendall)"
    )


def early_ranking(rows: list[dict[str, Any]], metric: str, experiment: str) -> str:
    """One line: how the first evaluated epoch ranks the trials that ran to the end against
    their final `metric` (Kendall's tau-b and its 95% interval), and from which epoch on
    every evaluated epoch's interval lies above 0; `rung_title` when it cannot be said."""
    ended, agreements = rung_agreements(rows, metric)
    if ended >= 3 and not agreements:
        return (
            f"rank agreement of early and final {metric}: no epoch before the end was "
            f"evaluated in 3 or more of the {ended} trials that ran their whole budget"
        )
    if not agreements:
        return rung_title(metric, ended)
    first = agreements[0]
    above = [a.kendall_interval is not None and a.kendall_interval[0] > 0 for a in agreements]
    since = next((a.epoch for i, a in enumerate(agreements) if all(above[i:])), None)
    when = (
        f"predictive (tau's 95% interval above 0) from epoch {since} on"
        if since is not None
        else "no epoch before the end has tau's 95% interval above 0"
    )
    return (
        f"early ranking: epoch {first.epoch}'s {metric} ranks the {first.trials} trials that "
        f"ran their whole budget as the end does with Kendall tau-b "
        f"{format_agreement(first.kendall, first.kendall_interval)}; {when} "
        f"(every epoch: python -m analysis rungs {experiment})"
    )


def summarize_sweep(
    experiment: str,
    metric: str,
    space,
    baseline: dict[str, float] | None = None,
    costs: tuple[Any, dict[str, float], float] | None = None,
) -> list[dict[str, Any]]:
    """Collects the experiment into results.parquet and prints its best trials, how the first
    (default) point and, if given, the untrained encoder did, the selected trial's test
    metric (never seen by the search), how the label-free metrics agree with val_acc_knn
    (`agreement_line`) and, given `costs` (the trials' resources, the plan's
    trial-epochs, the wall seconds), the bill, also written into sweep.json and the Parquet
    metadata."""
    rows = collect_rows(experiment)
    searched = [*space.derived, *(k for k in space.params if k not in space.derived)]
    uri = f"{experiment}/results.parquet"
    name = Experiment.at(experiment).name
    bill = sweep_bill(rows, *costs) if costs else None
    if bill:
        add_to_record(experiment, "bill", bill)
    bills = {name: bill} if bill else {}
    write_parquet(rows_table(rows, {name: space.to_yaml()}, {name: metric}, bills), uri)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    print(f"\n== sweep {name}: {len(rows)} trials ==")
    print(", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))
    print(format_table(rows, metric, searched))
    best = next(iter(ranked(rows, metric)), None)
    first = rows[0] if rows else None
    if counts["INTERRUPTED"]:
        print(
            f"{counts['INTERRUPTED']} trial(s) interrupted before they ended (not ranked); "
            f"continue them with --resume --name {name}"
        )
    failed = [r for r in rows if r["status"] == "ERROR"]
    if failed:
        print(f"{len(failed)} trial(s) failed; their errors:")
        print("\n".join(f"  {r['path']}/error.txt" for r in failed))
    test = metric_spec(metric).test
    if best:
        line = f"\nvalidation-selected best ({best['trial_id']}): {metric} "
        line += _metric(metric, best[metric])
        if best.get(test) is not None:
            line += f"; {test} {best[test]:.2%} (computed once at the end, never seen by Tune)"
        print(line)
    if space.first and best and first and first.get(metric) is not None:
        print(
            f"default config ({first['trial_id']}): {metric} {_metric(metric, first[metric])}; "
            f"best {_gap(metric, best[metric] - first[metric])} on validation"
        )
    if baseline and best:
        gains = ", ".join(
            f"{key} {_metric(key, baseline[key])} (best {_gap(key, best[key] - baseline[key])})"
            for key in dict.fromkeys((metric, "val_acc_knn", "val_acc"))
            if best.get(key) is not None and key in baseline
        )
        print(f"untrained encoder (default config): {gains}")
    print(early_ranking(rows, metric, experiment))
    if line := agreement_line(rows, experiment):
        print(line)
    if bill:
        print(bill_line(bill))
    print(f"all trials: {uri}")
    return rows
