"""The one training loop, run directly, as a Ray Train worker, or inside a Tune trial.

Per iteration: a batch of uint8 images -> `num_samples` augmented views -> the method's
loss -> the optimiser (Adam with coupled L2 by default), its learning rate a pure function
of the iteration (`optim.learning_rate`), so a resumed run needs no scheduler state.
Every `--eval_every` epochs the frozen encoder is evaluated (k-NN and linear probe);
every `--ckpt_every` epochs and at the end a full checkpoint is written and reported.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from .config import Config, validate_config
from .data import Augment, ImageData, iterate_batches, load_dataset
from .evaluate import evaluate
from .methods import BaseMethod, get_method
from .methods.whitening import stats as whitening_stats
from .optim import base_lr, build_optimizer, learning_rate
from .weights import load_weights

CHECKPOINT_FILE = "checkpoint.pt"


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message says where and what to change."""


def eval_epochs(cfg: Config) -> set[int]:
    """Epochs (1-based) after which to evaluate: as the reference, every eval_every and,
    from epoch `epoch - drop[0]` (0-based) on, every eval_every_drop; and the last one."""
    first_drop = cfg.epoch - cfg.drop[0] if cfg.drop and cfg.drop[0] <= cfg.epoch else cfg.epoch
    every = [cfg.eval_every_drop if ep >= first_drop else cfg.eval_every for ep in range(cfg.epoch)]
    return {ep + 1 for ep in range(cfg.epoch) if (ep + 1) % every[ep] == 0} | {cfg.epoch}


class Reporter(Protocol):
    """Where metrics and checkpoints go: a local folder, or Ray Train."""

    location: str  # where checkpoints end up, for messages

    def checkpoint_dir(self) -> Path: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


class LocalReporter:
    """Writes checkpoints into `out` and appends each epoch's metrics to metrics.jsonl."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.location = str(self.out)

    def checkpoint_dir(self) -> Path:
        return self.out

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")


@dataclass
class WorkerContext:
    """This process's place in a (possibly distributed) run."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] = field(default=lambda m: m)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _place_data(data: ImageData, device: torch.device) -> None:
    """Moves the image tensors to the GPU when they take under a third of its free memory."""
    if device.type != "cuda" or not isinstance(data.train_x, torch.Tensor):
        return
    names = ("train_x", "train_y", "clf_x", "clf_y", "test_x", "test_y")
    total = sum(getattr(data, n).nbytes for n in names)
    if total < torch.cuda.mem_get_info(device)[0] / 3:
        for n in names:
            setattr(data, n, getattr(data, n).to(device))


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights: where the run is and its RNGs."""

    epoch: int = 0  # epochs completed
    iteration: int = 0  # optimiser steps taken
    history: list[dict] = field(default_factory=list)
    init_metrics: dict = field(default_factory=dict)  # the untrained encoder's (--eval_init)


def save_checkpoint(
    path: Path, model: BaseMethod, optimizer, state: TrainState, cfg: Config, gens: dict
) -> None:
    """Everything for an exact resume, written atomically to path / checkpoint.pt."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": state.epoch,
        "iteration": state.iteration,
        "history": state.history,
        "init_metrics": state.init_metrics,
        "config": cfg.to_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **{name: g.get_state() for name, g in gens.items()},
        },
    }
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{CHECKPOINT_FILE}.tmp{os.getpid()}"
    torch.save(payload, tmp)
    tmp.replace(path / CHECKPOINT_FILE)


def read_checkpoint(fname: str | Path) -> dict[str, Any]:
    """A checkpoint's payload, from its file or from the folder holding checkpoint.pt."""
    path = Path(fname)
    file = path / CHECKPOINT_FILE if path.is_dir() else path
    return torch.load(file, map_location="cpu", weights_only=True)


def load_checkpoint(path: Path, model: BaseMethod, optimizer, gens: dict) -> TrainState:
    payload = read_checkpoint(path)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    if payload["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    for name, g in gens.items():
        g.set_state(payload["rng"][name])
    return TrainState(
        payload["epoch"], payload["iteration"], payload["history"], payload["init_metrics"]
    )


def initial_model(cfg: Config, crop_size: int, device: torch.device, rank: int = 0) -> BaseMethod:
    """The model a run of `cfg` starts from on `rank`: torch is seeded with cfg.seed + rank
    first, so a config always starts from the same weights (and --baseline sees them)."""
    torch.manual_seed(cfg.seed + rank)
    return get_method(cfg.method)(cfg, crop_size).to(device)


def _wandb_run(cfg: Config, rank: int):
    if not cfg.wandb or rank != 0:
        return None
    import wandb

    os.environ.setdefault("WANDB_MODE", "offline")
    return wandb.init(project=cfg.wandb, config=cfg.to_dict(), dir=cfg.out)


def train(
    cfg: Config,
    reporter: Reporter | None = None,
    resume_from: Path | None = None,
    context: WorkerContext | None = None,
    data: ImageData | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains `cfg` to its last epoch (from a checkpoint folder if given).

    Returns a summary: final and best metrics, epochs, time. Raises ConfigError before
    any work for an invalid configuration, NonFiniteLossError if the loss diverges.
    """
    context = context or WorkerContext(resolve_device(cfg.device))
    validate_config(cfg, workers=context.world_size)
    reporter = reporter or LocalReporter(cfg.out)
    device, rank = context.device, context.rank
    data = (data or load_dataset(cfg.dataset, cfg.data_dir, cfg.download)).subset(cfg.subset)
    _place_data(data, device)

    model = initial_model(cfg, data.crop_size, device, rank)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.model.compile()
    optimizer = build_optimizer(
        cfg.optimizer, model.parameters(), base_lr(cfg), cfg.adam_l2, cfg.momentum
    )
    gens = {
        "data": torch.Generator().manual_seed(cfg.seed),  # the same order on every rank
        "augment": torch.Generator(device).manual_seed(cfg.seed * 1000 + rank),
    }
    state = TrainState()
    if resume_from is not None and (Path(resume_from) / CHECKPOINT_FILE).exists():
        state = load_checkpoint(resume_from, model, optimizer, gens)
    elif cfg.fname:
        load_weights(model, read_checkpoint(cfg.fname), verbose=rank == 0)
    net = context.wrap_model(model)
    augment = Augment.from_config(
        cfg, data.crop_size, data.mean, data.std, data.blur, gens["augment"]
    )
    local_bs = cfg.bs // context.world_size
    iters = len(data.train_x) // cfg.bs
    if iters == 0:
        raise ValueError(f"--bs {cfg.bs} is larger than the {len(data.train_x)} training images")
    wandb_run = _wandb_run(cfg, rank)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    evals = eval_epochs(cfg)
    if cfg.eval_init and state.epoch == 0 and rank == 0:
        state.init_metrics = evaluate(model, data, device, **cfg.eval_options)
        if progress:
            tqdm.write(f"untrained encoder: {_accuracies(state.init_metrics, cfg.knn)}")
    start = time.perf_counter()

    for epoch in range(state.epoch, cfg.epoch):
        t0, loss_sum = time.perf_counter(), torch.zeros((), device=device)
        batches = iterate_batches(
            data.train_x, data.train_y, local_bs, generator=gens["data"], device=device,
            rank=rank, world_size=context.world_size,
        )  # fmt: skip
        bar = tqdm(
            batches, total=iters, desc=f"epoch {epoch + 1}/{cfg.epoch}", leave=False,
            disable=not progress or rank != 0, dynamic_ncols=True,
        )  # fmt: skip
        for n, (x, _) in enumerate(bar):
            lr = learning_rate(cfg, epoch + n / iters, state.iteration, iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            views = augment(x)
            if device.type == "cuda":
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with autocast:
                loss = net(views)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.step(epoch / cfg.epoch)
            loss_sum += loss.detach()
            state.iteration += 1
            if n % 20 == 19 or n == iters - 1:
                mean_loss = loss_sum.item() / (n + 1)
                _check_finite(mean_loss, epoch, n, reporter)
                seen = (n + 1) * cfg.bs / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}", img_s=f"{seen:.0f}")
        bar.close()
        state.epoch = epoch + 1
        epoch_time = time.perf_counter() - t0
        metrics = {
            "epoch": state.epoch,
            "loss": loss_sum.item() / iters,
            "lr": lr,
            "images_per_s": iters * cfg.bs / epoch_time,
            "epoch_time_s": epoch_time,
            **whitening_stats.take(),
        }
        _check_finite(metrics["loss"], epoch, iters - 1, reporter)
        if state.epoch in evals and rank == 0:
            t_eval = time.perf_counter()
            metrics |= evaluate(model, data, device, **cfg.eval_options)
            metrics["eval_time_s"] = time.perf_counter() - t_eval
        metrics["time_total_s"] = time.perf_counter() - start
        state.history.append(metrics)
        ckpt_dir = None
        if state.epoch % cfg.ckpt_every == 0 or state.epoch == cfg.epoch:
            if rank == 0:
                ckpt_dir = reporter.checkpoint_dir()
                save_checkpoint(ckpt_dir, model, optimizer, state, cfg, gens)
        reporter.report(metrics, ckpt_dir)
        if wandb_run is not None:
            wandb_run.log(metrics, step=state.epoch)
        if progress and rank == 0:
            tqdm.write(_epoch_line(metrics, cfg.knn))
    if wandb_run is not None:
        wandb_run.finish()
    return summarize(state.history, state.init_metrics)


def _check_finite(loss: float, epoch: int, n: int, reporter: Reporter) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"the loss became {loss} in epoch {epoch + 1}, iteration {n + 1}; the last good "
            f"checkpoint is in {reporter.location}. Try a lower --lr, a larger "
            "--w_eps, or a larger --w_size."
        )


def _epoch_line(m: dict[str, Any], k: int) -> str:
    line = f"epoch {m['epoch']:>4}  loss {m['loss']:.4f}  lr {m['lr']:.2e}  "
    line += f"{m['images_per_s']:,.0f} img/s"
    if "acc_knn" in m:
        line += f"  | {_accuracies(m, k)}"
    if m.get("whiten_retries"):
        line += f"  ({m['whiten_retries']} whitening retries)"
    return line


def _accuracies(m: dict[str, Any], k: int) -> str:
    return f"{k}-NN {m['acc_knn']:.2%}  linear {m['acc']:.2%}  top-5 {m['acc_5']:.2%}"


def summarize(history: list[dict[str, Any]], init_metrics: dict | None = None) -> dict[str, Any]:
    """Final and best metrics of a run, from its per-epoch history; `init_acc_knn` etc. for
    the untrained encoder when it was evaluated (--eval_init)."""
    evaluated = [m for m in history if "acc_knn" in m]
    summary: dict[str, Any] = {"epochs": len(history)}
    if history:
        summary |= {"loss": history[-1]["loss"], "time_total_s": history[-1]["time_total_s"]}
    for key in ("acc", "acc_5", "acc_knn"):
        if evaluated:
            summary[key] = evaluated[-1][key]
            summary[f"best_{key}"] = max(m[key] for m in evaluated)
        if init_metrics:
            summary[f"init_{key}"] = init_metrics[key]
    return summary
