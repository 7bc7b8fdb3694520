"""The training configuration's fields, their defaults and its error type.

The general fields are here; the fields only one method reads (its spec's `options`) and each
method's defaults for the fields left unset come from its spec (`wsl_ray.methods`). The
fields are a superset of the reference `train.py` flags, with the same names and defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from ..data import DEFAULT_DATASET
from ..data.augment import PRESETS
from ..methods import METHODS, SPECS, get_spec
from ..methods.family import GENERIC_DEFAULTS
from ..methods.spec import MethodSpec

# The methods that take exactly two views.
TWO_VIEW_METHODS = tuple(name for name, spec in SPECS.items() if spec.views == 2)
OPTIMIZERS = ("adam", "adamw", "sgd", "lars")
# Defaults that depend on the method (its spec's `defaults`) or the --aug preset: their fields
# default to None (unset) and are filled wherever a Config is built (flags, config files, search
# spaces, dicts), so an explicit value always wins, even one equal to the general default.
# These are the general ones. The --aug cw_rgp preset (CW-RGP's ImageNet transform.py) greys
# with p 0.2.
UNSET_DEFAULTS: dict[str, Any] = {
    "emb": 64,
    "groups": GENERIC_DEFAULTS["groups"],
    "zero_init_residual": False,
    "gs_p": 0.1,
}


def method_defaults_help(name: str) -> str:
    """The defaults of the unset field `name` for its --help, from the method specs: the
    general one, then each value specs give with the methods that give it, in --method's
    order, e.g. 'default 64; cw_rgp, vicreg: 512; intl: 2048'. Booleans read off and on."""

    def shown(value: Any) -> str:
        return ("on" if value else "off") if isinstance(value, bool) else str(value)

    methods: dict[Any, list[str]] = {}
    for spec in SPECS.values():
        if name in spec.defaults:
            methods.setdefault(spec.defaults[name], []).append(spec.name)
    given = [f"{', '.join(names)}: {shown(value)}" for value, names in methods.items()]
    return "; ".join([f"default {shown(UNSET_DEFAULTS[name])}", *given])


AUG_PRESETS = tuple(PRESETS)
LABEL_FREE_CHOICES = ("spectral", "lidar")  # --label_free
UNSET_AUG_DEFAULTS: dict[str, dict[str, Any]] = {"cw_rgp": {"gs_p": 0.2}, "intl": {"gs_p": 0.2}}


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


def _f(
    default: Any, help: str, bounds: tuple[int, int] | None = None, **argparse_kwargs: Any
) -> Any:
    """A config field: its default, its --help text and argparse's settings in `metadata`.
    `bounds` (low, high): the range validation holds a count to, e.g. of work repeated in
    every step (a typo such as --w_iter 100000000 would otherwise never finish a step); it
    ends the help text and stays in metadata["bounds"]."""
    extra = {"bounds": bounds} if bounds else {}
    return dataclasses.field(
        default_factory=lambda: list(default) if isinstance(default, list) else default,
        metadata={
            "help": f"{help} ({bounds[0]} to {bounds[1]})" if bounds else help,
            **extra,
            **argparse_kwargs,
        },
    )


@dataclass
class GeneralConfig:
    """The fields every method reads; `Config` adds the methods' own."""

    # method and loss
    method: str = _f("w_mse", "loss type", choices=METHODS)
    num_samples: int = _f(2, "number of views generated from each image", bounds=(2, 32))
    emb: int = _f(None, f"embedding size ({method_defaults_help('emb')})", type=int)
    w_size: int = _f(128, "size of the sub-batch whitened together (W-MSE, CW-RGP)")
    w_iter: int = _f(1, "iterations of whitening matrix estimation (W-MSE, CW-RGP)", bounds=(1, 64))
    w_eps: float = _f(0.0, "shrinkage eps of the covariance, for stability")
    groups: int = _f(None, "number of random channel groups (CW-RGP; default 1)", type=int)
    norm: bool = _f(True, "don't normalise latents (for the Euclidean distance)")
    whiten_global: bool = _f(
        False, "with --workers N, whiten sub-batches of all workers' embeddings together"
    )
    # encoder and head
    arch: str = _f("resnet18", "encoder: resnet18|34|50, or resnet18_wN for base width N")
    head_layers: int = _f(2, "number of FC layers in the head", bounds=(1, 16))
    head_size: int = _f(1024, "size of the head's hidden FC layers")
    add_bn: bool = _f(True, "do not use BatchNorm in the head")
    zero_init_residual: bool = _f(
        None,
        "zero-init the last BN of each residual block "
        f"({method_defaults_help('zero_init_residual')})",
    )
    sync_bn: bool = _f(False, "SyncBatchNorm across the DDP workers (GPU workers only)")
    # augmentation
    aug: str = _f(
        "wmse",
        "augmentation preset: the W-MSE, the CW-RGP ImageNet or the INTL pipeline",
        choices=AUG_PRESETS,
    )
    cj0: float = _f(0.4, "color jitter brightness")
    cj1: float = _f(0.4, "color jitter contrast")
    cj2: float = _f(0.4, "color jitter saturation")
    cj3: float = _f(0.1, "color jitter hue")
    cj_p: float = _f(0.8, "color jitter probability")
    gs_p: float = _f(
        None, "grayscale probability (default 0.1; --aug cw_rgp and intl: 0.2)", type=float
    )
    crop_s0: float = _f(0.2, "crop size from")
    crop_s1: float = _f(1.0, "crop size to")
    crop_r0: float = _f(0.75, "crop ratio from")
    crop_r1: float = _f(4 / 3, "crop ratio to")
    hf_p: float = _f(0.5, "horizontal flip probability")
    blur_p: list | None = _f(
        None,
        "Gaussian blur probability, one for all views or one per view (default: 0.5 on "
        "ImageNet-100 and with --aug cw_rgp, else 0)",
        nargs="+",
        type=float,
    )
    solarize_p: list = _f(
        [0.0],
        "solarization probability, one for all views or one per view (INTL: 0 0.2)",
        nargs="+",
        type=float,
    )
    # optimisation
    epoch: int = _f(200, "total number of epochs")
    bs: int = _f(512, "number of original images in a batch (all workers together)")
    lr: float = _f(1e-3, "learning rate")
    adam_l2: float = _f(
        1e-6,
        "weight decay of any --optimizer (an L2 penalty added to the gradient; decoupled from "
        "it with adamw)",
    )
    lr_warmup: bool = _f(True, "no linear learning rate warm-up over the first 500 iterations")
    warmup_epochs: int | None = _f(
        None, "warm up over this many epochs instead of 500 iterations (INTL: 2)", type=int
    )
    lr_step: str = _f(
        "step",
        "learning rate schedule; cos_epoch: cosine to 0 over --epoch, set at each epoch's "
        "start; cos_step: cosine from the warm-up's end to --eta_min, set at every iteration",
        choices=("cos", "step", "none", "cos_epoch", "cos_step"),
    )
    optimizer: str = _f("adam", "optimiser; --adam_l2 is its weight decay", choices=OPTIMIZERS)
    momentum: float = _f(0.9, "momentum of --optimizer sgd and lars")
    lr_per_256: bool = _f(False, "--lr is per 256 images: the optimiser's lr is lr x bs / 256")
    cov_w: float = _f(0.0, "weight of CW-RGP's covariance term (ImageNet recipe)")
    cov_stop: int = _f(50, "epoch from which --cov_w is 0")
    drop: list = _f([50, 25], "epochs before the end at which lr drops", nargs="*", type=int)
    drop_gamma: float = _f(0.2, "multiplicative factor of the lr drop")
    eta_min: float = _f(0.0, "minimum learning rate (--lr_step cos and cos_step)")
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
    label_free: str = _f(
        "spectral",
        "label-free metrics at each evaluation: spectral (RankMe and alpha-ReQ, from the "
        "features k-NN uses) or lidar (also LiDAR, from 50 augmented views of each of 1000 "
        "classifier images: 50,000 more images through the encoder per evaluation)",
        choices=LABEL_FREE_CHOICES,
    )
    # data and run
    dataset: str = _f(DEFAULT_DATASET, "dataset name")
    data_dir: str | None = _f(None, "where the dataset's files are", type=str)
    download: bool = _f(False, "download the dataset (needs a network)")
    subset: int | None = _f(None, "keep at most this many images per role (quick runs)", type=int)
    out: str = _f("runs", "output directory for checkpoints and metrics")
    seed: int = _f(0, "random seed")
    device: str = _f("auto", "cpu, cuda, cuda:N or auto")
    compile: bool = _f(False, "torch.compile the encoder")
    cuda_graph: str = _f(
        "auto",
        "the training step as one CUDA graph: auto (on CUDA where it applies, else eager with "
        "a note), on (refuse to run eagerly), off",
        choices=("auto", "on", "off"),
    )
    ckpt_every: int = _f(10, "save a full checkpoint every this many epochs")
    fname: str | None = _f(None, "load model weights from this checkpoint", type=str)
    wandb: str | None = _f(None, "log to this wandb project (offline unless WANDB_MODE)", type=str)

    def __post_init__(self) -> None:
        """Fills the fields left unset (None); see `fill_unset`. `defaults_applied` keeps
        those its method or --aug preset decided, for `defaults_note`."""
        self.defaults_applied = fill_unset(self)

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


def fill_unset(cfg: Config) -> dict[str, Any]:
    """Gives `cfg`'s unset (None) fields the defaults of its method and --aug preset, else the
    general ones (`UNSET_DEFAULTS`); returns those the method or the preset decided."""
    specific = dict(get_spec(cfg.method).defaults) if cfg.method in SPECS else {}
    specific |= UNSET_AUG_DEFAULTS.get(cfg.aug, {})
    applied = {}
    for name, general in UNSET_DEFAULTS.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, specific.get(name, general))
            if name in specific:
                applied[name] = specific[name]
    return applied


def defaults_note(cfg: Config) -> str | None:
    """The note that tells which method- or preset-specific defaults `fill_unset` gave `cfg`
    (None when it gave none); the commands print it once, for the config they start from."""
    if not cfg.defaults_applied:
        return None
    return f"note: defaults of --method {cfg.method} / --aug {cfg.aug} applied: " + ", ".join(
        f"{k} {v}" for k, v in cfg.defaults_applied.items()
    )


def option_fields(specs: Iterable[MethodSpec]) -> list[tuple[str, str, dataclasses.Field]]:
    """(name, annotation, field) for each option of `specs`, in order; a name that is
    already a field is an error (a field of the same name would silently replace it)."""
    taken = {f.name for f in fields(GeneralConfig)}
    out = []
    for spec in specs:
        for name, option in spec.options.items():
            if name in taken:
                raise TypeError(f"--method {spec.name}: its option {name!r} is already a field")
            taken.add(name)
            extra = {"choices": option.choices} if option.choices else {}
            if option.type is not None:
                extra["type"] = option.type
            if option.bounds is not None:
                extra["bounds"] = option.bounds
            out.append(
                (
                    name,
                    option.annotation,
                    _f(option.default, option.help, method=spec.name, **extra),
                )
            )
    return out


# The general fields, then each method's options in the order of `--method`'s choices.
Config = dataclasses.make_dataclass(
    "Config",
    option_fields(SPECS.values()),
    bases=(GeneralConfig,),
    namespace={  # this module, where pickle looks for Config (make_dataclass(module=) is 3.12+)
        "__module__": __name__,
        "__doc__": "A training configuration: `GeneralConfig` and the methods' options.",
    },
)
