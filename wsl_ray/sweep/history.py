"""A trial's per-epoch history, kept whole across driver kills, retries and --resume.

Tune writes a trial's result.json and progress.csv into a staging folder of the driver's Ray
session and copies that folder to the storage every ~10 s. A resumed sweep is a new session
whose staging files start empty: the first copy then overwrote the stored history with the
epochs after the restart, and the epochs since the last copy had never been stored at all.
The journal (wsl_ray.training.journal) is the record that survives; `HistoryKeeper`, a Tune
callback of the sweep, puts it back: when a trial (re)starts it brings the stored result.json
and progress.csv back into the staging folder if they are not there, and on the trial's
first result (epoch E) it drops their lines of epochs >= E (trained again) and adds the
journal's evaluated epochs below E that never reached the storage. Every evaluated epoch is
then there exactly once. When Tune sees a trial end, the callback writes its `ended.json`,
which tells a trial the scheduler stopped from one a kill of the driver cut short.

Files are rewritten in place (truncated, not replaced): Tune's loggers hold them open for
appending, and keep appending to the same file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.tune.utils import flatten_dict

from ..training.journal import END_FILE, journal_uri, merged_history, parse_lines

TUNE_FILES = ("result.json", "progress.csv")


def repair_result_json(path: Path, journal: list[dict], before: int, trial_id: str) -> None:
    """Rewrites result.json in place to hold the epochs below `before` exactly once."""
    lines = parse_lines(path.read_text()) if path.exists() else []
    merged = merged_history(lines, journal, before)
    if merged or lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"trial_id": trial_id} | m) + "\n" for m in merged))


def repair_progress_csv(
    path: Path, journal: list[dict], before: int, result: dict[str, Any]
) -> None:
    """Rewrites progress.csv in place to hold the epochs below `before` exactly once, under
    its own header (or, for a file not yet written, the header Tune's CSV logger would write
    for `result`, so that its next row fits). A row whose epoch is not a number is dropped."""
    rows: list[dict[str, Any]] = []
    header: list[str] = []
    if path.exists() and path.stat().st_size:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [r | {"epoch": int(r["epoch"])} for r in reader if _whole(r.get("epoch"))]
    header = header or list(flatten_dict({k: v for k, v in result.items() if k != "config"}))
    merged = merged_history(rows, journal, before)
    if merged or rows:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(merged)


def _whole(text: Any) -> bool:
    """Whether a CSV cell holds a whole number."""
    return isinstance(text, str) and text.strip().isdigit()


class HistoryKeeper(tune.Callback):
    """Keeps each trial's result.json and progress.csv whole across restarts (see the
    module docstring). Among the sweep's callbacks it runs before Tune's loggers."""

    def __init__(self) -> None:
        self._starting: set[str] = set()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info) -> None:
        storage = trial.storage
        local = Path(trial.local_path)
        for name in TUNE_FILES:
            if not (local / name).exists():
                _download(storage.storage_filesystem, f"{storage.trial_fs_path}/{name}", local)
        self._starting.add(trial.trial_id)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info
    ) -> None:
        if trial.trial_id not in self._starting or "epoch" not in result:
            return
        self._starting.discard(trial.trial_id)
        storage = trial.storage
        uri = journal_uri(storage.experiment_fs_path, trial.trial_id)
        try:
            with storage.storage_filesystem.open_input_stream(uri) as f:
                journal = parse_lines(f.read().decode())
        except FileNotFoundError:
            journal = []
        local = Path(trial.local_path)
        repair_result_json(local / "result.json", journal, result["epoch"], trial.trial_id)
        repair_progress_csv(local / "progress.csv", journal, result["epoch"], result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info) -> None:
        _mark_ended(trial)


def _mark_ended(trial: Any) -> None:
    """Writes the trial's END_FILE on the storage: Tune saw the trial end (it ran its budget,
    or the scheduler stopped it); a trial a driver kill or Ctrl-C cut short has none."""
    storage = trial.storage
    result = trial.last_result or {}
    with storage.storage_filesystem.open_output_stream(f"{storage.trial_fs_path}/{END_FILE}") as f:
        f.write(json.dumps({"epoch": result.get("epoch")}).encode())


def _download(fs: pyarrow.fs.FileSystem, remote: str, folder: Path) -> None:
    """Copies the stored file `remote` into `folder`, if it exists."""
    try:
        with fs.open_input_stream(remote) as f:
            data = f.read()
    except FileNotFoundError:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / remote.rsplit("/", 1)[-1]).write_bytes(data)
