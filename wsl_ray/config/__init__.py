"""One training configuration: its fields, its command-line flags and its validation.

The fields are a superset of the reference `train.py` flags, with the same names and
defaults; the argparse parser is generated from the dataclass, so the two cannot drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import warnings
from dataclasses import dataclass, fields
from typing import Any

from ..methods.family import AXES, GENERIC_DEFAULTS, MATRICES, family_problems
from ..training.models import check_arch

METHODS = (
    "w_mse",
    "cw_rgp",
    "contrastive",
    "byol",
    "whitened_mse",
    "barlow_twins",
    "vicreg",
    "simsiam",
    "zero_icl",
)
WHITENING_METHODS = ("w_mse", "cw_rgp", "whitened_mse")
TWO_VIEW_METHODS = ("barlow_twins", "vicreg", "simsiam", "zero_icl")
OPTIMIZERS = ("adam", "sgd", "lars")
# Defaults that depend on the method or the --aug preset: their fields default to None (unset)
# and are filled wherever a Config is built (flags, config files, search spaces, dicts), so an
# explicit value always wins, even one equal to the general default. CW-RGP's are those of its
# code's base/cfg.py (emb 512, group 1, w_size 128) and base/model.py (zero_init_residual, which
# its get_model applies to every method); the other methods of the CW-RGP study take its
# base/cfg.py emb 512 (its bs 512 and lr 1e-3 are everyone's defaults) and zero_init_residual.
# W-MSE, Contrastive and BYOL follow the W-MSE code (no zero-init). The --aug cw_rgp preset
# (CW-RGP's ImageNet transform.py) greys with p 0.2.
UNSET_DEFAULTS: dict[str, Any] = {
    "emb": 64,
    "groups": GENERIC_DEFAULTS["groups"],
    "zero_init_residual": False,
    "gs_p": 0.1,
}
UNSET_METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "cw_rgp": {"emb": 512, "groups": 1, "zero_init_residual": True},
    "whitened_mse": {"zero_init_residual": True},
    **{m: {"emb": 512, "zero_init_residual": True} for m in TWO_VIEW_METHODS},
}
AUG_PRESETS = ("wmse", "cw_rgp")
UNSET_AUG_DEFAULTS: dict[str, dict[str, Any]] = {"cw_rgp": {"gs_p": 0.2}}
_notes_printed: set[str] = set()


SYNC_BN_NEEDS_GPUS = (
    "--sync_bn needs GPU workers (SyncBatchNorm refuses CPU tensors): give each worker a GPU "
    "(train: --workers N on a machine with CUDA or --gpus-per-worker G; tune: --gpus-per-trial "
    "G), or drop --sync_bn"
)


class ConfigError(ValueError):
    """An invalid configuration; the message names the flag and a value that works.
    `problems` lists each failed check (one line each)."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def _f(default: Any, help: str, **argparse_kwargs: Any) -> Any:
    return dataclasses.field(
        default_factory=lambda: list(default) if isinstance(default, list) else default,
        metadata={"help": help, **argparse_kwargs},
    )


@dataclass
class Config:
    # method and loss
    method: str = _f("w_mse", "loss type", choices=METHODS)
    num_samples: int = _f(2, "number of views generated from each image")
    emb: int = _f(
        None,
        "embedding size (default 64; cw_rgp, barlow_twins, vicreg, simsiam, zero_icl: 512)",
        type=int,
    )
    w_size: int = _f(128, "size of the sub-batch whitened together (W-MSE, CW-RGP)")
    w_iter: int = _f(1, "iterations of whitening matrix estimation (W-MSE, CW-RGP)")
    w_eps: float = _f(0.0, "shrinkage eps of the covariance, for stability")
    groups: int = _f(None, "number of random channel groups (CW-RGP; default 1)", type=int)
    tau: float = _f(0.5, "contrastive loss temperature")
    byol_tau: float = _f(0.99, "starting EMA rate of BYOL's target network")
    norm: bool = _f(True, "don't normalise latents (for the Euclidean distance)")
    # the whitening family (whitened_mse; the presets w_mse and cw_rgp fix these) and others
    w_matrix: str | None = _f(
        None, "whitening matrix (whitened_mse; default cholesky)", type=str, choices=MATRICES
    )
    w_axis: str | None = _f(
        None,
        "whiten over the batch (W-MSE) or the channels (CW-RGP) (whitened_mse; default batch)",
        type=str,
        choices=AXES,
    )
    w_random_groups: bool = _f(False, "redraw the channel groups at every call (whitened_mse)")
    minus: int = _f(1, "the covariance divisor is count - minus (whitened_mse)")
    whiten_global: bool = _f(
        False, "with --workers N, whiten sub-batches of all workers' embeddings together"
    )
    global_negatives: bool = _f(False, "with --workers N, Contrastive negatives of all workers")
    barlow_lambda: float = _f(0.008, "Barlow Twins: weight of the off-diagonal terms")
    barlow_scale: str = _f(
        "emb",
        "Barlow Twins: divide the cross-correlation by the embedding size (the CW-RGP "
        "code, affine BN) or by the batch size (the paper, BN without affine)",
        choices=("emb", "batch"),
    )
    vicreg_sim: float = _f(25.0, "VICReg: weight of the invariance term")
    vicreg_var: float = _f(25.0, "VICReg: weight of the variance term")
    vicreg_cov: float = _f(1.0, "VICReg: weight of the covariance term")
    # encoder and head
    arch: str = _f("resnet18", "encoder: resnet18|34|50, or resnet18_wN for base width N")
    head_layers: int = _f(2, "number of FC layers in the head")
    head_size: int = _f(1024, "size of the head's hidden FC layers")
    add_bn: bool = _f(True, "do not use BatchNorm in the head")
    zero_init_residual: bool = _f(
        None,
        "zero-init the last BN of each residual block (default: on for the CW-RGP study's "
        "methods: cw_rgp, whitened_mse, barlow_twins, vicreg, simsiam, zero_icl)",
    )
    sync_bn: bool = _f(False, "SyncBatchNorm across the DDP workers (GPU workers only)")
    # augmentation
    aug: str = _f(
        "wmse",
        "augmentation preset: the W-MSE or the CW-RGP ImageNet pipeline",
        choices=AUG_PRESETS,
    )
    cj0: float = _f(0.4, "color jitter brightness")
    cj1: float = _f(0.4, "color jitter contrast")
    cj2: float = _f(0.4, "color jitter saturation")
    cj3: float = _f(0.1, "color jitter hue")
    cj_p: float = _f(0.8, "color jitter probability")
    gs_p: float = _f(None, "grayscale probability (default 0.1; --aug cw_rgp: 0.2)", type=float)
    crop_s0: float = _f(0.2, "crop size from")
    crop_s1: float = _f(1.0, "crop size to")
    crop_r0: float = _f(0.75, "crop ratio from")
    crop_r1: float = _f(4 / 3, "crop ratio to")
    hf_p: float = _f(0.5, "horizontal flip probability")
    # optimisation
    epoch: int = _f(200, "total number of epochs")
    bs: int = _f(512, "number of original images in a batch (all workers together)")
    lr: float = _f(1e-3, "learning rate")
    adam_l2: float = _f(1e-6, "weight decay (L2 penalty added to the gradient) of any --optimizer")
    lr_warmup: bool = _f(True, "no linear learning rate warm-up over the first 500 iterations")
    lr_step: str = _f(
        "step",
        "learning rate schedule; cos_epoch: cosine to 0 over --epoch, set at each epoch's start",
        choices=("cos", "step", "none", "cos_epoch"),
    )
    optimizer: str = _f("adam", "optimiser; --adam_l2 is its weight decay", choices=OPTIMIZERS)
    momentum: float = _f(0.9, "momentum of --optimizer sgd and lars")
    lr_per_256: bool = _f(False, "--lr is per 256 images: the optimiser's lr is lr x bs / 256")
    cov_w: float = _f(0.0, "weight of CW-RGP's covariance term (ImageNet recipe)")
    cov_stop: int = _f(50, "epoch from which --cov_w is 0")
    drop: list = _f([50, 25], "epochs before the end at which lr drops", nargs="*", type=int)
    drop_gamma: float = _f(0.2, "multiplicative factor of the lr drop")
    eta_min: float = _f(0.0, "minimum learning rate (--lr_step cos)")
    T0: int | None = _f(None, "period in epochs (--lr_step cos); default: --epoch", type=int)
    Tmult: int = _f(1, "period factor (--lr_step cos)")
    # evaluation
    knn: int = _f(5, "k of the k-NN classifier")
    knn_metric: str = _f("euclidean", "k-NN distance", choices=("euclidean", "cosine"))
    eval_every: int = _f(20, "evaluate every this many epochs")
    eval_every_drop: int = _f(5, "evaluate every this many epochs after the first lr drop")
    eval_head: bool = _f(False, "evaluate the head's output instead of the encoder's")
    eval_init: bool = _f(False, "also evaluate the untrained encoder: the baseline to beat")
    eval_on: str = _f(
        "test",
        "val: fit on clf minus val, score val (test once at the end); test: as the papers",
        choices=("val", "test"),
    )
    val_size: float = _f(0.1, "validation part of the classifier set: a fraction, or a count")
    # data and run
    dataset: str = _f("cifar10", "dataset name")
    data_dir: str | None = _f(None, "where the dataset's files are", type=str)
    download: bool = _f(False, "download the dataset (needs a network)")
    subset: int | None = _f(None, "keep at most this many images per role (quick runs)", type=int)
    out: str = _f("runs", "output directory for checkpoints and metrics")
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    compile: bool = _f(False, "torch.compile the encoder")
    ckpt_every: int = _f(10, "save a full checkpoint every this many epochs")
    fname: str | None = _f(None, "load model weights from this checkpoint", type=str)
    wandb: str | None = _f(None, "log to this wandb project (offline unless WANDB_MODE)", type=str)

    def __post_init__(self) -> None:
        """Fills the fields left unset (None) with the method's or the --aug preset's
        defaults, else the general ones, and prints once per process which method- or
        preset-specific defaults were applied."""
        specific = UNSET_METHOD_DEFAULTS.get(self.method, {}) | UNSET_AUG_DEFAULTS.get(self.aug, {})
        applied = {}
        for name, general in UNSET_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, specific.get(name, general))
                if name in specific:
                    applied[name] = specific[name]
        if applied:
            note = f"note: defaults of --method {self.method} / --aug {self.aug} applied: "
            note += ", ".join(f"{k} {v}" for k, v in applied.items())
            if note not in _notes_printed:
                _notes_printed.add(note)
                print(note, file=sys.stderr)

    @property
    def num_pairs(self) -> int:
        return self.num_samples * (self.num_samples - 1) // 2

    @property
    def eval_options(self) -> dict[str, Any]:
        """The keyword arguments of `evaluate.evaluate` that the flags set."""
        return {"knn": self.knn, "knn_metric": self.knn_metric, "seed": self.seed}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Builds a config from a (possibly partial) dict; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known: {sorted(names)}")
        return cls(**values)


def add_config_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds one flag per Config field. Booleans that default to True get `--no_<name>`."""
    for f in fields(Config):
        meta = dict(f.metadata)
        help_text = meta.pop("help")
        default = f.default_factory()
        if f.type == "bool" and default is None:  # unset: the method decides
            parser.add_argument(
                f"--{f.name}",
                dest=f.name,
                action="store_const",
                const=True,
                default=None,
                help=help_text,
            )
            parser.add_argument(
                f"--no_{f.name}",
                dest=f.name,
                action="store_const",
                const=False,
                help=f"turn off --{f.name}",
            )
            continue
        if isinstance(default, bool):
            flag, action = (
                (f"--no_{f.name}", "store_false")
                if default
                else (
                    f"--{f.name}",
                    "store_true",
                )
            )
            parser.add_argument(flag, dest=f.name, action=action, help=help_text)
            continue
        meta.setdefault("type", type(default))
        parser.add_argument(f"--{f.name}", default=default, help=help_text, **meta)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config part of parsed arguments (other flags of the command are ignored)."""
    return Config(**{f.name: getattr(args, f.name) for f in fields(Config)})


def validate_config(cfg: Config, workers: int = 1, gpus: float | None = None) -> None:
    """Raises ConfigError for a configuration that cannot train, naming the flag to change.
    `gpus` is each worker's GPU share where known (--sync_bn needs one); None: not known yet.

    Checks the batch split into whitening sub-batches (per worker under DDP), the
    W-MSE rank condition w_size > emb, CW-RGP's group sizes, and the number of views.
    Warns when w_size < 2 emb, below which the W-MSE authors saw unstable training.
    First, every value must have its field's type and lie in its range (the ranges the
    relations below divide by are checked before them).
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
        "w_iter",
        "head_layers",
        "head_size",
        "Tmult",
    ):
        check(getattr(cfg, name) >= 1, f"--{name} {getattr(cfg, name)}: must be 1 or more")
    for name in ("subset", "T0"):
        value = getattr(cfg, name)
        check(value is None or value >= 1, f"--{name} {value}: must be 1 or more (or unset)")
    check(cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr {cfg.lr}: must be a number > 0")
    for name in ("cj_p", "gs_p", "hf_p", "byol_tau"):
        value = getattr(cfg, name)
        check(0 <= value <= 1, f"--{name} {value}: must be in [0, 1]")
    for name in ("cj0", "cj1", "cj2", "adam_l2", "eta_min", "drop_gamma"):
        check(getattr(cfg, name) >= 0, f"--{name} {getattr(cfg, name)}: must be 0 or more")
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
    check(cfg.tau > 0, f"--tau {cfg.tau}: must be > 0")
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
    check.raise_if_any()
    check(cfg.num_samples >= 2, f"--num_samples {cfg.num_samples}: need 2 or more views")
    check(cfg.bs >= workers, f"--bs {cfg.bs} is smaller than the {workers} workers")
    check(cfg.emb >= 1 and cfg.bs >= 2, "--emb and --bs must be positive (--bs at least 2)")
    check(
        0 < cfg.val_size < 1 or (cfg.val_size >= 1 and float(cfg.val_size).is_integer()),
        f"--val_size {cfg.val_size}: give a fraction in (0, 1) or a whole number of images",
    )
    try:
        check_arch(cfg.arch)
    except ValueError as err:
        check(False, str(err))
    local_bs = cfg.bs // max(workers, 1)
    w_batch = cfg.bs if cfg.whiten_global else local_bs  # the batch split into sub-batches
    if cfg.method in WHITENING_METHODS:
        above = cfg.emb if cfg.method == "w_mse" else 1
        where = "the batch" if cfg.whiten_global else "the per-worker batch"
        check(
            cfg.bs % workers == 0 and w_batch % cfg.w_size == 0,
            f"--w_size {cfg.w_size} must divide {where} {w_batch} (--bs "
            f"{cfg.bs} / {workers} worker(s)); e.g. --w_size "
            f"{_nearest_divisor(w_batch, cfg.w_size, above)}",
        )
    if cfg.method == "w_mse":
        check(
            cfg.w_size > cfg.emb,
            f"--w_size {cfg.w_size} must exceed --emb {cfg.emb}, or the sub-batch covariance "
            f"is singular; e.g. --w_size {2 * cfg.emb} or --emb {max(cfg.w_size // 2, 1)}",
        )
        if cfg.emb < cfg.w_size < 2 * cfg.emb:
            warnings.warn(
                f"--w_size {cfg.w_size} < 2 x --emb {cfg.emb}: the W-MSE authors advise "
                f"w_size >= 2 emb for stable whitening (e.g. --w_size {2 * cfg.emb})",
                UserWarning,
                stacklevel=2,
            )
    if cfg.method == "cw_rgp":
        fitting = [
            g for g in range(1, cfg.emb + 1) if cfg.emb % g == 0 and cfg.emb // g > cfg.w_size
        ]
        hint = f"--groups {max(fitting)}" if fitting else f"--emb {2 * cfg.w_size * cfg.groups}"
        check(
            cfg.groups >= 1 and cfg.emb % cfg.groups == 0,
            f"--groups {cfg.groups} must divide --emb {cfg.emb}; e.g. {hint}",
        )
        per_group = cfg.emb // max(cfg.groups, 1)
        check(
            per_group > cfg.w_size,
            f"CW-RGP needs more channels per group than --w_size: --emb {cfg.emb} / --groups "
            f"{cfg.groups} = {per_group} <= --w_size {cfg.w_size}; e.g. {hint}",
        )
    for problem in _method_problems(cfg, workers):
        check(False, problem)
    check(gpus is None or not cfg.sync_bn or gpus > 0, SYNC_BN_NEEDS_GPUS)
    check.raise_if_any()


def _method_problems(cfg: Config, workers: int) -> list[str]:
    """Checks of the whitening family and the methods of the CW-RGP study."""
    problems = family_problems(cfg.to_dict())
    if cfg.method in TWO_VIEW_METHODS and cfg.num_samples != 2:
        problems.append(f"--method {cfg.method} takes exactly 2 views: use --num_samples 2")
    for flag, methods in (
        ("whiten_global", WHITENING_METHODS),
        ("global_negatives", ("contrastive",)),
    ):
        if getattr(cfg, flag) and cfg.method not in methods:
            problems.append(f"--{flag} is for --method {' or '.join(methods)}")
    if cfg.global_negatives and cfg.bs % workers:
        problems.append(f"--global_negatives needs --bs {cfg.bs} divisible by {workers} workers")
    return problems


def _nearest_divisor(n: int, target: int, above: int = 0) -> int:
    """The divisor of n nearest to target among those > above (n itself if none)."""
    candidates = [d for d in range(above + 1, n + 1) if n % d == 0] or [n]
    return min(candidates, key=lambda d: (abs(d - target), d))


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
