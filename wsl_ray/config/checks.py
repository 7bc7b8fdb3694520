"""The value rules of a Config: `validate_config` lists every broken one, naming the flag."""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Any

from ..data import dataset_spec
from ..methods import SPECS, get_spec
from ..methods.networks import check_arch
from .schema import SYNC_BN_NEEDS_GPUS, Config, ConfigError

MAX_SEED = 2**53  # seed * 1000 + rank (the augmentation's generator) stays below 2**63


def validate_config(cfg: Config, workers: int = 1, gpus: float | None = None) -> None:
    """Raises ConfigError for a configuration that cannot train, naming the flag to change.
    `gpus` is each worker's GPU share where known (--sync_bn needs one); None: not known yet.

    First, every value must have its field's type and lie in its range (the ranges the
    relations below divide by are checked before them); then the general relations, the
    method's own check (its spec's: e.g. W-MSE's rank condition w_size > emb, CW-RGP's group
    sizes), its number of views, and the flags only some methods take.
    """
    check = _Checker()
    for f in fields(cfg):
        problem = _type_problem(f.type, getattr(cfg, f.name))
        check(problem is None, f"--{f.name} {getattr(cfg, f.name)!r}: must be {problem}")
    check.raise_if_any()
    for name in (
        "epoch",
        "knn",
        "eval_every",
        "eval_every_drop",
        "ckpt_every",
        "w_size",
        "head_size",
        "Tmult",
    ):
        check(getattr(cfg, name) >= 1, f"--{name} {getattr(cfg, name)}: must be 1 or more")
    for f in fields(cfg):  # counts of work repeated in every step: --help gives the range
        if bounds := f.metadata.get("bounds"):
            value = getattr(cfg, f.name)
            check(
                bounds[0] <= value <= bounds[1],
                f"--{f.name} {value}: must be in [{bounds[0]}, {bounds[1]}]",
            )
    for name in ("subset", "T0", "warmup_epochs"):
        value = getattr(cfg, name)
        check(value is None or value >= 1, f"--{name} {value}: must be 1 or more (or unset)")
    check(cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr {cfg.lr}: must be a number > 0")
    check(
        0 <= cfg.seed < MAX_SEED,
        f"--seed {cfg.seed}: must be in [0, 2**53) (runs derive further seeds from it)",
    )
    for name in ("cj_p", "gs_p", "hf_p"):
        value = getattr(cfg, name)
        check(0 <= value <= 1, f"--{name} {value}: must be in [0, 1]")
    for name in ("cj0", "cj1", "cj2", "adam_l2", "eta_min", "drop_gamma"):
        check(getattr(cfg, name) >= 0, f"--{name} {getattr(cfg, name)}: must be 0 or more")
    for name in ("blur_p", "solarize_p"):
        value = getattr(cfg, name)
        check(
            value is None or (bool(value) and all(0 <= v <= 1 for v in value)),
            f"--{name} {value}: probabilities must be in [0, 1]",
        )
        check(
            value is None or len(value) in (1, cfg.num_samples),
            f"--{name} {value}: give one probability, or one per view "
            f"(--num_samples {cfg.num_samples})",
        )
    check(0 <= cfg.cj3 <= 0.5, f"--cj3 {cfg.cj3}: hue jitter must be in [0, 0.5]")
    check(
        0 < cfg.crop_s0 <= cfg.crop_s1 <= 1,
        f"--crop_s0 {cfg.crop_s0} --crop_s1 {cfg.crop_s1}: need 0 < crop_s0 <= crop_s1 <= 1",
    )
    check(
        0 < cfg.crop_r0 <= cfg.crop_r1,
        f"--crop_r0 {cfg.crop_r0} --crop_r1 {cfg.crop_r1}: need 0 < crop_r0 <= crop_r1",
    )
    check(0 <= cfg.w_eps < 1, f"--w_eps {cfg.w_eps}: must be in [0, 1)")
    check(0 <= cfg.momentum < 1, f"--momentum {cfg.momentum}: must be in [0, 1)")
    for spec in SPECS.values():
        for name, option in spec.options.items():
            value = getattr(cfg, name)
            valid = option.valid is None or option.valid(value)
            check(valid, f"--{name} {value}: {option.rule}")
    check(
        all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in cfg.drop),
        f"--drop {cfg.drop}: epochs must be integers, 0 or more",
    )
    for f in fields(cfg):
        value, choices = getattr(cfg, f.name), f.metadata.get("choices") or ()
        unset = value is None and f.default_factory() is None  # the method's preset decides
        check(
            not choices or unset or value in choices,
            f"--{f.name} {value!r}: one of {', '.join(choices)}",
        )
    check(
        cfg.device == "auto" or re.fullmatch(r"cpu|cuda(:\d+)?|mps", cfg.device) is not None,
        f"--device {cfg.device!r}: use auto, cpu, cuda or cuda:N",
    )
    check(
        cfg.cuda_graph != "on" or cfg.device.startswith("cuda"),
        f"--cuda_graph on needs --device cuda (not {cfg.device}); or use --cuda_graph auto",
    )
    check.raise_if_any()
    check(cfg.bs >= workers, f"--bs {cfg.bs} is smaller than the {workers} workers")
    check(cfg.emb >= 1 and cfg.bs >= 2, "--emb and --bs must be positive (--bs at least 2)")
    check(
        0 < cfg.val_size < 1 or (cfg.val_size >= 1 and float(cfg.val_size).is_integer()),
        f"--val_size {cfg.val_size}: give a fraction in (0, 1) or a whole number of images",
    )
    for known, name in ((check_arch, cfg.arch), (dataset_spec, cfg.dataset)):
        try:
            known(name)
        except ValueError as err:
            check(False, str(err))
    spec = get_spec(cfg.method)
    for problem in spec.check(cfg, workers):
        check(False, problem)
    check(
        spec.views is None or cfg.num_samples == spec.views,
        f"--method {cfg.method} takes exactly {spec.views} views: use --num_samples {spec.views}",
    )
    for flag in dict.fromkeys(f for s in SPECS.values() for f in s.flags):
        owners = [name for name, s in SPECS.items() if flag in s.flags]
        check(
            not getattr(cfg, flag) or cfg.method in owners,
            f"--{flag} is for --method {' or '.join(owners)}",
        )
    check(gpus is None or not cfg.sync_bn or gpus > 0, SYNC_BN_NEEDS_GPUS)
    check.raise_if_any()


def check_data_fit(cfg: Config, data: Any) -> None:
    """Raises ConfigError when the loaded data (an ImageData, after --subset) cannot serve
    `cfg`: k-NN needs at least --knn classifier images to vote (the classifier set minus the
    validation split with --eval_on val). Called once the data is loaded, before training."""
    fit = len(data.clf_y)
    if cfg.eval_on == "val":
        fit = len(data.val_indices()[0])
    if cfg.knn > fit:
        raise ConfigError(
            f"invalid configuration: --knn {cfg.knn} is more than the {fit} classifier images "
            f"the k-NN votes among ({cfg.dataset}, --subset {cfg.subset}, --eval_on "
            f"{cfg.eval_on}); lower --knn or use more images",
            [f"--knn {cfg.knn}"],
        )


def type_problem(name: str, value: Any) -> str | None:
    """For the training flag `name`: None when `value` has its type, else the message
    `--name value: must be ...` (e.g. for `--set emb=abc`, before any other check)."""
    field = {f.name: f for f in fields(Config)}.get(name)
    problem = _type_problem(field.type, value) if field else None
    return f"--{name} {value!r}: must be {problem}" if problem else None


_TYPES = {
    "int": (int, "an integer"),
    "float": ((int, float), "a number"),
    "str": (str, "a string"),
    "bool": (bool, "true or false"),
    "list": (list, "a list"),
}


def _type_problem(annotation: str, value: Any) -> str | None:
    """None when `value` fits the field annotation ('int', 'float', 'str | None', ...);
    otherwise what it must be. Booleans are not numbers here."""
    names = [t.strip() for t in str(annotation).split("|")]
    if value is None and "None" in names:
        return None
    wanted = [_TYPES[n] for n in names if n in _TYPES]
    for types, _ in wanted:
        if isinstance(value, types) and (types is bool or not isinstance(value, bool)):
            if not (isinstance(value, float) and math.isnan(value)):
                return None
    return " or ".join(what for _, what in wanted) + (" (or unset)" if "None" in names else "")


class _Checker:
    """Collects every failed check so that one error lists everything to change."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def raise_if_any(self) -> None:
        if len(self.problems) == 1:
            raise ConfigError(f"invalid configuration: {self.problems[0]}", self.problems)
        if self.problems:
            raise ConfigError(
                "invalid configuration:\n  - " + "\n  - ".join(self.problems), self.problems
            )
