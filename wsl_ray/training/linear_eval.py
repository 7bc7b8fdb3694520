"""Linear classification on a frozen encoder: the loop that trains the linear layer.

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
`train_linear` takes the flags of `wsl_ray.lincls`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from ..data import Augment, load_dataset
from ..utils.atomic import atomic_save
from .checkpoint import read_checkpoint
from .device import resolve_device, setup_device
from .evaluate import embed
from .frozen_encoder import load_encoder
from .loop import WorkerContext, epoch_batches
from .optim import build_optimizer, cosine
from .reporting import LocalReporter, Reporter

CHECKPOINT_FILE = "lincls.pt"


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


def accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of rows whose label is among the k largest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == y[:, None]).any(dim=1).float().mean()


def train_linear(
    args: argparse.Namespace,
    reporter: Reporter | None = None,
    resume_from: Path | None = None,
    context: WorkerContext | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the linear layer on `args.fname`'s frozen encoder to args.epochs, continuing
    from `resume_from`'s checkpoint if it holds one, and returns `summarize`'s summary."""
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
            group["lr"] = cosine(base_lr, epoch, args.epochs)
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
    """The epochs trained, the last top-1/top-5 and the best top-1 and its epoch."""
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
