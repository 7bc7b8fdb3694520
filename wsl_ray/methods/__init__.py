"""Self-supervised methods: one short file each, and the registry of their specs by name.

Adding a method: its file (the class and its `MethodSpec`), its loss in `losses.py`, and
one line below.
"""

from __future__ import annotations

from .barlow_twins import BARLOW_TWINS_SPEC
from .base import BaseMethod
from .byol import BYOL_SPEC
from .contrastive import CONTRASTIVE_SPEC
from .intl import INTL_SPEC
from .lejepa import LEJEPA_SPEC
from .simsiam import SIMSIAM_SPEC
from .spec import MethodSpec
from .vicreg import VICREG_SPEC
from .whitened_mse import CW_RGP_SPEC, W_MSE_SPEC, WHITENED_MSE_SPEC
from .zero_icl import ZERO_ICL_SPEC

# In the order of `--method`'s choices (the first is the default).
SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        W_MSE_SPEC,
        CW_RGP_SPEC,
        CONTRASTIVE_SPEC,
        BYOL_SPEC,
        WHITENED_MSE_SPEC,
        BARLOW_TWINS_SPEC,
        VICREG_SPEC,
        SIMSIAM_SPEC,
        ZERO_ICL_SPEC,
        INTL_SPEC,
        LEJEPA_SPEC,
    )
}
METHODS = tuple(SPECS)


def get_spec(name: str) -> MethodSpec:
    """The spec of a --method name."""
    if name not in SPECS:
        raise ValueError(f"unknown --method {name!r}; choose one of {', '.join(SPECS)}")
    return SPECS[name]


def get_method(name: str) -> type[BaseMethod]:
    """The method class for a --method name."""
    return get_spec(name).cls


__all__ = ["BaseMethod", "METHODS", "MethodSpec", "SPECS", "get_method", "get_spec"]
