"""The end of a sweep: a table of the best trials and a Parquet file of every trial."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

METRICS = ("acc_knn", "acc", "acc_5", "loss", "epoch", "time_total_s")


def trial_rows(grid, space) -> list[dict[str, Any]]:
    """One row per trial: id, status, the trial's full training config, last metrics, error."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        config = space.resolve(result.config or {})
        row = {
            "trial_id": metrics.get("trial_id") or _trial_id(result),
            "trial_number": int(str(metrics.get("experiment_tag", "0")).split("_")[0]),
            "status": "ERROR" if result.error else _status(metrics, config),
            **{f"config/{k}": _plain(v) for k, v in sorted(config.items())},
            **{m: metrics.get(m) for m in METRICS},
            "error": str(result.error).splitlines()[0] if result.error else None,
            "path": result.path,
        }
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial_number"])  # creation order: the first point first


def _trial_id(result) -> str:
    return str(result.path).rstrip("/").rsplit("/", 1)[-1]


def _status(metrics: dict, config: dict) -> str:
    """TERMINATED when the trial ran all its epochs, STOPPED when the scheduler cut it."""
    return "TERMINATED" if metrics.get("epoch") == config.get("epoch") else "STOPPED"


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, (list, dict)) else value


def filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The pyarrow filesystem and path of a local path or a URI (s3://, gs://, ...)."""
    if "://" in uri:
        return pyarrow.fs.FileSystem.from_uri(uri)
    return pyarrow.fs.LocalFileSystem(), str(uri)


def write_parquet(rows: list[dict[str, Any]], uri: str) -> None:
    fs, path = filesystem(uri)
    pq.write_table(pa.Table.from_pylist(rows), path, filesystem=fs)


def read_text(uri: str) -> str:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(uri: str, text: str) -> None:
    fs, path = filesystem(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def format_table(rows: list[dict[str, Any]], metric: str, searched: list[str], top: int = 5) -> str:
    """The best `top` trials by `metric`, with their searched values, as Markdown."""
    ranked = sorted(ranked_rows(rows, metric), key=lambda r: -r[metric])[:top]
    header = ["rank", "trial", "status", metric, "epochs", *searched]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, r in enumerate(ranked, 1):
        values = [_fmt(r.get(f"config/{name}", r.get(name))) for name in searched]
        cells = [i, r["trial_id"], r["status"], f"{r[metric]:.2%}", r.get("epoch"), *values]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def ranked_rows(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """The trials that may be ranked: they reported `metric` and did not fail."""
    return [r for r in rows if r["status"] != "ERROR" and r.get(metric) is not None]


def _fmt(value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.3g}"
    return str(value)


def summarize_sweep(
    grid, metric: str, space, experiment: str, baseline: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """Prints the best trials, how the first (default) point and, if given, the untrained
    encoder did; writes results.parquet."""
    rows = trial_rows(grid, space)
    searched = [k for k in space.derived] + [k for k in space.params if k not in space.derived]
    searched = [k for k in searched if f"config/{k}" in (rows[0] if rows else {})]
    uri = f"{experiment}/results.parquet"
    name = experiment.rsplit("/", 1)[-1]
    write_parquet(rows, uri)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("TERMINATED", "STOPPED", "ERROR")}
    print(f"\n== sweep {name}: {len(rows)} trials ==")
    print(", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n))
    print(format_table(rows, metric, searched))
    scored = ranked_rows(rows, metric)
    best = max(scored, key=lambda r: r[metric]) if scored else None
    failed = [r for r in rows if r["status"] == "ERROR"]
    if failed:
        print(f"{len(failed)} trial(s) failed; their errors:")
        print("\n".join(f"  {r['path']}/error.txt" for r in failed))
    if space.first and best and rows[0] in scored:
        first = rows[0]
        print(
            f"\ndefault config ({first['trial_id']}): {metric} {first[metric]:.2%}; "
            f"best ({best['trial_id']}): {best[metric]:.2%} "
            f"({(best[metric] - first[metric]) * 100:+.1f} points)"
        )
    if baseline and best:
        gains = ", ".join(
            f"{key} {baseline[key]:.2%} (best {(best[key] - baseline[key]) * 100:+.1f} points)"
            for key in dict.fromkeys((metric, "acc_knn", "acc"))
            if best.get(key) is not None
        )
        print(f"untrained encoder (default config): {gains}")
    print(f"all trials: {uri}")
    return rows
