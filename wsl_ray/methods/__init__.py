"""Self-supervised methods: one short file each, and a registry by name."""

from __future__ import annotations

from .barlow_twins import BarlowTwins
from .base import BaseMethod
from .byol import BYOL
from .contrastive import Contrastive
from .simsiam import SimSiam
from .vicreg import VICReg
from .whitened_mse import WhitenedMSE
from .zero_icl import ZeroICL

REGISTRY: dict[str, type[BaseMethod]] = {
    "w_mse": WhitenedMSE,  # presets of the whitening family (wsl_ray.methods.family)
    "cw_rgp": WhitenedMSE,
    "whitened_mse": WhitenedMSE,
    "contrastive": Contrastive,
    "byol": BYOL,
    "barlow_twins": BarlowTwins,
    "vicreg": VICReg,
    "simsiam": SimSiam,
    "zero_icl": ZeroICL,
}


def get_method(name: str) -> type[BaseMethod]:
    """The method class for a --method name."""
    if name not in REGISTRY:
        raise ValueError(f"unknown --method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


__all__ = ["BaseMethod", "REGISTRY", "get_method"]
