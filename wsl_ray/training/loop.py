"""The one training loop, run directly, as a Ray Train worker, or inside a Tune trial.

Per iteration: a batch of uint8 images -> `num_samples` augmented views -> the method's
loss -> the optimiser (Adam with coupled L2 by default), its learning rate a pure function
of the iteration (`optim.learning_rate`), so a resumed run needs no scheduler state.
A ZCA method's steps are confirmed two steps late, by their Newton-Schulz check (`deferred`).
Every `--eval_every` epochs the frozen encoder is evaluated (k-NN and linear probe);
every `--ckpt_every` epochs and at the end a full checkpoint is written (`checkpoint`) and
reported (`reporting`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..config import Config, ConfigError, check_data_fit, validate_config
from ..data import Augment, ImageData, ImageFiles, iterate_batches, load_dataset
from ..methods import BaseMethod, get_method
from ..methods.whitening import stats as whitening_stats
from ..utils import fault
from .checkpoint import (
    CHECKPOINT_FILE,
    TrainState,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .deferred import DeferredCheck, defers
from .device import HostScalar, place_data, resolve_device, setup_device
from .evaluate import evaluate_run
from .graph import TrainStep, graph_fallback, step_on_device
from .optim import base_lr, build_optimizer, learning_rate, set_graph_ready
from .reporting import LocalReporter, Reporter, accuracies, epoch_line, summarize
from .sinks import MetricSinks, open_sinks
from .weights import load_weights


def epoch_batches(
    images: torch.Tensor | ImageFiles,
    labels: torch.Tensor,
    local_bs: int,
    iters: int,
    desc: str,
    generator: torch.Generator,
    device: torch.device,
    context: WorkerContext,
    progress: bool,
    drop_last: bool = True,
) -> tqdm:
    """One epoch's first `iters` shuffled batches (uint8 images [b, C, H, W], labels [b],
    sizes [b, 2]) of this rank's share, behind a progress bar on rank 0."""
    batches = iterate_batches(
        images,
        labels,
        local_bs,
        drop_last=drop_last,
        generator=generator,
        device=device,
        rank=context.rank,
        world_size=context.world_size,
        with_sizes=True,
    )
    return tqdm(
        islice(batches, iters),
        total=iters,
        desc=desc,
        leave=False,
        disable=not progress or context.rank != 0,
        dynamic_ncols=True,
    )


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf; the message says where and what to change."""


def eval_epochs(cfg: Config) -> set[int]:
    """Epochs (1-based) after which to evaluate: as the reference, every eval_every and,
    from epoch `epoch - drop[0]` (0-based) on, every eval_every_drop; and the last one."""
    first_drop = cfg.epoch - cfg.drop[0] if cfg.drop and cfg.drop[0] <= cfg.epoch else cfg.epoch
    every = [cfg.eval_every_drop if ep >= first_drop else cfg.eval_every for ep in range(cfg.epoch)]
    return {ep + 1 for ep in range(cfg.epoch) if (ep + 1) % every[ep] == 0} | {cfg.epoch}


@dataclass
class WorkerContext:
    """This process's place in a (possibly distributed) run."""

    device: torch.device | str  # resolved by `train` (cuda -> cuda:N)
    rank: int = 0
    world_size: int = 1
    gpu_share: float = 1.0  # the fraction of its GPU this process holds (packed trials)
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module] = field(default=lambda m: m)


def train_step(
    model: BaseMethod,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    augment: Augment,
    x: torch.Tensor,
    sizes: torch.Tensor,
    progress: float,
) -> torch.Tensor:
    """One eager optimiser step (progress = epoch / epochs): the method's `schedule`, then
    `graph.step_on_device` (views, loss, backward, optimiser, the method's update). Returns
    the detached loss, without reading it on the host."""
    model.schedule(progress)
    return step_on_device(model, net, optimizer, augment, x, sizes)


def initial_model(cfg: Config, crop_size: int, device: torch.device, rank: int = 0) -> BaseMethod:
    """The model a run of `cfg` starts from on `rank`: torch is seeded with cfg.seed + rank
    first, so a config always starts from the same weights (and --baseline sees them)."""
    torch.manual_seed(cfg.seed + rank)
    return get_method(cfg.method)(cfg, crop_size).to(device)


@dataclass
class RunParts:
    """What a run trains with: the model, its optimiser, the seeded generators (data order,
    augmentation, the method's own) and the augmentation."""

    model: BaseMethod
    optimizer: torch.optim.Optimizer
    gens: dict[str, torch.Generator]
    augment: Augment
    eager_because: str | None  # why the step is not one CUDA graph (None: it is captured)


def run_parts(
    cfg: Config, data: ImageData, device: torch.device, rank: int = 0, workers: int = 1
) -> RunParts:
    """The model (channels-last on CUDA, its encoder compiled with --compile), optimiser
    (graph-ready where the step is captured), generators and augmentation a run of `cfg` on
    `rank` of `workers` starts from, before any checkpoint."""
    model = initial_model(cfg, data.crop_size, device, rank)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile_encoder()
    eager_because = graph_fallback(cfg, model, device, workers)
    optimizer = build_optimizer(
        cfg.optimizer,
        model.parameters(),
        base_lr(cfg),
        cfg.adam_l2,
        cfg.momentum,
        fused=device.type == "cuda",
        graph_ready=eager_because is None,
    )  # fused Adam: one kernel for all parameters instead of ~600 per-parameter ops
    gens = {
        "data": torch.Generator().manual_seed(cfg.seed),  # the same order on every rank
        "augment": torch.Generator(device).manual_seed(cfg.seed * 1000 + rank),
        **model.generators(),  # e.g. --whiten_global's, the same on every rank
    }
    cuda = device.type == "cuda"  # views as the encoder takes them there: bf16, channels-last
    augment = Augment.from_config(
        cfg,
        data.crop_size,
        data.mean,
        data.std,
        data.blur,
        gens["augment"],
        out_dtype=torch.bfloat16 if cuda else torch.float32,
        channels_last=cuda,
    )
    return RunParts(model, optimizer, gens, augment, eager_because)


def run_step(
    cfg: Config, parts: RunParts, net: torch.nn.Module, device: torch.device, workers: int = 1
) -> DeferredCheck:
    """The training step a run of `cfg` takes with `parts` (`net`: the model as wrapped for
    its workers): `TrainStep`, one CUDA graph where `parts.eager_because` is None (a failed
    capture falls back to eager steps, or is an error with --cuda_graph on), its Newton-Schulz
    check deferred where the method's ZCA needs it (`deferred.defers`). Call it with
    (x, sizes, progress, lr); `finish()` confirms the steps launched."""
    strict = cfg.cuda_graph == "on"
    gens = parts.gens
    drawn = [g for name, g in gens.items() if name != "data"]  # the data's draw at epoch start
    step = TrainStep(
        parts.model,
        net,
        parts.optimizer,
        parts.augment,
        list(gens.values()),
        parts.eager_because,
        strict,
    )
    return DeferredCheck(step, drawn, defers(parts.model, device, workers))


def train(
    cfg: Config,
    reporter: Reporter | None = None,
    resume_from: Path | None = None,
    context: WorkerContext | None = None,
    data: ImageData | None = None,
    progress: bool = True,
    sinks: MetricSinks | None = None,
) -> dict[str, Any]:
    """Trains `cfg` to its last epoch (from a checkpoint folder if given), logging each
    epoch to `sinks` (default: wandb on rank 0 when --wandb names a project).

    Returns a summary: final and best metrics, epochs, time. Raises ConfigError before
    any work for an invalid configuration, NonFiniteLossError if the loss diverges.
    """
    context = context or WorkerContext(cfg.device)
    validate_config(cfg, workers=context.world_size)
    reporter = reporter or LocalReporter(cfg.out)
    device, rank = resolve_device(context.device), context.rank
    setup_device(device)
    data = (data or load_dataset(cfg.dataset, cfg.data_dir, cfg.download)).subset(cfg.subset)
    check_data_fit(cfg, data)  # before the first epoch, not at its evaluation
    place_data(data, device, context.gpu_share)

    parts = run_parts(cfg, data, device, rank, context.world_size)
    model, optimizer, gens = parts.model, parts.optimizer, parts.gens
    capture = parts.eager_because is None
    state = TrainState()
    if resume_from is not None and (Path(resume_from) / CHECKPOINT_FILE).exists():
        state = load_checkpoint(resume_from, model, optimizer, gens)
        if cfg.optimizer == "adam":
            set_graph_ready(optimizer, capture)  # the saved groups' lr and flag came back
    elif cfg.fname:
        load_weights(model, read_checkpoint(cfg.fname), verbose=rank == 0)
    saved_epoch = state.epoch  # of the newest checkpoint, 0 for none
    net = context.wrap_model(model)
    local_bs = cfg.bs // context.world_size
    iters = len(data.train_x) // cfg.bs
    if iters == 0:
        raise ValueError(f"--bs {cfg.bs} is larger than the {len(data.train_x)} training images")
    step = run_step(cfg, parts, net, device, context.world_size)
    eager_because = step.step.eager_because
    if cfg.cuda_graph == "on" and eager_because is not None:
        raise ConfigError(
            f"--cuda_graph on: the step cannot be one CUDA graph here: {eager_because}; "
            "use --cuda_graph auto"
        )
    if device.type == "cuda" and cfg.cuda_graph == "auto" and eager_because and rank == 0:
        print(f"note: the training step runs eagerly, not as a CUDA graph: {eager_because}")
    sinks = sinks or open_sinks(cfg, rank)
    evals = eval_epochs(cfg)
    if cfg.eval_init and state.epoch == 0 and rank == 0:
        state.init_metrics = evaluate_run(model, data, device, cfg)
        if progress:
            tqdm.write(f"untrained encoder: {accuracies(state.init_metrics, cfg.knn)}")
    start = time.perf_counter()
    reporter.start(state.epoch)

    for epoch in range(state.epoch, cfg.epoch):
        t0 = time.perf_counter()
        running_loss = HostScalar(device)  # the bar's loss: never waits for the GPU
        desc = f"epoch {epoch + 1}/{cfg.epoch}"
        bar = epoch_batches(
            data.train_x,
            data.train_y,
            local_bs,
            iters,
            desc,
            gens["data"],
            device,
            context,
            progress,
        )
        for n, (x, _, sizes) in enumerate(bar):
            lr = learning_rate(cfg, epoch + n / iters, state.iteration, iters)
            step(x, sizes, epoch / cfg.epoch, lr)
            state.iteration += 1
            if n % 20 == 19:
                running_loss.push(step.loss_sum / max(step.steps, 1))  # the confirmed steps
                shown = running_loss.latest()
                if shown is not None:  # an early, lagged look: stop a diverged run soon
                    _check_finite(shown, epoch, n, reporter, saved_epoch)
                seen = (n + 1) * cfg.bs / (time.perf_counter() - t0)
                shown = "…" if shown is None else f"{shown:.4f}"
                bar.set_postfix(loss=shown, lr=f"{lr:.2e}", img_s=f"{seen:.0f}")
        bar.close()
        loss_sum, ns_failures = step.finish()  # every step confirmed (the check's redos done)
        state.epoch = epoch + 1
        mean_loss = loss_sum.item() / iters  # the epoch's one host sync: its time is complete
        epoch_time = time.perf_counter() - t0
        metrics = {
            "epoch": state.epoch,
            "loss": mean_loss,
            "lr": lr,
            "images_per_s": iters * cfg.bs / epoch_time,
            "epoch_time_s": epoch_time,
            **whitening_stats.take(),
            "whiten_ns_failures": ns_failures,
            **graph_metrics(step.step),
        }
        _check_finite(metrics["loss"], epoch, iters - 1, reporter, saved_epoch)
        if state.epoch in evals and rank == 0:
            t_eval = time.perf_counter()
            metrics |= evaluate_run(model, data, device, cfg, final=state.epoch == cfg.epoch)
            metrics["eval_time_s"] = time.perf_counter() - t_eval
        metrics["time_total_s"] = time.perf_counter() - start
        state.history.append(metrics)
        sinks.log(metrics, step=state.epoch)  # before the report: a retry never leaves a gap
        ckpt_dir = None
        if state.epoch % cfg.ckpt_every == 0 or state.epoch == cfg.epoch:
            if rank == 0:
                ckpt_dir = reporter.checkpoint_dir()
                save_checkpoint(ckpt_dir, model, optimizer, state, cfg, gens)
            saved_epoch = state.epoch
        reporter.report(metrics, ckpt_dir)
        if rank == 0:
            fault.hold(state.epoch)  # a test's fault-injection point, off unless switched on
        if progress and rank == 0:
            tqdm.write(epoch_line(metrics, cfg.knn))
    sinks.close()
    return summarize(state.history, state.init_metrics)


def graph_metrics(step: TrainStep) -> dict[str, Any]:
    """Whether the epoch ended with its step replayed as one CUDA graph (`cuda_graph`), and
    if not, why (`eager_because`: off CUDA, a flag, a failed capture)."""
    if step.eager_because is None:
        return {"cuda_graph": True}
    return {"cuda_graph": False, "eager_because": step.eager_because}


def _check_finite(loss: float, epoch: int, n: int, reporter: Reporter, saved: int) -> None:
    """Raises NonFiniteLossError for a NaN/inf loss, saying which checkpoint exists (`saved`
    is the epoch of the newest one, 0 if none was written)."""
    if not math.isfinite(loss):
        where = (
            f"the last good checkpoint, of epoch {saved}, is in {reporter.location}"
            if saved
            else "no checkpoint was written before it"
        )
        raise NonFiniteLossError(
            f"the loss became {loss} in epoch {epoch + 1}, iteration {n + 1}; {where}. "
            "Try a lower --lr, a larger --w_eps, or a larger --w_size."
        )
