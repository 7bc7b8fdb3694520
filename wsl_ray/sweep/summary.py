"""The end-of-sweep summary: the best trials as a Markdown table, how the default point
(and the untrained encoder) did, the selected trial's test metric, and the sweep's bill."""

from __future__ import annotations

import math
from typing import Any

from ..utils.markdown import markdown_table
from .bill import bill_line, sweep_bill
from .experiment import Experiment, add_to_record
from .metrics import metric_spec
from .results import STATUSES, collect_rows, ranked, rows_table, write_parquet


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


def summarize_sweep(
    experiment: str,
    metric: str,
    space,
    baseline: dict[str, float] | None = None,
    costs: tuple[Any, dict[str, float], float] | None = None,
) -> list[dict[str, Any]]:
    """Collects the experiment into results.parquet and prints its best trials, how the first
    (default) point and, if given, the untrained encoder did, the selected trial's test
    metric (never seen by the search) and, given `costs` (the trials' resources, the plan's
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
    if bill:
        print(bill_line(bill))
    print(f"all trials: {uri}")
    return rows
