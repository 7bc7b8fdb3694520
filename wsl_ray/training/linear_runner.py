"""Linear classification as a Ray Train job: `train_linear` on DDP workers (lincls --workers)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import ray

from ..utils.ray_start import init_ray
from .checkpoint import read_checkpoint
from .device import gpus_per_worker
from .linear_eval import CHECKPOINT_FILE, summarize, train_linear
from .runner import RayTrainReporter, latest_checkpoint, ray_context, torch_trainer


def worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's loop: one DDP rank; resumes from the Train run's latest checkpoint."""
    with latest_checkpoint() as resume_dir:
        train_linear(
            argparse.Namespace(**config), RayTrainReporter(), resume_dir, ray_context(), False
        )


def train_linear_with_ray(args: argparse.Namespace) -> dict[str, Any]:
    """The loop as a TorchTrainer of args.workers workers, named `lincls` under --out;
    returns the summary of the run's last checkpoint."""
    gpus = gpus_per_worker(args.gpus_per_worker)
    storage = str(Path(args.out).resolve())
    init_ray()
    try:
        trainer = torch_trainer(
            worker_loop, vars(args), args.workers, gpus, args.cpus_per_worker, storage, "lincls"
        )
        result = trainer.fit()
    finally:
        ray.shutdown()  # the local Ray that ray.init started, on Ctrl-C too
    with result.checkpoint.as_directory() as folder:
        saved = read_checkpoint(Path(folder) / CHECKPOINT_FILE, flag="--out")
    return summarize(saved["history"])
