"""Where a run's per-epoch metrics go besides its reporter: wandb and TensorBoard.

Only rank 0 logs. Every sink logs with `step` = the epoch just completed, so a run resumed
from the checkpoint of epoch k logs epochs k+1.. and never repeats a step. wandb, tensorboardX
and their dependencies are imported only when a sink is asked for: the direct training path
runs on machines without them (a missing tensorboardX skips TensorBoard with a one-line note).

wandb: one run per training run. A Tune trial's run has id = the trial id and group = the
sweep's name, so a retried trial continues its own run (`resume="allow"`); a direct run keeps
a stable id in `OUT/wandb_id.txt` and `--resume` continues the same run.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any, Protocol

from ..config import Config

WANDB_ID_FILE = "wandb_id.txt"
# the metrics a direct run writes to TensorBoard, under these tags
TENSORBOARD_TAGS = {
    "loss": "train/loss",
    "lr": "train/lr",
    "images_per_s": "train/images_per_s",
    "whiten_retries": "train/whiten_retries",
    "whiten_fallbacks": "train/whiten_fallbacks",
    "whiten_ns_failures": "train/whiten_ns_failures",
    "acc_knn": "eval/acc_knn",
    "acc": "eval/acc",
    "acc_5": "eval/acc_5",
}


class Sink(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class MetricSinks:
    """Fans one epoch's metrics out to every sink; with no sinks it does nothing."""

    def __init__(self, sinks: list[Sink] | None = None):
        self.sinks = sinks or []

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for sink in self.sinks:
            sink.log(metrics, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class WandbSink:
    """One wandb run: `wandb.init(id=run_id, group=group, resume="allow", dir=abs dir)`."""

    def __init__(self, project: str, run_id: str, group: str | None, config: dict, log_dir: Path):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        log_dir = Path(log_dir).resolve()  # Train V2 workers run in a directory of their own
        log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            id=run_id,
            name=run_id,
            group=group,
            resume="allow",
            config=config,
            dir=str(log_dir),
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        # finished, and let go: in one process, a later run's history was lost (wandb 0.31,
        # offline) while the finished Run object was still referenced
        self.run.finish()
        self.run = None


class TensorBoardSink:
    """tensorboardX event files in `log_dir`: the scalars of TENSORBOARD_TAGS per epoch."""

    def __init__(self, log_dir: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for key, tag in TENSORBOARD_TAGS.items():
            if key in metrics:
                self.writer.add_scalar(tag, metrics[key], step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def direct_run_id(out: str | Path) -> str:
    """The wandb id of the direct run writing to `out`: read from OUT/wandb_id.txt, or made
    and stored there, so that `--resume` continues the same wandb run."""
    path = Path(out) / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def open_sinks(
    cfg: Config,
    rank: int = 0,
    run_id: str | None = None,
    group: str | None = None,
    log_dir: str | Path | None = None,
    tensorboard: bool = False,
) -> MetricSinks:
    """The sinks of one run on `rank` (none off rank 0).

    wandb when cfg.wandb names a project: id `run_id` (default: the direct run's stable id
    in cfg.out), group `group`, files under `log_dir` (default cfg.out) made absolute.
    TensorBoard (tensorboard=True) in cfg.out, beside metrics.jsonl.
    """
    if rank != 0:
        return MetricSinks()
    sinks: list[Sink] = []
    if cfg.wandb:
        run_id = run_id or direct_run_id(cfg.out)
        sinks.append(WandbSink(cfg.wandb, run_id, group, cfg.to_dict(), Path(log_dir or cfg.out)))
    if tensorboard:
        try:
            sinks.append(TensorBoardSink(Path(cfg.out)))
        except ImportError:
            print("note: tensorboardX is not installed; no TensorBoard events", file=sys.stderr)
    return MetricSinks(sinks)
