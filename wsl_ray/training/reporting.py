"""Where a run's progress goes and how it reads: the Reporter a loop reports epochs and
checkpoints to (a local folder, or Ray Train), the console's epoch line, a run's summary
(final and best metrics) and its printed form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from .journal import evaluated


class Reporter(Protocol):
    """Where metrics and checkpoints go: a local folder, or Ray Train."""

    location: str  # where checkpoints end up, for messages

    def checkpoint_dir(self) -> Path: ...

    def start(self, epoch: int) -> None:
        """Called before the first epoch, after any resume: `epoch` epochs are done."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


class LocalReporter:
    """Writes checkpoints into `out` and appends each epoch's metrics to metrics.jsonl."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.location = str(self.out)

    def checkpoint_dir(self) -> Path:
        return self.out

    def start(self, epoch: int) -> None:
        """Keeps metrics.jsonl's lines up to `epoch`: the epochs after the checkpoint being
        resumed from (or all, for a fresh run) are trained again and would appear twice."""
        path = self.out / "metrics.jsonl"
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(x for x in lines if json.loads(x)["epoch"] <= epoch))

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")


def epoch_line(m: dict[str, Any], k: int) -> str:
    line = f"epoch {m['epoch']:>4}  loss {m['loss']:.4f}  lr {m['lr']:.2e}  "
    line += f"{m['images_per_s']:,.0f} img/s"
    if evaluated(m):
        line += f"  | {accuracies(m, k)}"
    if m.get("whiten_retries"):
        line += f"  ({m['whiten_retries']} whitening retries)"
    if m.get("whiten_ns_failures"):
        line += f"  ({m['whiten_ns_failures']} steps redone on the exact ZCA path)"
    return line


def accuracies(m: dict[str, Any], k: int) -> str:
    parts = [
        f"{p.replace('_', ' ')}{k}-NN {m[p + 'acc_knn']:.2%}  linear {m[p + 'acc']:.2%}  "
        f"top-5 {m[p + 'acc_5']:.2%}"
        for p in ("", "val_", "test_")
        if p + "acc_knn" in m
    ]
    return "  ".join(parts) + (f"  RankMe {m['rankme']:.1f}" if "rankme" in m else "")


EVAL_KEYS = (
    *(p + key for p in ("", "val_", "test_") for key in ("acc", "acc_5", "acc_knn")),
    "rankme",
)


def summarize(history: list[dict[str, Any]], init_metrics: dict | None = None) -> dict[str, Any]:
    """Final and best metrics of a run, from its per-epoch history (acc... on test, val_acc...
    on validation, test_acc... once at the end in --eval_on val); `init_<key>` for every
    metric of the untrained encoder when it was evaluated (--eval_init)."""
    summary: dict[str, Any] = {"epochs": len(history)}
    if history:
        summary |= {"loss": history[-1]["loss"], "time_total_s": history[-1]["time_total_s"]}
    for key in EVAL_KEYS:
        evaluated = [m for m in history if key in m]
        if evaluated:
            summary[key] = evaluated[-1][key]
            summary[f"best_{key}"] = max(m[key] for m in evaluated)
    return summary | {f"init_{key}": value for key, value in (init_metrics or {}).items()}


def print_summary(summary: dict[str, Any], out: str) -> None:
    """Prints a run's summary (see `summarize`) for the console, then where `out` is."""
    print("\n== summary ==")
    print(f"epochs {summary.get('epochs', 0)}, time {summary.get('time_total_s', 0):.1f} s")
    names = {"acc_knn": "k-NN", "acc": "linear top-1", "acc_5": "linear top-5"}
    for prefix in ("", "val_", "test_"):
        for metric, name in names.items():
            key = prefix + metric
            if key not in summary:
                continue
            line = f"{prefix.replace('_', ' ') + name:>18}: final {summary[key]:.2%}"
            line += f", best {summary['best_' + key]:.2%}" if prefix != "test_" else ""
            if f"init_{key}" in summary:
                gain = (summary[key] - summary[f"init_{key}"]) * 100
                line += f", untrained {summary[f'init_{key}']:.2%} ({gain:+.1f} points)"
            print(line)
    if "rankme" in summary:
        print(f"{'RankMe':>18}: final {summary['rankme']:.2f}, best {summary['best_rankme']:.2f}")
    print(f"checkpoint and metrics: {out}")
