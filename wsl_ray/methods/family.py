"""The whitening family of the CW-RGP study, as data: which whitening a config asks for.

A member of the family is the whitened MSE loss with one whitening transform, chosen by
  matrix        cholesky | zca | pca | iternorm (INTL's IterNorm, its 4 steps), or the
                controls bn (standardisation) and none (plain MSE)
  axis          batch (over samples, W-MSE) or channel (over channels, CW-RGP)
  groups        the channels split into this many groups, whitened separately
  random_groups the channel grouping redrawn at every call
  minus         the covariance divisor is (count - minus)
`--method whitened_mse` takes them from `--w_matrix --w_axis --groups --w_random_groups
--minus`; `w_mse` and `cw_rgp` are named presets that fix them. This module needs no torch,
so the analysis package can label results with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MATRICES = ("cholesky", "zca", "pca", "iternorm", "bn", "none")
AXES = ("batch", "channel")
FAMILY_METHODS = ("w_mse", "cw_rgp", "whitened_mse")
FAMILY_FLAGS = ("w_matrix", "w_axis", "w_random_groups", "minus")
# The value of each family flag when the user leaves it unset (the Config defaults).
UNSET: dict[str, Any] = {"w_matrix": None, "w_axis": None, "w_random_groups": False, "minus": 1}
# What the named presets fix. W-MSE whitens all channels together (it ignores --groups);
# CW-RGP takes its number of groups from --groups.
PRESETS: dict[str, dict[str, Any]] = {
    "w_mse": {
        "w_matrix": "cholesky",
        "w_axis": "batch",
        "w_random_groups": False,
        "minus": 1,
        "groups": 1,
    },
    "cw_rgp": {"w_matrix": "zca", "w_axis": "channel", "w_random_groups": True, "minus": 1},
}
# whitened_mse's settings for the flags left unset: W-MSE's.
GENERIC_DEFAULTS: dict[str, Any] = {
    "w_matrix": "cholesky",
    "w_axis": "batch",
    "groups": 1,
    "w_random_groups": False,
    "minus": 1,
}
MATRIX_NAMES = {
    "cholesky": "Cholesky",
    "zca": "ZCA",
    "pca": "PCA",
    "iternorm": "IterNorm",
    "bn": "BN",
    "none": "Plain",
}


@dataclass(frozen=True)
class Family:
    """One whitening of the family: the arguments of `whitening.whiten` that a method uses."""

    matrix: str
    axis: str
    groups: int
    random_groups: bool
    minus: int

    @property
    def label(self) -> str:
        """E.g. 'ZCA channel, 4 random groups'; 'Plain' for no whitening."""
        if self.matrix == "none":
            return "Plain"
        text = f"{MATRIX_NAMES[self.matrix]} {self.axis}"
        if self.groups > 1 or self.random_groups:
            kind = " random" if self.random_groups else ""
            text += f", {self.groups}{kind} group{'s' if self.groups > 1 else ''}"
        return text + (f", n-{self.minus}" if self.minus != 1 else "")


def family_of(values: Mapping[str, Any]) -> Family | None:
    """The whitening a configuration asks for (None for a method outside the family).

    `values` holds config values by flag name (a Config's `to_dict()`, or the partial config
    of a sweep's trial): a preset's own settings win over the flags; whitened_mse takes the
    flags, and `GENERIC_DEFAULTS` for those missing or unset (None).
    """
    method = values.get("method", "w_mse")
    if method not in FAMILY_METHODS:
        return None
    given = {k: v for k, v in values.items() if v is not None}
    if method in PRESETS:
        s = GENERIC_DEFAULTS | given | PRESETS[method]
    else:
        s = GENERIC_DEFAULTS | given
    return Family(
        s["w_matrix"], s["w_axis"], int(s["groups"]), bool(s["w_random_groups"]), int(s["minus"])
    )


def family_problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with a family method's settings, one message per problem naming flags.

    Presets refuse family flags that contradict them (naming whitened_mse instead).
    whitened_mse needs (--w_matrix and --w_axis are checked as choices): --groups dividing
    --emb (1 for bn and none); batch-axis whitening needs --w_size > channels per group (the
    c x c covariance of w_size samples has rank <= w_size - 1), channel-axis whitening needs
    channels per group > --w_size (the w_size x w_size covariance of c centred channels has
    rank <= c - 1); the covariance divisor (count - --minus) positive.
    """
    method = values.get("method", "w_mse")
    if method in PRESETS:
        return _contradictions(method, values)
    if method != "whitened_mse":
        return []
    problems = []
    f = family_of(values)
    emb, w_size = values["emb"], values["w_size"]
    if f.groups < 1 or emb % f.groups:
        return [f"--groups {f.groups} must divide --emb {emb}"]
    per_group = emb // f.groups
    if f.matrix in ("bn", "none"):
        if f.groups > 1:
            problems.append(f"--w_matrix {f.matrix} takes no groups: use --groups 1")
    elif f.axis == "batch" and w_size <= per_group:
        problems.append(
            f"batch whitening needs --w_size > channels per group: --w_size {w_size} <= "
            f"--emb {emb} / --groups {f.groups} = {per_group}; e.g. --w_size {2 * per_group}"
        )
    elif f.axis == "channel" and per_group <= w_size:
        problems.append(
            f"channel whitening needs channels per group > --w_size: --emb {emb} / --groups "
            f"{f.groups} = {per_group} <= --w_size {w_size}; e.g. --emb {2 * w_size * f.groups}"
        )
    count = w_size if f.axis == "batch" else per_group
    if not 0 <= f.minus < count:
        problems.append(f"--minus {f.minus}: the covariance divisor {count} - minus must be > 0")
    return problems


def _contradictions(method: str, values: Mapping[str, Any]) -> list[str]:
    """Family flags set to something other than `method`'s preset and than unset."""
    preset = PRESETS[method]
    wrong = [
        f"--{flag} {values[flag]}"
        for flag in FAMILY_FLAGS
        if flag in values and values[flag] not in (UNSET[flag], preset[flag])
    ]
    if not wrong:
        return []
    flags = [
        f"--{k}" if v is True else f"--{k} {v}"
        for k, v in preset.items()
        if v is not False and v != UNSET.get(k)
    ]
    return [
        f"--method {method} is --method whitened_mse {' '.join(flags)}; {', '.join(wrong)} "
        "contradicts it: use --method whitened_mse for other members of the whitening family"
    ]
