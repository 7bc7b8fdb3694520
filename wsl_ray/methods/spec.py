"""What the rest of the project knows about a method: one `MethodSpec` beside each class.

The config gathers its choices, its method-only fields (`Option`), unset defaults and checks
from the specs, the tables their labels, and `train --help` its list of methods, so a method
is described in its own file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

# The CW-RGP study's methods take its base/cfg.py emb 512 and its base/model.py
# zero_init_residual (its get_model applies it to every method).
CW_RGP_STUDY_DEFAULTS: dict[str, Any] = {"emb": 512, "zero_init_residual": True}


@dataclass(frozen=True)
class Option:
    """A config field that only its method reads, e.g. Contrastive's `tau`: the config gets
    one field and one flag per option, named by the key of the spec's `options`.

    default  its value when not given (None: unset; then `type` names what it takes)
    help     its --help text
    choices  the values it may take (None: any of its type)
    type     its type when the default is None (str, int, float)
    valid    a rule every value must pass, whatever the method, and `rule` says it
    rule     what `valid` asks for, e.g. 'must be > 0'
    bounds   (low, high): the range of a count (of work repeated in every step), checked
             with the config's other bounded fields and shown in --help
    """

    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    type: type | None = None
    valid: Callable[[Any], bool] | None = None
    rule: str = ""
    bounds: tuple[int, int] | None = None

    @property
    def annotation(self) -> str:
        """The field's type as the config's other fields spell it: 'float', 'str | None'."""
        if self.default is None:
            return f"{self.type.__name__} | None"
        return type(self.default).__name__


class MethodConfig(Protocol):
    """What a method reads of a training config (`wsl_ray.config.Config` is one): the
    general fields below, its own options (its spec's `options`) by name, and `to_dict`.
    The methods sit below the config, which is built from their specs, so they name this
    protocol rather than the config class."""

    method: str
    arch: str
    zero_init_residual: bool
    emb: int
    head_layers: int
    head_size: int
    add_bn: bool
    eval_head: bool
    norm: bool
    bs: int
    epoch: int
    seed: int
    w_size: int
    groups: int
    whiten_global: bool
    cov_w: float
    cov_stop: int

    def to_dict(self) -> dict[str, Any]:
        """The config's values by flag name."""
        ...

    def __getattr__(self, name: str) -> Any:
        """A method option (e.g. `tau`) by its name."""
        ...


def no_problems(cfg: MethodConfig, workers: int) -> list[str]:
    """The check of a method without rules of its own."""
    return []


@dataclass(frozen=True)
class MethodSpec:
    """One `--method` value.

    name      the --method value
    label     its name in tables, e.g. 'W-MSE'
    cls       the module that computes its loss (a `base.BaseMethod`, built from a config
              and the image size)
    views     the number of views it takes exactly (None: any k >= 2)
    defaults  the values it gives the fields left unset (emb, groups, zero_init_residual)
    check     its own problems with a config and a number of workers, one message each
    options   the config fields only it reads, by name, e.g. {'tau': Option(0.5, ...)}
    flags     the flags only it (and methods listing them too) may turn on, e.g. whiten_global
    label_views  tables append the number of views, 'W-MSE 4', as the papers name them
    describe  the detail tables add in brackets, from a trial's config values
    """

    name: str
    label: str
    cls: type[nn.Module]
    views: int | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[MethodConfig, int], list[str]] = no_problems
    options: Mapping[str, Option] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    label_views: bool = False
    describe: Callable[[Mapping[str, Any]], str] | None = None

    def table_label(self, config: Mapping[str, Any]) -> str:
        """Its label for a trial whose config values (by flag name) are `config`."""
        name = self.label
        if self.describe is not None:
            name += f" ({self.describe(config | {'method': self.name})})"
        views = config.get("num_samples") or 2  # the default when a sweep did not set it
        return f"{name} {views}" if self.label_views else name
