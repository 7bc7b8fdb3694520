"""Experiment folders (local or URI) -> one Arrow table, one row per trial.

A Tune experiment folder holds a folder per trial with `params.json` (the trial's config:
its whole training configuration, see wsl_ray.search_space) and `result.json` (one JSON
line per evaluated epoch). Each trial becomes a row with its config values as `config/*`
columns, its status, epochs run, final and best metrics, time, and its per-epoch history
as a nested list column.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from wsl_ray.results import filesystem, read_text

METRICS = ("acc", "acc_5", "acc_knn")
HISTORY_KEYS = ("epoch", "loss", "lr", "acc", "acc_5", "acc_knn", "time_total_s")


class CollectError(ValueError):
    """An experiment folder that is missing, empty or unreadable."""


def _read(fs: pyarrow.fs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _trial(fs, folder: str, experiment: str) -> dict[str, Any] | None:
    """One trial's row, or None for a folder that is not a trial."""
    try:
        config = json.loads(_read(fs, f"{folder}/params.json"))
        lines = _read(fs, f"{folder}/result.json").splitlines()
    except FileNotFoundError:
        return None
    history = [json.loads(line) for line in lines if line.strip()]
    failed = fs.get_file_info(f"{folder}/error.txt").type != pyarrow.fs.FileType.NotFound
    last = history[-1] if history else {}
    epochs = last.get("epoch", 0)
    finished = epochs == config.get("epoch")
    row = {
        "trial_id": last.get("trial_id") or folder.rsplit("/", 1)[-1].split("_")[1],
        "experiment": experiment,
        "method": config.get("method"),
        "dataset": config.get("dataset"),
        "status": "TERMINATED" if finished else ("ERROR" if failed else "STOPPED"),
        "epochs": epochs,
        "time_total_s": last.get("time_total_s"),
    }
    row |= {m: last.get(m) for m in METRICS}
    row |= {f"best_{m}": max((h[m] for h in history if m in h), default=None) for m in METRICS}
    row |= {f"config/{k}": json.dumps(v) if isinstance(v, list) else v for k, v in config.items()}
    row["history"] = [{k: h.get(k) for k in HISTORY_KEYS} for h in history]
    return row


def collect(experiments: list[str]) -> pa.Table:
    """Every trial of every experiment folder, as one table (columns missing in some
    experiments are null there)."""
    rows = []
    for uri in experiments:
        fs, root = filesystem(uri.rstrip("/"))
        info = fs.get_file_info(root)
        if info.type != pyarrow.fs.FileType.Directory:
            raise CollectError(f"{uri}: no such experiment folder")
        name = root.rsplit("/", 1)[-1]
        entries = fs.get_file_info(pyarrow.fs.FileSelector(root))
        found = [
            row
            for entry in entries
            if entry.type == pyarrow.fs.FileType.Directory
            and (row := _trial(fs, entry.path, name)) is not None
        ]
        if not found:
            raise CollectError(
                f"{uri}: no trials found (a trial folder holds params.json and result.json); "
                "is this the folder of a `python -m wsl_ray.tune` experiment?"
            )
        rows += found
    columns = sorted({k for row in rows for k in row}, key=_column_order)
    return pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])


def _column_order(name: str) -> tuple[int, str]:
    first = ["trial_id", "experiment", "method", "dataset", "status", "epochs"]
    if name in first:
        return (first.index(name), "")
    return (2 if name.startswith("config/") else 1 if name != "history" else 3, name)


def load(source: str | list[str]) -> pa.Table:
    """A collected table: from a Parquet file, or collected from experiment folders."""
    sources = [source] if isinstance(source, str) else list(source)
    if len(sources) == 1 and sources[0].endswith(".parquet"):
        fs, path = filesystem(sources[0])
        return pq.read_table(path, filesystem=fs)
    return collect(sources)


def write(table: pa.Table, uri: str) -> None:
    fs, path = filesystem(uri)
    pq.write_table(table, path, filesystem=fs)


def read_space(experiment: str) -> dict[str, Any]:
    """The experiment's search space as the sweep ran it (written by wsl_ray.tune)."""
    import yaml

    try:
        return yaml.safe_load(read_text(f"{experiment.rstrip('/')}/search_space.yaml"))
    except FileNotFoundError as err:
        raise CollectError(f"{experiment}: no search_space.yaml (not a wsl_ray.tune run?)") from err
