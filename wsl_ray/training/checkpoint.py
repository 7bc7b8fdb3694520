"""Checkpoint files: the full training checkpoint (weights, optimiser, RNGs, history) written
atomically, and reading any checkpoint safely (weights_only=True: tensors, numbers, strings
and containers, never code).

A training checkpoint is `path/checkpoint.pt` holding {model, optimizer, epoch, iteration,
history, init_metrics, config, rng}; files written by earlier versions have the same keys.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..methods import BaseMethod
from ..utils.atomic import atomic_save

CHECKPOINT_FILE = "checkpoint.pt"


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
    atomic_save(payload, path / CHECKPOINT_FILE)


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, or holds more than weights and numbers."""


def resume_problem(found: Path) -> str | None:
    """Why a --resume cannot go on, or None: it continues the run whose checkpoint (or Ray
    Train run folder) is `found`, so that must exist. Shared by the commands with --resume."""
    if not found.exists():
        return (
            f"--resume: nothing to continue, {found} does not exist; drop --resume to start "
            "a new run there, or give the --out of the run to continue"
        )
    return None


def read_checkpoint(fname: str | Path, flag: str = "--fname") -> dict[str, Any]:
    """A checkpoint's payload, from its file or from the folder holding checkpoint.pt.

    Loads with weights_only=True (tensors, numbers, strings, containers, None): a file that
    holds any other object is refused, since unpickling it could run code. Raises
    CheckpointError, naming `flag` and the file, for a missing, corrupt or refused file.
    """
    path = Path(fname)
    path = path / CHECKPOINT_FILE if path.is_dir() else path
    if not path.is_file():
        raise CheckpointError(f"{flag} {path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if not refused:
            raise CheckpointError(f"{flag} {path} is not a readable PyTorch checkpoint") from None
        raise CheckpointError(
            f"{flag} {path}: refused, it holds objects other than tensors, numbers, strings "
            f"and containers ({refused.group(1)}; weights_only=True loads no code)"
        ) from None
    except Exception as err:  # arbitrary bytes fail anywhere in torch.load's unpickler
        raise CheckpointError(
            f"{flag} {path} is not a readable PyTorch checkpoint (corrupt or truncated?): "
            f"{type(err).__name__}: {str(err).splitlines()[0][:150] if str(err) else ''}"
        ) from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{flag} {path}: holds a {type(payload).__name__}, not a checkpoint")
    return payload


def load_checkpoint(path: Path, model: BaseMethod, optimizer, gens: dict) -> TrainState:
    payload = read_checkpoint(path, flag="--resume")
    missing = {"model", "optimizer", "rng", "epoch", "iteration", "history"} - set(payload)
    if missing:
        raise CheckpointError(f"--resume {path}: not a training checkpoint, no {sorted(missing)}")
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
