"""A trial's own record of its epochs, the journal `EXPERIMENT/train-<trial_id>/history.jsonl`:
rank 0 of the trial's Train run writes each epoch's metrics there before reporting the epoch
and its checkpoint, so every epoch that a checkpoint covers is in it whatever moment the
sweep's driver dies; a resume from a checkpoint cuts it back to the checkpoint's epoch, as
the later epochs are trained again. Also the marker of an evaluated epoch. Plain Python and
pyarrow, for the workers and the sweep's readers.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..utils.storage import read_text, write_text

JOURNAL = "history.jsonl"
END_FILE = "ended.json"  # in a trial folder: Tune saw the trial end (wsl_ray.sweep.history)
EVALUATED_KEY = "rankme"  # computed at every evaluated epoch, and only then


def evaluated(result: dict[str, Any]) -> bool:
    """Whether a training result comes from an evaluated epoch (it carries the metrics)."""
    return EVALUATED_KEY in result


def journal_uri(experiment: str, trial_id: str) -> str:
    """Where the journal of the trial `trial_id` of `experiment` (a path or URI) lives."""
    return f"{experiment.rstrip('/')}/train-{trial_id}/{JOURNAL}"


def parse_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines text, one per non-blank line."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Journal:
    """Rank 0's record of a Train run's epochs at `uri` (a local path or a URI), rewritten
    whole (and atomically, for a local file) at each epoch."""

    def __init__(self, uri: str):
        self.uri = uri
        self.lines: list[str] = []

    def start(self, epoch: int) -> None:
        """Keeps the epochs up to `epoch`, the checkpoint resumed from (0: a fresh run)."""
        try:
            old = parse_lines(read_text(self.uri))
        except FileNotFoundError:
            old = []
        self.lines = [json.dumps(m) for m in old if m.get("epoch", 0) <= epoch]
        write_text(self.uri, "".join(line + "\n" for line in self.lines))

    def append(self, metrics: dict[str, Any]) -> None:
        """Records one epoch's metrics (before they are reported)."""
        self.lines.append(json.dumps(metrics, default=str))
        write_text(self.uri, "".join(line + "\n" for line in self.lines))


def merged_history(
    lines: list[dict[str, Any]], journal: list[dict[str, Any]], before: float = math.inf
) -> list[dict[str, Any]]:
    """The evaluated epochs below `before`, each once and in order: `lines` (Tune's results;
    of an epoch logged twice the later line, from the run that went on) completed by the
    journal's evaluated epochs that `lines` lack, without their test metrics (these never
    reach Tune)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for line in lines:
        if line.get("epoch", 0) < before:
            by_epoch[line.get("epoch", 0)] = line
    for m in journal:
        if evaluated(m) and m["epoch"] < before and m["epoch"] not in by_epoch:
            by_epoch[m["epoch"]] = {k: v for k, v in m.items() if not k.startswith("test_")}
    return [by_epoch[e] for e in sorted(by_epoch)]
