"""Tables of collected trials: the papers' Table 1, the top-k of a sweep, mean ± std over seeds.

Every table is a list of rows (dicts) that `render` writes as Markdown, LaTeX or CSV.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from typing import Any

import pyarrow as pa

from wsl_ray.family import FAMILY_METHODS, family_of

METHOD_NAMES = {
    "w_mse": "W-MSE", "cw_rgp": "CW-RGP", "contrastive": "Contrastive", "byol": "BYOL",
    "whitened_mse": "Whitened MSE", "barlow_twins": "Barlow Twins", "vicreg": "VICReg",
    "simsiam": "SimSiam", "zero_icl": "zero-ICL",
}  # fmt: skip
# config columns that do not define a configuration: what repeats differ in
NOT_CONFIG = {"config/seed", "config/out", "config/data_dir", "config/wandb", "config/device"}


def method_label(row: dict[str, Any]) -> str:
    """'W-MSE 4' for W-MSE with 4 views, as the papers name them; a whitened_mse row names
    its whitening, e.g. 'Whitened MSE (ZCA channel, 4 random groups) 2', so that tables
    group the whitening family's trials by matrix, axis and grouping."""
    method = row.get("method")
    name = METHOD_NAMES.get(method, str(method))
    if method == "whitened_mse":
        config = {k.removeprefix("config/"): v for k, v in row.items() if k.startswith("config/")}
        name += f" ({family_of(config | {'method': method}).label})"
    views = row.get("config/num_samples") or 2  # the default when a sweep did not set it
    return f"{name} {views}" if method in FAMILY_METHODS else name


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def paper_table(table: pa.Table, metric: str = "acc") -> list[dict[str, Any]]:
    """Best trial per (method, dataset) by `metric`, cells 'linear top-1 / 5-NN' in %,
    methods as rows and datasets as columns, like Table 1 of the W-MSE paper."""
    best: dict[tuple[str, str], dict] = {}
    for row in table.to_pylist():
        if row.get(metric) is None:
            continue
        key = (method_label(row), row["dataset"])
        if key not in best or row[metric] > best[key][metric]:
            best[key] = row
    datasets = sorted({d for _, d in best})
    rows = []
    for method in sorted({m for m, _ in best}):
        cells = {
            d: f"{_pct(best[(method, d)]['acc'])} / {_pct(best[(method, d)]['acc_knn'])}"
            if (method, d) in best
            else "-"
            for d in datasets
        }
        rows.append({"method": method, **cells})
    return rows


def top_trials(table: pa.Table, metric: str = "acc_knn", k: int = 10) -> list[dict[str, Any]]:
    """The k best trials by `metric`, with the config values that vary between trials."""
    rows = [r for r in table.to_pylist() if r.get(metric) is not None]
    rows.sort(key=lambda r: -r[metric])
    varying = [
        c for c in table.column_names
        if c.startswith("config/") and len({str(v) for v in table.column(c).to_pylist()}) > 1
    ]  # fmt: skip
    keep = ["trial_id", "method", "dataset", "status", "epochs", "acc", "acc_5", "acc_knn"]
    return [
        {c: (_pct(r[c]) if c in ("acc", "acc_5", "acc_knn") else r[c]) for c in keep}
        | {c.removeprefix("config/"): r[c] for c in varying}
        for r in rows[:k]
    ]


def seed_table(table: pa.Table, metrics: tuple[str, ...] = ("acc", "acc_knn")) -> list[dict]:
    """Mean ± sample standard deviation over repeats of a configuration (seeds differ)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    config_cols = [c for c in table.column_names if c.startswith("config/") and c not in NOT_CONFIG]
    for row in table.to_pylist():
        groups[tuple(str(row[c]) for c in config_cols)].append(row)
    out = []
    for rows in groups.values():
        first = rows[0]
        entry = {"method": method_label(first), "dataset": first["dataset"], "runs": len(rows)}
        for m in metrics:
            values = [r[m] for r in rows if r.get(m) is not None]
            mean = statistics.fmean(values) if values else None
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[m] = "-" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}"
        varying = {c.removeprefix("config/"): first[c] for c in config_cols if _varies(table, c)}
        out.append(entry | varying)
    return sorted(out, key=lambda e: (e["method"], e["dataset"]))


def _varies(table: pa.Table, column: str) -> bool:
    return len({str(v) for v in table.column(column).to_pylist()}) > 1


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
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
