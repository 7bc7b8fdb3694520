"""`python -m wsl_ray.lincls --fname CKPT`: linear classification on a frozen encoder.

The protocol of SimSiam's and CW-RGP's `ImageNet/lincls.py`, by which CW-RGP reports its
ImageNet numbers (the fast probe of `evaluate.py` is W-MSE's):
- the encoder is frozen, its BatchNorm in eval mode; a linear layer on its features,
  weights N(0, 0.01), bias 0, is trained with cross-entropy;
- training images are augmented: RandomResizedCrop (scale 0.08-1, bilinear) and a
  horizontal flip; evaluation images are not: for ImageNet Resize 256 + CenterCrop 224,
  for the small datasets the images as the evaluation role holds them (CIFAR 32 and Tiny
  ImageNet 64 at their native size, STL-10 Resize 70 + CenterCrop 64 as W-MSE), and the
  training crops have the encoder's training size (32, 64 or 224);
- SGD with momentum 0.9 (or --optimizer lars: trust coefficient 0.001, no clipping), lr
  --lr x bs / 256, weight decay 0, a per-epoch cosine lr(e) = lr (1 + cos(pi e / epochs)) / 2;
- top-1 and top-5 on the test set after every epoch; a checkpoint every epoch, from which
  --resume continues exactly.

The checkpoint is ours (its config names the encoder and dataset) or a reference one
(W-MSE or CW-RGP: the keys under `model.` are the encoder; give --arch and --dataset).
With --workers N the loop runs as a Ray Train job of N DDP workers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .config.checks import MAX_SEED
from .data import Augment, load_dataset
from .methods.networks import get_encoder
from .training.checkpoint import read_checkpoint, resume_problem
from .training.device import gpus_per_worker, resolve_device, setup_device
from .training.evaluate import embed
from .training.loop import WorkerContext, epoch_batches
from .training.optim import build_optimizer
from .training.reporting import LocalReporter, Reporter
from .training.weights import state_dict_of
from .utils.atomic import atomic_save
from .utils.cli import Parser, command_name
from .utils.paths import writable_folder
from .utils.ray_start import init_ray

CHECKPOINT_FILE = "lincls.pt"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=command_name("wsl_ray.lincls"),
        description="Linear classification on a frozen encoder (SimSiam / CW-RGP protocol).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--fname", required=True, help="checkpoint: ours, W-MSE's or CW-RGP's")
    p.add_argument("--arch", default=None, help="encoder; default: the checkpoint's config")
    p.add_argument("--dataset", default=None, help="default: the checkpoint's config")
    p.add_argument("--data_dir", "--data-dir", default=None)
    p.add_argument("--subset", type=int, default=None, help="at most this many images per role")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--bs", type=int, default=1024, help="batch size, all workers together")
    p.add_argument("--lr", type=float, default=0.1, help="base lr; the lr is lr x bs / 256")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=0.0, help="weight decay")
    p.add_argument("--optimizer", choices=("sgd", "lars"), default="sgd")
    p.add_argument(
        "--crop_s0", "--crop-s0", type=float, default=0.08, help="smallest crop area fraction"
    )
    p.add_argument("--out", default="runs/lincls", help="checkpoint and metrics folder")
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="Ray Train DDP workers (0: here)")
    p.add_argument(
        "--gpus-per-worker",
        "--gpus_per_worker",
        type=float,
        default=None,
        help="default: 1 if CUDA",
    )
    p.add_argument("--cpus-per-worker", "--cpus_per_worker", type=float, default=1)
    return p


class FrozenEncoder(nn.Module):
    """An encoder in eval mode whose `embed` gives features without gradients."""

    def __init__(self, encoder: nn.Module, out_size: int):
        super().__init__()
        self.encoder, self.embed_size = encoder.requires_grad_(False).eval(), out_size

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)  # BatchNorm statistics never change

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def resolve_settings(args: argparse.Namespace, payload: dict[str, Any]) -> dict[str, Any]:
    """Encoder and dataset from the flags, else from our checkpoint's config; a one-line
    error naming the flag when neither gives them."""
    config = payload.get("config", {})
    settings = {
        "arch": args.arch or config.get("arch"),
        "dataset": args.dataset or config.get("dataset"),
        "data_dir": args.data_dir if args.data_dir is not None else config.get("data_dir"),
        "zero_init_residual": bool(config.get("zero_init_residual")),
        # the images the encoder was trained on, unless --subset says otherwise
        "subset": args.subset if args.subset is not None else config.get("subset"),
    }
    for flag in ("arch", "dataset"):
        if not settings[flag]:
            raise ValueError(
                f"--{flag}: the checkpoint holds no config; give it (e.g. "
                f"--arch resnet50 --dataset imagenet)"
            )
    return settings


def load_encoder(payload: dict[str, Any], arch: str, image_size: int) -> FrozenEncoder:
    """The encoder's weights are the checkpoint's keys under `model.` (module. parts dropped)."""
    encoder, out_size = get_encoder(arch, image_size)
    weights = {
        k.removeprefix("model."): v
        for k, v in state_dict_of(payload).items()
        if k.startswith("model.") and not k.startswith("model.fc.")
    }
    result = encoder.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys or not weights:
        raise ValueError(
            f"the checkpoint's encoder does not fit --arch {arch}: missing "
            f"{result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}"
        )
    return FrozenEncoder(encoder, out_size)


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """lr at the start of `epoch` (0-based): base (1 + cos(pi epoch / epochs)) / 2."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == y[:, None]).any(dim=1).float().mean()


def run(
    args: argparse.Namespace,
    reporter: Reporter | None = None,
    resume_from: Path | None = None,
    context: WorkerContext | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the linear layer to args.epochs and returns the last and best top-1/top-5."""
    context = context or WorkerContext(args.device)
    device, rank, world = resolve_device(context.device), context.rank, context.world_size
    setup_device(device)
    reporter = reporter or LocalReporter(args.out)
    payload = read_checkpoint(args.fname)
    settings = resolve_settings(args, payload)
    data = load_dataset(settings["dataset"], settings["data_dir"]).subset(settings["subset"])
    encoder = load_encoder(payload, settings["arch"], data.crop_size).to(device)
    torch.manual_seed(args.seed)
    linear = nn.Linear(encoder.embed_size, data.num_classes)
    nn.init.normal_(linear.weight, 0.0, 0.01)
    nn.init.zeros_(linear.bias)
    linear = linear.to(device)
    base_lr = args.lr * args.bs / 256
    optimizer = build_optimizer(
        args.optimizer, linear.parameters(), base_lr, args.wd, args.momentum
    )
    gens = {
        "data": torch.Generator().manual_seed(args.seed),
        "augment": torch.Generator(device).manual_seed(args.seed * 1000 + rank),
    }
    state = {"epoch": 0, "history": []}
    file = Path(resume_from) / CHECKPOINT_FILE if resume_from is not None else None
    if file is not None and file.exists():
        saved = read_checkpoint(file, flag="--resume")
        linear.load_state_dict(saved["linear"])
        optimizer.load_state_dict(saved["optimizer"])
        for name, g in gens.items():
            g.set_state(saved["rng"][name])
        state = {"epoch": saved["epoch"], "history": saved["history"]}
    net = context.wrap_model(linear)
    augment = Augment(
        data.crop_size,
        data.mean,
        data.std,
        num_samples=1,
        cj_p=0.0,
        gs_p=0.0,
        crop_scale=(args.crop_s0, 1.0),
        interpolation="bilinear",
        generator=gens["augment"],
    )
    labelled = data.train_y >= 0  # STL-10's unlabelled images carry -1
    train_x = data.train_x[labelled] if isinstance(data.train_x, torch.Tensor) else data.train_x
    train_y = data.train_y[labelled]
    test_f, test_y = embed(encoder, data.test_x, data.test_y, data.mean, data.std, device)
    local_bs = max(args.bs // world, 1)
    # one process: every image each epoch; DDP ranks: the same number of full batches each
    # (ranks hold n // world or one more images), or DDP would wait for a missing batch
    n = len(train_y)
    iters = math.ceil(n / local_bs) if world == 1 else (n // world) // local_bs
    if iters == 0:
        raise ValueError(f"--bs {args.bs}: fewer than {world} x {local_bs} training images")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for epoch in range(state["epoch"], args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(base_lr, epoch, args.epochs)
        desc = f"lincls epoch {epoch + 1}/{args.epochs}"
        bar = epoch_batches(
            train_x, train_y, local_bs, iters, desc, gens["data"], device, context, progress, False
        )
        loss_sum, seen = torch.zeros((), device=device), 0
        for x, y, sizes in bar:
            with autocast:  # crops from the whole image, as SimSiam's lincls.py
                features = encoder.embed(augment(x, sizes)[0]).float()
            loss = F.cross_entropy(net(features), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            seen += len(y)
        bar.close()
        with torch.no_grad():
            logits = linear(test_f)
        metrics = {
            "epoch": epoch + 1,
            "loss": loss_sum.item() / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "acc1": accuracy(logits, test_y, 1).item(),
            "acc5": accuracy(logits, test_y, 5).item(),
        }
        state = {"epoch": epoch + 1, "history": [*state["history"], metrics]}
        ckpt_dir = None
        if rank == 0:
            ckpt_dir = reporter.checkpoint_dir()
            payload = {
                "linear": linear.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": {name: g.get_state() for name, g in gens.items()},
                "settings": settings,
                **state,
            }
            atomic_save(payload, ckpt_dir / CHECKPOINT_FILE)
        reporter.report(metrics, ckpt_dir)
        if progress and rank == 0:
            tqdm.write(
                f"lincls epoch {epoch + 1:>3}  loss {metrics['loss']:.4f}  "
                f"top-1 {metrics['acc1']:.2%}  top-5 {metrics['acc5']:.2%}"
            )
    return summarize(state["history"])


def summarize(history: list[dict[str, Any]]) -> dict[str, Any]:
    if not history:
        return {"epochs": 0}
    last = history[-1]
    best = max(history, key=lambda m: m["acc1"])
    return {
        "epochs": last["epoch"],
        "acc1": last["acc1"],
        "acc5": last["acc5"],
        "best_acc1": best["acc1"],
        "best_epoch": best["epoch"],
    }


def worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's loop: one DDP rank; resumes from the Train run's latest checkpoint."""
    from .training.runner import RayTrainReporter, latest_checkpoint, ray_context

    with latest_checkpoint() as resume_dir:
        run(argparse.Namespace(**config), RayTrainReporter(), resume_dir, ray_context(), False)


def run_with_ray(args: argparse.Namespace) -> dict[str, Any]:
    """The loop as a TorchTrainer of args.workers workers, named `lincls` under --out."""
    import ray

    from .training.runner import torch_trainer

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


def flag_problem(args: argparse.Namespace) -> str | None:
    """The first flag whose value cannot work, by what it means, or None."""
    counts = {"epochs": args.epochs, "bs": args.bs}
    if args.subset is not None:
        counts["subset"] = args.subset
    for flag, value in counts.items():
        if value < 1:
            return f"--{flag} {value}: must be at least 1"
    rules = {  # flag: (value, holds, what it must be)
        "lr": (args.lr, 0 < args.lr < math.inf, "a number > 0"),
        "momentum": (args.momentum, 0 <= args.momentum < 1, "in [0, 1)"),
        "wd": (args.wd, 0 <= args.wd < math.inf, "a number, 0 or more"),
        "crop_s0": (args.crop_s0, 0 < args.crop_s0 <= 1, "an area fraction in (0, 1]"),
        "workers": (args.workers, args.workers >= 0, "0 (this process) or more"),
        "cpus-per-worker": (args.cpus_per_worker, 0 < args.cpus_per_worker < math.inf, "> 0"),
        "seed": (args.seed, 0 <= args.seed < MAX_SEED, "in [0, 2**53)"),
    }
    if args.gpus_per_worker is not None:
        gpus = args.gpus_per_worker
        rules["gpus-per-worker"] = (gpus, 0 <= gpus < math.inf, "a number, 0 or more")
    for flag, (value, holds, what) in rules.items():
        if not holds:  # NaN fails every comparison, so it lands here too
            return f"--{flag} {value}: must be {what}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := flag_problem(args):
        parser.error(problem)
    args.fname = str(Path(args.fname).resolve())  # Ray workers run elsewhere
    if args.data_dir is not None:
        args.data_dir = str(Path(args.data_dir).resolve())
    try:
        writable_folder(args.out, "--out")
        found = Path(args.out) / ("lincls" if args.workers else CHECKPOINT_FILE)
        if args.resume and (problem := resume_problem(found)):
            raise ValueError(problem)
        read_checkpoint(args.fname)  # a missing or unsafe --fname fails before any work
        if args.workers:
            summary = run_with_ray(args)
        else:
            summary = run(args, resume_from=Path(args.out) if args.resume else None)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
