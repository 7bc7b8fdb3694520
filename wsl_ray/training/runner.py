"""Loops on Ray Train workers: one TorchTrainer, DDP across its workers.

`torch_trainer` runs any worker loop (training's `worker_loop`, lincls's); `ray_context` and
`latest_checkpoint` give a worker its place in the run and the checkpoint to resume from.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from ..config import SYNC_BN_NEEDS_GPUS, Config, ConfigError
from ..data.shared import shared_dataset
from .checkpoint import read_checkpoint
from .journal import Journal
from .loop import WorkerContext, train
from .sinks import open_sinks


class RayTrainReporter:
    """Reports each epoch to Ray Train; rank 0's checkpoint folder is uploaded to storage.
    With `journal` (a path or URI), rank 0 first records the epoch there: the history that
    survives a kill of the sweep's driver (wsl_ray.sweep.history)."""

    location = "the Ray Train run's storage"

    def __init__(self, journal: str | None = None):
        rank0 = ray.train.get_context().get_world_rank() == 0
        self.journal = Journal(journal) if journal and rank0 else None

    def checkpoint_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="wsl_ray_ckpt_"))

    def start(self, epoch: int) -> None:
        """Cuts the journal back to `epoch`, the checkpoint resumed from."""
        if self.journal:
            self.journal.start(epoch)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if self.journal:  # before the checkpoint is reported: it never covers a missing epoch
            self.journal.append(metrics)
        checkpoint = Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)
        if checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)


def wrap_model(model: torch.nn.Module, world_size: int, sync_bn: bool) -> torch.nn.Module:
    """DDP over the workers when there are several; with --sync_bn the BatchNorm layers are
    first made SyncBatchNorm (in place: the parameters, and so the optimiser's, stay the
    same objects), since prepare_model does not convert them."""
    if sync_bn:
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return ray.train.torch.prepare_model(model) if world_size > 1 else model


def ray_context(gpu_share: float = 1.0, sync_bn: bool = False) -> WorkerContext:
    """This Ray Train worker's device, rank and world, its model wrapped by `wrap_model`."""
    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    return WorkerContext(
        device=ray.train.torch.get_device(),
        rank=ctx.get_world_rank(),
        world_size=world,
        gpu_share=gpu_share,
        wrap_model=lambda model: wrap_model(model, world, sync_bn),
    )


@contextmanager
def latest_checkpoint() -> Iterator[Path | None]:
    """The folder of the Train run's latest checkpoint (None for a fresh run), while open."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as folder:
        yield Path(folder)


def worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's train_loop_per_worker: resumes from the run's latest checkpoint if any."""
    cfg = Config.from_dict(config["cfg"])
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    context = ray_context(config.get("gpu_share", 1.0), cfg.sync_bn)
    with latest_checkpoint() as resume_dir:
        if resume_dir and _report_if_complete(resume_dir, cfg):
            return
        sinks = open_sinks(cfg, context.rank, **config.get("wandb", {}))
        # None: train() loads its own
        data = shared_dataset(config.get("shared_data"), cfg.dataset, cfg.data_dir)
        train(
            cfg,
            RayTrainReporter(config.get("journal")),
            resume_from=resume_dir,
            context=context,
            progress=config.get("progress", False),
            sinks=sinks,
            data=data,
        )


def _report_if_complete(resume_dir: Path, cfg: Config) -> bool:
    """A run restored from its final checkpoint has no epoch left to train, yet Tune needs a
    result (the driver may have died after the checkpoint and before recording the trial):
    report the last epoch's metrics again, from the checkpoint's history. Every rank calls
    this, as ray.train.report is collective under Train V2."""
    payload = read_checkpoint(resume_dir, flag="--resume")
    if payload.get("epoch", 0) < cfg.epoch or not payload.get("history"):
        return False
    ray.train.report(payload["history"][-1])
    return True


def make_trainer(
    cfg: Config,
    workers: int = 1,
    gpus_per_worker: float = 0,
    cpus_per_worker: float = 1,
    storage_path: str | None = None,
    name: str | None = None,
    callbacks: list | None = None,
    max_failures: int = 0,
    progress: bool = False,
    wandb: dict[str, str] | None = None,
    shared_data: dict[str, Any] | None = None,
    journal: str | None = None,
) -> TorchTrainer:
    """A TorchTrainer running `cfg` on `workers` DDP ranks (gloo on CPU, nccl on GPU).

    A run with the same (storage_path, name) restores itself from its last checkpoint.
    `wandb` holds rank 0's wandb run: {"run_id", "group", "log_dir" (absolute)}; without
    it a run logging to wandb keeps a stable id in cfg.out. `shared_data` is the node-shared
    dataset of shared_data.share_dataset. `journal` is where rank 0 records each epoch
    before reporting it (a sweep trial's, wsl_ray.sweep.history.journal_uri).
    Raises ConfigError for --sync_bn without GPU workers.
    """
    if cfg.sync_bn and not gpus_per_worker:
        raise ConfigError(SYNC_BN_NEEDS_GPUS)
    config = {
        "cfg": cfg.to_dict(),
        "progress": progress,
        "threads": max(1, int(cpus_per_worker)),
        "wandb": wandb or {},
        "shared_data": shared_data,
        "gpu_share": gpus_per_worker or 1.0,
        "journal": journal,
    }
    return torch_trainer(
        worker_loop,
        config,
        workers,
        gpus_per_worker,
        cpus_per_worker,
        storage_path,
        name,
        callbacks=callbacks,
        max_failures=max_failures,
        keep=2,
    )


def torch_trainer(
    loop: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    workers: int,
    gpus_per_worker: float,
    cpus_per_worker: float,
    storage_path: str | None,
    name: str | None,
    callbacks: list | None = None,
    max_failures: int = 0,
    keep: int | None = None,
) -> TorchTrainer:
    """A TorchTrainer running `loop(config)` on `workers` DDP ranks (gloo on CPU, nccl on
    GPU), keeping the newest `keep` checkpoints (None: all) under storage_path / name."""
    resources = {"CPU": cpus_per_worker} | ({"GPU": gpus_per_worker} if gpus_per_worker else {})
    return TorchTrainer(
        loop,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if gpus_per_worker else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpus_per_worker > 0, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks or [],
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
        ),
    )
