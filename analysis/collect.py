"""Experiment folders (local or URI) or Parquet files -> one Arrow table, one row per trial.

The rows are the sweep's results schema (wsl_ray.sweep.results; docs/results.md), so a
sweep's own results.parquet and `python -m analysis collect` hold the same columns, and
every subcommand takes either. The Parquet metadata carries each experiment's search space,
metric and bill.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from wsl_ray.sweep.experiment import recorded_metric
from wsl_ray.sweep.metrics import METRICS
from wsl_ray.sweep.results import BILLS_KEY, METRICS_KEY, SPACES_KEY, CollectError, collect
from wsl_ray.utils.storage import filesystem, read_text

__all__ = [
    "CollectError",
    "check_columns",
    "collect",
    "load",
    "read_space",
    "sweep_metric",
    "write",
]


# the columns the subcommands read: a table without one was not written by this package
REQUIRED = ("trial_id", "experiment", "method", "dataset", "status", "epochs", "history")


# the metric columns a table may hold: each selection metric and its test twin
METRIC_COLUMNS = tuple(dict.fromkeys(c for m in METRICS.values() for c in (m.name, m.test)))


def check_columns(table: pa.Table, source: str | list[str], columns: dict[str, str]) -> None:
    """Raises CollectError for the first column of `columns` (column: who reads it, e.g.
    '--metric') that `table`, loaded from `source`, lacks, naming the metric columns it
    has: a table or plot of a missing column would show no trial and look like no results."""
    for column, reader in columns.items():
        if column not in table.column_names:
            have = [c for c in METRIC_COLUMNS if c in table.column_names]
            where = source if isinstance(source, str) else ", ".join(source)
            raise CollectError(
                f"{reader} {column}: {where} has no column {column!r}; its metric columns: "
                f"{', '.join(have) or 'none'}"
            )


def _is_parquet(source: str) -> bool:
    return source.endswith(".parquet")


def load(source: str | list[str]) -> pa.Table:
    """A collected table: from Parquet files, or collected from experiment folders."""
    sources = [source] if isinstance(source, str) else list(source)
    if all(_is_parquet(s) for s in sources):
        tables = []
        for s in sources:
            fs, path = filesystem(s)
            try:
                tables.append(pq.read_table(path, filesystem=fs))
            except FileNotFoundError as err:
                raise CollectError(f"{s}: no such Parquet file") from err
            except (pa.ArrowInvalid, OSError) as err:
                raise CollectError(f"{s}: not a readable Parquet file ({err})") from None
            if missing := [c for c in REQUIRED if c not in tables[-1].column_names]:
                raise CollectError(
                    f"{s}: not a results table of wsl_ray, it lacks the column(s) {missing}; "
                    "take the sweep's results.parquet, or write one with `analysis collect`"
                )
        if len(tables) == 1:
            return tables[0]
        merged = pa.concat_tables(tables, promote_options="permissive")
        return merged.replace_schema_metadata(
            {
                key: json.dumps({k: v for t in tables for k, v in _meta(t, key).items()})
                for key in (SPACES_KEY, METRICS_KEY, BILLS_KEY)
            }
        )
    if any(_is_parquet(s) for s in sources):
        raise CollectError("give either Parquet files or experiment folders, not both")
    return collect(sources)


def write(table: pa.Table, uri: str) -> None:
    """Writes `table` to the Parquet file `uri`; CollectError naming --out when it cannot."""
    fs, path = filesystem(uri)
    try:
        pq.write_table(table, path, filesystem=fs)
    except OSError as err:
        raise CollectError(f"--out {uri}: cannot write it ({str(err).splitlines()[0]})") from None


def _meta(table: pa.Table, key: bytes) -> dict[str, Any]:
    """One entry of the table's metadata: experiment name -> its space, metric or bill."""
    return json.loads((table.schema.metadata or {}).get(key, b"{}"))


def _spaces(table: pa.Table) -> dict[str, str]:
    return _meta(table, SPACES_KEY)


def _metrics(table: pa.Table) -> dict[str, str]:
    return _meta(table, METRICS_KEY)


def bills(table: pa.Table) -> dict[str, dict]:
    """experiment name -> the bill of its sweep (sweep.json's), for those that have one."""
    return _meta(table, BILLS_KEY)


def sweep_metric(sources: str | list[str], table: pa.Table | None = None) -> str | None:
    """The metric the sweep(s) selected on, as recorded in sweep.json (an experiment folder)
    or in a Parquet file's metadata; None when unrecorded or when the experiments differ."""
    sources = [sources] if isinstance(sources, str) else list(sources)
    if all(_is_parquet(s) for s in sources):
        found = set(_metrics(table if table is not None else load(sources)).values())
    else:
        found = {recorded_metric(s.rstrip("/")) for s in sources}
    return found.pop() if len(found) == 1 else None


def read_space(source: str) -> dict[str, Any]:
    """The search space as the sweep ran it: from a Parquet file's metadata (one experiment)
    or an experiment folder's search_space.yaml (written by wsl_ray.tune)."""
    if _is_parquet(source):
        spaces = _spaces(load(source))
        if len(spaces) != 1:
            raise CollectError(
                f"{source}: holds {len(spaces)} experiments' search spaces; give one experiment"
            )
        return yaml.safe_load(next(iter(spaces.values())))
    try:
        return yaml.safe_load(read_text(f"{source.rstrip('/')}/search_space.yaml"))
    except FileNotFoundError as err:
        raise CollectError(f"{source}: no search_space.yaml (not a wsl_ray.tune run?)") from err
