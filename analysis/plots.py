"""PNG plots of a sweep: the metric against each searched parameter, learning curves of the
top trials, and parallel coordinates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyarrow as pa  # noqa: E402

STATUS_MARKERS = {"TERMINATED": "o", "STOPPED": "x", "ERROR": "s", "DIVERGED": "^"}


def metric_vs_params(table: pa.Table, params: dict[str, dict], metric: str, out: Path) -> Path:
    """One panel per searched parameter: metric of every trial, log axis for loguniform."""
    rows = [r for r in table.to_pylist() if r.get(metric) is not None]
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.4), squeeze=False)
    for ax, (name, spec) in zip(axes[0], params.items(), strict=True):
        for status, marker in STATUS_MARKERS.items():
            pts = [(r[f"config/{name}"], r[metric]) for r in rows if r["status"] == status]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, [100 * y for y in ys], marker=marker, label=status.lower())
        if spec["distribution"] == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{metric} against each searched parameter")
    return _save(fig, out / "metric_vs_params.png")


def learning_curves(table: pa.Table, metric: str, out: Path, top: int = 5) -> Path:
    """`metric` against epoch for the `top` best trials (and the rest in grey)."""
    rows = sorted(
        (r for r in table.to_pylist() if r.get(metric) is not None), key=lambda r: -r[metric]
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, row in enumerate(rows):
        points = [
            (h["epoch"], 100 * h[metric]) for h in row["history"] if h.get(metric) is not None
        ]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        if i < top:
            ax.plot(xs, ys, marker="o", label=f"{row['trial_id']} ({100 * row[metric]:.1f})")
        else:
            ax.plot(xs, ys, color="0.8", linewidth=1)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"learning curves, top {min(top, len(rows))} trials")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, out / "learning_curves.png")


def parallel_coordinates(table: pa.Table, params: dict[str, dict], metric: str, out: Path) -> Path:
    """One line per trial through its (scaled) parameter values and metric, coloured by it."""
    rows = [r for r in table.to_pylist() if r.get(metric) is not None]
    names = [*params, metric]
    columns = {
        n: [_axis_value(r.get(f"config/{n}", r.get(n)), params.get(n)) for r in rows] for n in names
    }
    scaled = {n: _unit(v) for n, v in columns.items()}
    values = [r[metric] for r in rows]
    lo, hi = min(values), max(values)
    cmap = plt.get_cmap("viridis")
    fig, ax = plt.subplots(figsize=(1.8 * len(names) + 2, 4))
    for i in sorted(range(len(rows)), key=lambda j: values[j]):
        colour = cmap((values[i] - lo) / (hi - lo) if hi > lo else 1.0)
        ax.plot(range(len(names)), [scaled[n][i] for n in names], color=colour, alpha=0.8)
    labels = [
        f"log10 {n}" if params.get(n, {}).get("distribution") == "loguniform" else n for n in names
    ]
    ax.set_xticks(range(len(names)), labels)
    for x, n in enumerate(names):
        raw = [v for v in columns[n] if v is not None]
        if raw:
            ax.annotate(_fmt(min(raw)), (x, -0.06), ha="center", fontsize=7)
            ax.annotate(_fmt(max(raw)), (x, 1.03), ha="center", fontsize=7)
    ax.set_yticks([])
    ax.set_ylim(-0.1, 1.1)
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(100 * lo, 100 * hi))
    fig.colorbar(sm, ax=ax, label=f"{metric} (%)")
    ax.set_title("parallel coordinates")
    return _save(fig, out / "parallel_coordinates.png")


def _axis_value(value: Any, spec: dict | None) -> float | None:
    if value is None:
        return None
    if spec and spec["distribution"] == "loguniform":
        return math.log10(value)
    if spec and spec["distribution"] == "categorical" and not isinstance(value, (int, float)):
        return float(spec["choices"].index(value))
    return float(value)


def _unit(values: list[float | None]) -> list[float]:
    known = [v for v in values if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    return [0.5 if v is None or hi == lo else (v - lo) / (hi - lo) for v in values]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
