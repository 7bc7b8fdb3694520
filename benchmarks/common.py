"""Shared by the benchmark scripts: the hardware line and appending results to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

# Results go to the repository's BENCHMARKS.md, or where WSL_RAY_BENCHMARKS_MD says (a GPU
# session writes them under its output folder, the only thing that comes back).
BENCHMARKS_MD = Path(
    os.environ.get("WSL_RAY_BENCHMARKS_MD")
    or Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU"


def append_results(title: str, device: torch.device, body: str, command: str) -> None:
    """Prints the results and appends them, dated and with the hardware, to BENCHMARKS.md."""
    stamp = datetime.date.today().isoformat()
    text = (
        f"\n## {title}, {stamp}\n\nHardware: {hardware(device)}; torch {torch.__version__}.\n"
        f"Command: `{command}`\n\n{body}\n"
    )
    print(text)
    with open(BENCHMARKS_MD, "a") as f:
        f.write(text)


def step_ran_as(metrics: dict) -> str:
    """How an epoch's training step ran, from its metrics (metrics.jsonl): "graph", or
    "eager: " and why."""
    return "graph" if metrics["cuda_graph"] else f"eager: {metrics['eager_because']}"
