"""Self-supervised methods: one short file each, and a registry by name."""

from __future__ import annotations

from ..config import METHODS
from .base import BaseMethod
from .byol import BYOL
from .contrastive import Contrastive
from .cw_rgp import CWRGP
from .w_mse import WMSE

REGISTRY: dict[str, type[BaseMethod]] = {
    "w_mse": WMSE,
    "cw_rgp": CWRGP,
    "contrastive": Contrastive,
    "byol": BYOL,
}
assert set(REGISTRY) == set(METHODS)


def get_method(name: str) -> type[BaseMethod]:
    """The method class for a --method name."""
    if name not in REGISTRY:
        raise ValueError(f"unknown --method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


__all__ = ["BaseMethod", "REGISTRY", "get_method"]
