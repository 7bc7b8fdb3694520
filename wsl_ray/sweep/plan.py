"""What a sweep will cost, before it runs (`--plan`): a measured trial-epoch, times the
trial-epochs ASHA implies (`wsl_ray.sweep.asha`).

A trial-epoch costs `iters` training steps and, on an evaluated epoch, one evaluation; both
are measured on the space's first point in a one-worker Ray Train run with a trial worker's
resources (so on a cluster it runs where trials run), and so is a trial's start-up.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import shutil
import tempfile
import time
from itertools import count, islice
from typing import Any

import ray.train
import ray.train.torch
import torch

from ..config import Config
from ..data import ImageData, iterate_batches, load_dataset
from ..data.shared import ROLES, shared_dataset
from ..training.device import place_data, resolve_device, setup_device
from ..training.evaluate import evaluate_run
from ..training.graph import WARMUP_STEPS
from ..training.loop import eval_epochs, run_parts, run_step
from ..training.optim import base_lr
from ..training.runner import torch_trainer
from ..utils.markdown import markdown_table
from ..utils.storage import filesystem
from .asha import REDUCTION_FACTOR, milestones, planned_trial_epochs
from .bill import Resources, duration, duration_range
from .experiment import Experiment
from .settings import SweepSettings

PLAN_STEPS = 5  # timed training steps, after the untimed warm-up (and a CUDA graph's capture)
SLOW_EPOCH_S = 600  # a trial-epoch slower than this gets a warning


@dataclasses.dataclass
class Measurement:
    """One trial worker's costs on the space's first point, in seconds and bytes."""

    steps: int  # timed steps, after the warm-up (timed apart)
    step_s: float
    warmup_s: float  # the steps before: allocations, autotuning, --compile, a graph's capture
    warmup_steps: int  # 1, or WARMUP_STEPS eager steps and the capture where the step is a graph
    eval_s: float
    startup_s: float  # Ray Train run start to first step: worker group, imports, data, model
    iters: int  # training steps per epoch
    evals: int  # evaluated epochs per trial
    epochs: int
    memory_bytes: int  # peak GPU memory allocated, or the process's peak RSS on CPU
    memory_kind: str

    @property
    def epoch_s(self) -> float:
        """Seconds per trial-epoch: its steps and its share of the trial's evaluations."""
        return self.iters * self.step_s + self.eval_s * self.evals / self.epochs


def _measure_loop(config: dict[str, Any]) -> None:
    """The measuring Train worker: the trial's own step (`loop.run_step`: one CUDA graph
    where the trial's would be one, a ZCA's check deferred as there) on config["local_bs"]
    batches, config["steps"] times after its warm-up (one step; on a captured step also the
    eager warm-up steps and the capture), and one evaluation, reported to Ray Train as one
    result."""
    cfg = Config.from_dict(config["cfg"])
    torch.set_num_threads(config["threads"])
    device = resolve_device(ray.train.torch.get_device())
    setup_device(device)
    data = shared_dataset(config["shared"], cfg.dataset, cfg.data_dir) or load_dataset(
        cfg.dataset, cfg.data_dir, val_size=cfg.val_size
    )
    data = data.subset(cfg.subset)
    place_data(data, device, config["gpu_share"])
    parts = run_parts(cfg, data, device)
    step = run_step(cfg, parts, parts.model, device)
    batches = (  # epoch after epoch: the warm-up and the timed steps may outnumber one epoch
        batch
        for _ in count()
        for batch in iterate_batches(
            data.train_x,
            data.train_y,
            config["local_bs"],
            generator=parts.gens["data"],
            device=device,
            with_sizes=True,
        )
    )
    warmup = WARMUP_STEPS + 1 if parts.eager_because is None else 1
    lr = base_lr(cfg)
    ready = time.time()
    marks = [time.perf_counter()]
    for x, _, sizes in islice(batches, warmup + config["steps"]):
        step(x, sizes, 0.0, lr)
        step.finish()[0].item()  # the step confirmed (its deferred check too) and complete
        marks.append(time.perf_counter())
    start = time.perf_counter()
    evaluate_run(parts.model, data, device, cfg)
    cuda = device.type == "cuda"
    folder = tempfile.mkdtemp(prefix="wsl_ray_plan_")  # Train keeps metrics with a checkpoint
    ray.train.report(
        {
            "ready": ready,
            "steps": len(marks) - 1 - warmup,
            "step_s": (marks[-1] - marks[warmup]) / (len(marks) - 1 - warmup),
            "warmup_s": marks[warmup] - marks[0],
            "warmup_steps": warmup,
            "eval_s": time.perf_counter() - start,
            "memory_bytes": torch.cuda.max_memory_allocated(device)
            if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_kind": "peak GPU memory" if cuda else "peak RSS",
        },
        checkpoint=ray.train.Checkpoint.from_directory(folder),
    )
    shutil.rmtree(folder, ignore_errors=True)


def measure_trial(
    cfg: Config,
    data: ImageData,
    shared: dict | None,
    r: Resources,
    run: Experiment,
) -> Measurement:
    """Measures one trial worker of `cfg` in a one-worker Ray Train run with a trial worker's
    resources `r`, started as a trial starts its own (Ray must be initialised): PLAN_STEPS
    of the trial's training steps after their warm-up (`_measure_loop`), and one evaluation.
    `data` is the sweep's dataset (loaded by the driver), `shared` its object-store copy. The
    run `run` (its folder on the sweep's storage, which every node reaches) is deleted
    after it. The start-up is the time from the run's start to its first step: Ray Train's
    worker group, imports, data and model."""
    iters = max(1, len(data.subset(cfg.subset).train_x) // cfg.bs)
    config = {
        "cfg": cfg.to_dict(),
        "shared": shared,
        "steps": PLAN_STEPS,
        "local_bs": cfg.bs // r.workers,
        "threads": max(1, int(r.cpus)),
        "gpu_share": r.gpus or 1.0,
    }
    trainer = torch_trainer(_measure_loop, config, 1, r.gpus, r.cpus, run.storage, run.name)
    submitted = time.time()
    try:
        found = trainer.fit().metrics
    finally:
        fs, where = filesystem(run.path)
        fs.delete_dir(where)
    return Measurement(
        steps=found["steps"],
        step_s=found["step_s"],
        warmup_s=found["warmup_s"],
        warmup_steps=found["warmup_steps"],
        eval_s=found["eval_s"],
        startup_s=found["ready"] - submitted,
        iters=iters,
        evals=len(eval_epochs(cfg)),
        epochs=cfg.epoch,
        memory_bytes=found["memory_bytes"],
        memory_kind=found["memory_kind"],
    )


def data_bytes(data: ImageData) -> int | None:
    """Bytes of the dataset's arrays (one copy per node in the object store); None when it
    is streamed from files."""
    arrays = {id(a): a for a in (getattr(data, r) for r in ROLES)}
    if not all(isinstance(a, torch.Tensor) for a in arrays.values()):
        return None
    return sum(a.numel() * a.element_size() for a in arrays.values())


def run_cost(
    trial_epochs: float, trials: int, epochs: int, m: Measurement, r: Resources
) -> tuple[float, float]:
    """(wall seconds, unit-hours) of `trials` trials that run `trial_epochs` in all: the
    trial-epochs spread over r.concurrency trials at once (never less than one trial's whole
    budget, run in sequence) plus one start-up per round of trials; the hours are the
    trials' time (start-ups included) times the units each holds."""
    at_once = min(r.concurrency, trials)
    wall = (
        max(trial_epochs / at_once, epochs) * m.epoch_s + math.ceil(trials / at_once) * m.startup_s
    )
    busy = trial_epochs * m.epoch_s + trials * m.startup_s
    return wall, busy * r.per_trial / 3600


def _warmup(steps: int) -> str:
    return "a warm-up step" if steps == 1 else f"{steps - 1} warm-up steps and the graph's capture"


def _size(n: int | None) -> str:
    return "streamed from files" if n is None else f"{n / 2**20:.0f} MiB"


def plan_text(
    settings: SweepSettings,
    cfg: Config,
    grace: int,
    m: Measurement,
    r: Resources,
    data_size: int | None,
) -> str:
    """The plan a person reads in a few seconds: a title, a table of the sweep's trial-epochs,
    wall time and hours (lower, expected, upper; then the confirmation of settings.confirm
    configurations and the default over settings.seeds seeds), how it was measured, one
    sentence, and a warning for a slow trial-epoch. The sweep runs settings.concurrency trials
    at once when given, else r.concurrency, as the confirmation does."""
    name, trials, scheduler = settings.experiment.name, settings.num_trials, settings.scheduler
    sweep_r = dataclasses.replace(r, concurrency=settings.concurrency or r.concurrency)
    figures = planned_trial_epochs(trials, cfg, grace, scheduler)
    rungs = [f"{m_:g}" for m_ in milestones(cfg.epoch, grace) if m_ < cfg.epoch]
    evaluated = ", ".join(str(e) for e in sorted(eval_epochs(cfg)))
    if scheduler == "asha" and rungs:
        how = f"ASHA rungs at epoch {', '.join(rungs)} (grace {grace}, reduction factor "
        how += f"{REDUCTION_FACTOR}, max_t {cfg.epoch})"
    else:
        how = "no trial stops early"
    lines = [f"plan of sweep {name}: {trials} trials x {cfg.epoch} epochs, evaluated at epoch "]
    lines[0] += f"{evaluated}; {how}; {min(trials, sweep_r.concurrency)} trial(s) at once"
    rows, costs = [], {}
    labels = {
        "lower bound": "sweep, lower bound (ASHA stops all it can)",
        "expected": "sweep, expected (1 in 2 promoted per rung)",
        "upper bound": "sweep, upper bound (none stops)",
    }
    for key, label in labels.items():
        costs[key] = run_cost(figures[key], trials, cfg.epoch, m, sweep_r)
        rows.append([label, f"{figures[key]:g}", duration(costs[key][0]), f"{costs[key][1]:.2f}"])
    k, seeds = settings.confirm, settings.seeds
    after = ""
    if k:
        runs = (k + 1) * seeds
        wall, hours = run_cost(runs * cfg.epoch, runs, cfg.epoch, m, r)
        rows.append(
            [f"confirmation ({k + 1} configs x {seeds} seeds)", runs * cfg.epoch, duration(wall)]
            + [f"{hours:.2f}"]
        )
        after = f", then its confirmation about {duration(wall)} ({hours:.2f} {r.unit}-hours)"
    table = markdown_table(["run", "trial-epochs", "wall time", f"{r.unit}-hours"], rows)
    gpus = f", {r.gpus:g} GPU" if r.gpus else ""
    measured = (
        f"measured on the first point in a one-worker Ray Train run with {r.cpus:g} CPU{gpus} "
        f"(a trial worker's): {m.steps} training steps after {_warmup(m.warmup_steps)} "
        f"({m.warmup_s:.1f} s, not counted), {m.step_s:.2f} s each x {m.iters} per epoch, "
        f"and one evaluation ({m.eval_s:.1f} s, {m.evals} per trial): {m.epoch_s:.1f} s per "
        f"trial-epoch; start-up {m.startup_s:.1f} s (Ray Train's worker group, imports, data, "
        f"model), counted once per trial. Memory: {m.memory_bytes / 2**20:.0f} MiB per trial "
        f"({m.memory_kind}), data {_size(data_size)} per node (object store)."
    )
    expected, lower, upper = costs["expected"], costs["lower bound"], costs["upper bound"]
    sentence = (
        f"The sweep should take {duration_range(expected[0], lower[0], upper[0])} and "
        f"{expected[1]:.2f} {r.unit}-hours{after}."
    )
    lines += [table, measured, sentence]
    if m.epoch_s > SLOW_EPOCH_S:
        lines.append(
            f"warning: one trial-epoch takes {duration(m.epoch_s)} here; a narrower encoder "
            "(--set arch=resnet18_w8), fewer images (--set subset=N) or a GPU "
            "(--gpus-per-trial) makes it faster"
        )
    return "\n".join(lines)


def sweep_plan(
    settings: SweepSettings,
    limits: tuple[int, int],
    cfg: Config,
    data: ImageData,
    shared: dict | None,
    r: Resources,
) -> str:
    """The plan of the checked sweep `settings` (Ray initialised): measures one trial worker of
    the first point `cfg` and returns plan_text's text."""
    print("--plan: measuring one trial's training steps and evaluation ...", flush=True)
    experiment = settings.experiment
    run = Experiment(experiment.storage, f"{experiment.name}-plan")
    m = measure_trial(cfg, data, shared, r, run)
    return plan_text(settings, cfg, limits[1], m, r, data_bytes(data))
