"""Sweep results: one row per trial in one schema, shared by the sweep's results.parquet and
`python -m analysis collect`, and the sweep's summary table.

A Tune experiment folder holds a folder per trial, `trial_<id>_<number>_...`, with
`params.json` (the trial's config: its whole training configuration plus helper ratios),
`result.json` (one JSON line per result Tune received: the evaluated epochs), and, for a
trial that ran its whole epoch budget in --eval_on val, `test_metrics.json` (written beside
Tune, never reported to it). Columns (docs/results.md, "Results schema"):

    trial_id, trial_number, experiment, method, dataset, status, epochs, epoch_budget,
    time_total_s, val_acc, val_acc_5, val_acc_knn, rankme, alpha_req, lidar (last
    evaluation), best_<each of those> (best over evaluations: the lowest alpha_req),
    test_acc, test_acc_5, test_acc_knn (test_metrics.json; null unless TERMINATED),
    config/<key> (every params.json key), error, path, history (list of per-epoch structs)

status: TERMINATED (ran its epoch budget), STOPPED (the scheduler ended it early),
INTERRUPTED (cut short by a kill or Ctrl-C of the driver: --resume continues it; not ranked),
DIVERGED (its loss became non-finite; ended once, never retried), ERROR (failed).
The Parquet file's metadata holds each experiment's search space (`wsl_ray.spaces`), the
metric its sweep selected on (`wsl_ray.metrics`, from sweep.json) and its bill
(`wsl_ray.bills`: trial-epochs, hours, planned trial-epochs; sweep.json's `bill`).
Experiments run before the validation split reported test metrics as acc, acc_5, acc_knn:
those are read into the test_* columns.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from ..training.journal import END_FILE, journal_uri, merged_history, parse_lines
from ..utils.storage import filesystem, read_text
from .experiment import Experiment, read_record, recorded_metric
from .metrics import METRICS, score

VAL_METRICS = tuple(METRICS)
TEST_METRICS = ("test_acc", "test_acc_5", "test_acc_knn")
LEGACY = {"acc": "test_acc", "acc_5": "test_acc_5", "acc_knn": "test_acc_knn"}
HISTORY_KEYS = ("epoch", "loss", "lr", *VAL_METRICS, *TEST_METRICS, "time_total_s")
TEST_FILE = "test_metrics.json"
SPACES_KEY = b"wsl_ray.spaces"
METRICS_KEY = b"wsl_ray.metrics"
BILLS_KEY = b"wsl_ray.bills"
STATUSES = ("TERMINATED", "STOPPED", "INTERRUPTED", "DIVERGED", "ERROR")  # in summary order
RANKED = STATUSES[:2]  # statuses whose metrics may be ranked
# training flags that do not change what is trained: configs differing only here are the same
RUN_ONLY = ("seed", "out", "wandb", "data_dir", "device")


class CollectError(ValueError):
    """An experiment folder that is missing, empty or unreadable."""


def _maybe_json(fs, path: str) -> Any:
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        return None


def _renamed(result: dict[str, Any]) -> dict[str, Any]:
    return {LEGACY.get(k, k): v for k, v in result.items()}


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def trial_row(fs, folder: str, experiment: str) -> dict[str, Any] | None:
    """One trial's row (see the module docstring), or None for a folder that is not a trial."""
    config = _maybe_json(fs, f"{folder}/params.json")
    try:
        with fs.open_input_stream(f"{folder}/result.json") as f:
            lines = f.read().decode().splitlines()
    except FileNotFoundError:
        return None
    if config is None:
        return None
    history = [_renamed(json.loads(line)) for line in lines if line.strip()]
    diverged = history and history[-1].get("diverged")
    name = folder.rstrip("/").rsplit("/", 1)[-1]
    parts = name.split("_")
    # each evaluated epoch once, those that a driver kill kept from result.json from the journal
    journal = _journal(fs, folder, parts[1] if len(parts) > 1 else name)
    evaluated = merged_history([h for h in history if not h.get("diverged")], journal)
    last = evaluated[-1] if evaluated else {}
    epochs = (history[-1] if diverged else last).get("epoch", 0)
    error = None
    if fs.get_file_info(f"{folder}/error.txt").type != pyarrow.fs.FileType.NotFound:
        with fs.open_input_stream(f"{folder}/error.txt") as f:
            error = (f.read().decode().strip().splitlines() or [""])[-1][:300]
    if diverged:
        status, error = "DIVERGED", history[-1].get("message")
    elif epochs == config.get("epoch"):
        status = "TERMINATED"
    elif error:
        status = "ERROR"
    else:  # a sweep of this version journals its trials and marks those Tune saw end
        unmarked = fs.get_file_info(f"{folder}/{END_FILE}").type == pyarrow.fs.FileType.NotFound
        cut_short = bool(journal) and unmarked
        status = "INTERRUPTED" if cut_short else "STOPPED"
    test = _renamed(_maybe_json(fs, f"{folder}/{TEST_FILE}") or {})
    row = {
        "trial_id": last.get("trial_id") or (parts[1] if len(parts) > 1 else name),
        "trial_number": int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0,
        "experiment": experiment,
        "method": config.get("method"),
        "dataset": config.get("dataset"),
        "status": status,
        "epochs": epochs,
        "epoch_budget": config.get("epoch"),
        "time_total_s": last.get("time_total_s"),
    }
    row |= {m: _finite(last.get(m)) for m in VAL_METRICS}
    row |= {
        f"best_{m}": max(
            (h[m] for h in evaluated if _finite(h.get(m)) is not None),
            key=lambda v, m=m: score(m, v),
            default=None,
        )
        for m in VAL_METRICS
    }
    row |= {m: test.get(m, last.get(m)) for m in TEST_METRICS}  # last: legacy experiments
    row |= {
        f"config/{k}": json.dumps(v) if isinstance(v, (list, dict)) else v
        for k, v in sorted(config.items())
    }
    row |= {"error": error, "path": folder}
    row["history"] = [{k: _finite(h.get(k)) for k in HISTORY_KEYS} for h in evaluated]
    return row


def _journal(fs, folder: str, trial_id: str) -> list[dict[str, Any]]:
    """The journal of a trial folder's Train run (wsl_ray.sweep.history); [] if none."""
    try:
        with fs.open_input_stream(journal_uri(folder.rstrip("/").rsplit("/", 1)[0], trial_id)) as f:
            return parse_lines(f.read().decode())
    except FileNotFoundError:
        return []


def collect_rows(uri: str) -> list[dict[str, Any]]:
    """Every trial of one experiment folder, in creation order (the first point first)."""
    fs, root = filesystem(uri.rstrip("/"))
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        raise CollectError(f"{uri}: no such experiment folder")
    name = Experiment.at(root).name
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root))
    rows = [
        row
        for entry in entries
        if entry.type == pyarrow.fs.FileType.Directory
        and (row := trial_row(fs, entry.path, name)) is not None
    ]
    if not rows:
        raise CollectError(
            f"{uri}: no trials found (a trial folder holds params.json and result.json); "
            "is this the folder of a `python -m wsl_ray.tune` experiment?"
        )
    return sorted(rows, key=lambda r: r["trial_number"])


def _column_order(name: str) -> tuple[int, str]:
    first = ["trial_id", "trial_number", "experiment", "method", "dataset", "status", "epochs"]
    if name in first:
        return (0, f"{first.index(name):02d}")
    if name.startswith("config/"):
        return (2, name)
    return (3 if name in ("error", "path") else 4 if name == "history" else 1, name)


def rows_table(
    rows: list[dict[str, Any]],
    spaces: dict[str, str] | None = None,
    metrics: dict[str, str] | None = None,
    bills: dict[str, dict] | None = None,
) -> pa.Table:
    """Rows as one Arrow table (columns missing in some rows are null there), with the search
    spaces (experiment name -> YAML text), the metrics the sweeps selected on (experiment
    name -> metric) and their bills (experiment name -> bill) in its schema metadata."""
    columns = sorted(
        {k for row in rows for k in row} | set(VAL_METRICS) | set(TEST_METRICS), key=_column_order
    )
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    return table.replace_schema_metadata(
        {
            SPACES_KEY: json.dumps(spaces or {}),
            METRICS_KEY: json.dumps(metrics or {}),
            BILLS_KEY: json.dumps(bills or {}),
        }
    )


def experiment_spaces(uris: list[str]) -> dict[str, str]:
    """experiment name -> its search_space.yaml text, for the experiments that have one."""
    spaces = {}
    for uri in uris:
        try:
            experiment = Experiment.at(uri)
            spaces[experiment.name] = read_text(f"{experiment.path}/search_space.yaml")
        except FileNotFoundError:
            pass
    return spaces


def experiment_metrics(uris: list[str]) -> dict[str, str]:
    """experiment name -> the metric its sweep selected on (its sweep.json), where recorded."""
    experiments = [Experiment.at(uri) for uri in uris]
    found = {e.name: recorded_metric(e.path) for e in experiments}
    return {name: metric for name, metric in found.items() if metric}


def experiment_bills(uris: list[str]) -> dict[str, dict]:
    """experiment name -> its bill (sweep.json's), for the experiments that have one."""
    records = {e.name: read_record(e.path) for e in map(Experiment.at, uris)}
    return {name: r["bill"] for name, r in records.items() if r and r.get("bill")}


def collect(experiments: list[str]) -> pa.Table:
    """Every trial of every experiment folder, as one table in the results schema."""
    rows = [row for uri in experiments for row in collect_rows(uri)]
    return rows_table(
        rows,
        experiment_spaces(experiments),
        experiment_metrics(experiments),
        experiment_bills(experiments),
    )


def write_parquet(table: pa.Table, uri: str) -> None:
    fs, path = filesystem(uri)
    pq.write_table(table, path, filesystem=fs)


def ranked(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Trials that may be ranked (not failed, not diverged) and have `metric`, best first."""
    usable = [r for r in rows if r["status"] in RANKED and r.get(metric) is not None]
    return sorted(usable, key=lambda r: -score(metric, r[metric]))
