"""Tables of collected trials: the papers' Table 1, the top-k of a sweep, mean ± std over seeds.

Every table is a list of rows (dicts) that `render` writes as Markdown, LaTeX or CSV.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

import pyarrow as pa

from wsl_ray.methods import SPECS
from wsl_ray.sweep.metrics import DEFAULT_METRIC, metric_spec, score
from wsl_ray.sweep.results import RANKED, RUN_ONLY
from wsl_ray.sweep.stats import format_agreement, mean_std, rung_agreements, spearman
from wsl_ray.utils.markdown import markdown_table

# config columns that do not define a configuration: what repeats differ in
NOT_CONFIG = {f"config/{k}" for k in RUN_ONLY}


def method_label(row: dict[str, Any]) -> str:
    """'W-MSE 4' for W-MSE with 4 views, as the papers name them; a whitened_mse row names
    its whitening, e.g. 'Whitened MSE (ZCA channel, 4 random groups) 2', so that tables
    group the whitening family's trials by matrix, axis and grouping."""
    method = row.get("method")
    if method not in SPECS:
        return str(method)
    config = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")}
    return SPECS[method].table_label(config)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def paper_table(table: pa.Table, metric: str = "val_acc") -> list[dict[str, Any]]:
    """Best trial per (method, dataset) by `metric` (a validation metric: selecting on test
    would bias the numbers up), among trials with test metrics; cells 'linear top-1 / 5-NN'
    test accuracy in %, methods as rows and datasets as columns, like Table 1 of the W-MSE
    paper."""
    best: dict[tuple[str, str], dict] = {}
    for row in table.to_pylist():
        if row.get(metric) is None or row.get("test_acc") is None:
            continue
        key = (method_label(row), row["dataset"])
        if key not in best or row[metric] > best[key][metric]:
            best[key] = row
    datasets = sorted({d for _, d in best})
    rows = []
    for method in sorted({m for m, _ in best}):
        cells = {
            d: f"{_pct(best[(method, d)]['test_acc'])} / {_pct(best[(method, d)]['test_acc_knn'])}"
            if (method, d) in best
            else "-"
            for d in datasets
        }
        rows.append({"method": method, **cells})
    return rows


def top_trials(table: pa.Table, metric: str = DEFAULT_METRIC, k: int = 10) -> list[dict[str, Any]]:
    """The k best trials by `metric`, with the config values that vary between trials."""
    rows = [r for r in table.to_pylist() if r.get(metric) is not None and r["status"] in RANKED]
    rows.sort(key=lambda r: -score(metric, r[metric]))
    varying = [
        c
        for c in table.column_names
        if c.startswith("config/") and len({str(v) for v in table.column(c).to_pylist()}) > 1
    ]
    accuracies = ["val_acc_knn", "val_acc", "test_acc_knn", "test_acc"]
    keep = ["trial_id", "method", "dataset", "status", "epochs", *accuracies, "rankme"]
    return [
        {c: (_pct(r.get(c)) if c in accuracies else r.get(c)) for c in keep}
        | {c.removeprefix("config/"): r[c] for c in varying}
        for r in rows[:k]
    ]


def seed_table(
    table: pa.Table, metrics: tuple[str, ...] = ("test_acc", "test_acc_knn")
) -> list[dict]:
    """Mean ± sample standard deviation over repeats of a configuration (seeds differ); one
    run shows its value and "(one seed)", not a spread of zero."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    config_cols = [c for c in table.column_names if c.startswith("config/") and c not in NOT_CONFIG]
    for row in table.to_pylist():
        groups[tuple(str(row[c]) for c in config_cols)].append(row)
    out = []
    for rows in groups.values():
        first = rows[0]
        entry = {"method": method_label(first), "dataset": first["dataset"], "runs": len(rows)}
        for m in metrics:
            entry[m] = mean_std([r[m] for r in rows if r.get(m) is not None], 100)
        varying = {c.removeprefix("config/"): first[c] for c in config_cols if _varies(table, c)}
        out.append(entry | varying)
    return sorted(out, key=lambda e: (e["method"], e["dataset"]))


def _varies(table: pa.Table, column: str) -> bool:
    return len({str(v) for v in table.column(column).to_pylist()}) > 1


def rankme_report(table: pa.Table, metric: str = DEFAULT_METRIC) -> list[dict[str, Any]]:
    """Does label-free RankMe pick what validation accuracy picks? Spearman's rho between
    RankMe and `metric` over the ranked trials (last evaluation of each), and, among the
    trials that ran their whole budget (they have test metrics), the test accuracy of the
    RankMe-selected and of the validation-selected trial, and the gap between them."""
    rows = [r for r in table.to_pylist() if r["status"] in RANKED]
    both = [r for r in rows if r.get("rankme") is not None and r.get(metric) is not None]
    if len(both) < 2:
        raise ValueError(f"RankMe analysis needs 2 or more trials with rankme and {metric}")
    rho = spearman([r["rankme"] for r in both], [r[metric] for r in both])
    out = [
        {"quantity": f"Spearman rho (rankme, {metric})", "value": f"{rho:.3f}", "trials": len(both)}
    ]
    test = metric_spec(metric).test
    done = [r for r in both if r["status"] == "TERMINATED" and r.get(test) is not None]
    if done:
        by_rankme = max(done, key=lambda r: r["rankme"])
        by_val = max(done, key=lambda r: score(metric, r[metric]))
        out += [
            {
                "quantity": f"{test} of the RankMe-selected trial ({by_rankme['trial_id']})",
                "value": _pct(by_rankme[test]),
                "trials": len(done),
            },
            {
                "quantity": f"{test} of the {metric}-selected trial ({by_val['trial_id']})",
                "value": _pct(by_val[test]),
                "trials": len(done),
            },
            {
                "quantity": "RankMe-selected minus validation-selected (points)",
                "value": f"{100 * (by_rankme[test] - by_val[test]):+.2f}",
                "trials": len(done),
            },
        ]
    return out


def rung_report(table: pa.Table, metric: str = DEFAULT_METRIC) -> tuple[int, list[dict[str, Any]]]:
    """(n, rows): does an early epoch rank trials as the end does? Over the n trials of one
    experiment that ran their whole budget, per evaluated epoch: the trials evaluated
    there, Spearman's rho and Kendall's tau-b of its `metric` with the final one, each with
    its 95% Fisher-z interval (`stats.rank_interval`). No rows when n < 3."""
    experiments = set(table.column("experiment").to_pylist())
    if len(experiments) > 1:
        raise ValueError(
            f"the rank agreement compares the trials of one sweep; this table holds "
            f"{len(experiments)} experiments ({', '.join(sorted(map(str, experiments)))})"
        )
    n, agreements = rung_agreements(table.to_pylist(), metric)
    return n, [
        {
            "epoch": a.epoch,
            "trials": a.trials,
            "Spearman rho [95% CI]": format_agreement(a.spearman, a.spearman_interval),
            "Kendall tau-b [95% CI]": format_agreement(a.kendall, a.kendall_interval),
        }
        for a in agreements
    ]


def _cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def render(rows: list[dict[str, Any]], fmt: str = "markdown") -> str:
    """Rows as a Markdown table, a LaTeX tabular, or CSV."""
    if not rows:
        return "(no trials with results)"
    header = list(rows[0])
    cells = [[_cell(r.get(h, "")) for h in header] for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows(cells)
        return buf.getvalue()
    if fmt == "latex":
        esc = [
            [c.replace("_", r"\_").replace("±", r"$\pm$") for c in row] for row in [header, *cells]
        ]
        lines = [r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule"]
        lines.append(" & ".join(esc[0]) + r" \\")
        lines.append(r"\midrule")
        lines += [" & ".join(row) + r" \\" for row in esc[1:]]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines)
    return markdown_table(header, cells)
