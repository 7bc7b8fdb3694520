"""The papers' training settings as named presets: `python -m wsl_ray.train --recipe NAME`.

Each preset is a reference command line, copied literally from the W-MSE README, CW-RGP's
`scripts/base.sh` or its `scripts/ImageNet.sh`, or INTL's `scripts/cifar10.sh`,
`cifar100.sh` and `in100.sh`, read on top of the defaults of the script it calls (W-MSE's
train.py, CW-RGP's base/cfg.py or ImageNet/cfg.py, INTL's cifar/cfg.py or cfg.py), so that
what the authors ran and what we run can be compared flag by flag. Flags given with --recipe
override the recipe. `target` is the accuracy the paper or README reports for it.
LeJEPA's authors publish no CIFAR command line: its recipe is written in our flags from their
ResNet guidance, each value's source named beside the line (`LEJEPA_SOURCES`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from . import Config

# Defaults of the script each line calls, where they differ from ours (our flags keep
# W-MSE train.py's names and defaults).
SCRIPT_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {},  # W-MSE's train.py: our own defaults
    "base/train.py": {"method": "cw_rgp", "eval_every": 10},  # emb 512, group 1: cw_rgp's
    "ImageNet/train.py": {  # CW-RGP ImageNet/cfg.py and train.py
        "method": "cw_rgp",
        "dataset": "imagenet",
        "arch": "resnet50",
        "epoch": 100,
        "bs": 512,
        "lr": 0.05,
        "lr_per_256": True,
        "optimizer": "sgd",
        "momentum": 0.9,
        "adam_l2": 1e-4,
        "lr_step": "cos_epoch",
        "num_samples": 4,
        "head_layers": 3,
        "head_size": 2048,
        "emb": 1024,
        "w_size": 128,
        "groups": 2,
        "aug": "cw_rgp",
        "sync_bn": True,
        "zero_init_residual": True,
    },
}
# INTL's two scripts (cifar/main.py for CIFAR, main.py for ImageNet-100 and -1k): SGD with
# momentum 0.9 at lr x bs / 256, 2 warm-up epochs then a per-iteration cosine to lr / 1000
# (`intl_end_lr`), IterNorm on the channel axis with 4 steps, a 3-layer projector, and
# CifarTransform / ImageNetTransform: a bicubic crop of scale (0.08, 1) first, jitter
# (0.4, 0.4, 0.2, 0.1) p 0.8, grey 0.2, solarization p 0 and 0.2 for the two views.
_INTL = {
    "method": "intl",
    "epoch": 100,
    "bs": 256,
    "lr_per_256": True,
    "optimizer": "sgd",
    "momentum": 0.9,
    "lr_step": "cos_step",
    "warmup_epochs": 2,
    "head_layers": 3,
    "intl_iters": 4,
    "intl_axis": "channel",
    "aug": "intl",
    "cj2": 0.2,
    "gs_p": 0.2,
    "crop_s0": 0.08,
    "solarize_p": [0.0, 0.2],
}
SCRIPT_DEFAULTS["cifar/main.py"] = _INTL | {  # INTL cifar/cfg.py
    "lr": 0.3,
    "adam_l2": 1e-4,
    "head_size": 2048,
    "emb": 2048,
    "eval_every": 5,
}
SCRIPT_DEFAULTS["main.py"] = _INTL | {  # INTL cfg.py; ImageNetTransform blurs p 1.0 and 0.1
    "dataset": "imagenet",
    "arch": "resnet50",
    "lr": 0.5,
    "adam_l2": 1e-5,
    "head_size": 8192,
    "emb": 8192,
    "blur_p": [1.0, 0.1],
}


def intl_end_lr(values: dict[str, Any]) -> dict[str, Any]:
    """INTL's cosine ends at 1 / 1000 of its peak lr x bs / 256: our --eta_min."""
    return {"eta_min": 0.001 * values["lr"] * values["bs"] / 256}


# Values computed from a script's others once a line is read.
SCRIPT_DERIVED = {"cifar/main.py": intl_end_lr, "main.py": intl_end_lr}
# The reference flags whose names differ from ours, and values that name our datasets.
RENAMED = {
    "--epochs": "epoch",
    "--group": "groups",
    "--weight_decay": "adam_l2",
    "--wd": "adam_l2",  # INTL
    "--projection_size": "head_size",
    "--projection_layers": "head_layers",
    "--iters": "intl_iters",
}
DATASET_NAMES = {"imagenet": "imagenet100", "in100": "imagenet100"}  # in W-MSE / base code
# launch flags: number of values they take
IGNORED = {"--md": 0, "--imagenet_path": 1, "--data_path": 1}
# Workers the reference ran on (ImageNet: 4 GPUs, so each whitens 512 / 4 = 128 images)
REFERENCE_WORKERS = {"ImageNet/train.py": 4}


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # file the line comes from
    line: str  # the reference command, verbatim (the scripts' comments and "\" removed)
    target: str  # reported accuracy: "linear / 5-NN" top-1 %, or "" where none is known

    def _words(self) -> tuple[str, list[str]]:
        """(the script, its flags): `python -m train ...` or `python base/train.py ...`."""
        words = shlex.split(self.line)[1:]
        return ("train", words[2:]) if words[0] == "-m" else (words[0], words[1:])

    @property
    def script(self) -> str:
        return self._words()[0]

    @property
    def workers(self) -> int:
        return REFERENCE_WORKERS.get(self.script, 1)

    def values(self) -> dict[str, Any]:
        """Config values: the script's defaults, then the line's flags."""
        script, words = self._words()
        values = dict(SCRIPT_DEFAULTS[script])
        fields = Config.__dataclass_fields__
        i = 0
        while i < len(words):
            flag = words[i]
            if flag in IGNORED:
                i += 1 + IGNORED[flag]
                continue
            name = RENAMED.get(flag, flag.removeprefix("--"))
            kind = fields[name].type
            value = words[i + 1]
            if name == "dataset" and script != "ImageNet/train.py":
                value = DATASET_NAMES.get(value, value)
            if kind.startswith("list"):  # one probability for all views: --solarize_p 0.2
                values[name] = [float(value)]
            else:
                values[name] = (
                    int(value)
                    if kind.startswith("int")
                    else (float(value) if kind.startswith("float") else value)
                )
            i += 2
        return values | SCRIPT_DERIVED.get(script, lambda v: {})(values)

    def config(self) -> Config:
        return Config(**self.values())


def _lines(source: str, prefix: str, entries: list[tuple[str, str, str]]) -> list[Recipe]:
    return [Recipe(f"{prefix}_{name}", source, line, target) for name, line, target in entries]


# Where each value of the lejepa_cifar10 line comes from, in rbalestr-lab/lejepa (at eddffdd):
# README.md's "GOTO hyperparameters" (its ResNet guidance), MINIMAL.md (the authors' complete
# example: ViT-S on Imagenette, launched with +lamb=0.02 +V=4 +proj_dim=16 +lr=2e-3 +bs=256
# +epochs=800) and scripts/ (their sweeps, launched with stable-pretraining's je.py).
LEJEPA_SOURCES = {
    "--optimizer adamw": "README: AdamW for all models and datasets",
    "--lr 5e-4": "README: learning rate 5e-4, a good starting point",
    "--weight_decay 5e-4": "README: weight decay 5e-4 for ResNets (5e-2 for ViTs)",
    "--lr_step cos_step --eta_min 5e-7": "README: linear warm-up, cosine to initial_lr / 1000",
    "--warmup_epochs 1": "MINIMAL.md: warmup_steps = len(train), one epoch",
    "--lejepa_lambda 0.05": "scripts/launch_*_ablation.md: bstat_lambda=0.05 in every "
    "ablation; launch_inet10.py (its timm models under 20M parameters, the ResNets among "
    "them) sweeps 0.01, 0.02, 0.05, 0.1; MINIMAL.md's ViT runs 0.02",
    "--num_samples 4 --bs 256 --epoch 800": "MINIMAL.md: V=4 views, bs 256, 800 epochs",
    "--head_layers 3 --head_size 2048": "MINIMAL.md: MLP(512, [2048, 2048, proj_dim]) with "
    "BatchNorm, as our head",
    "--emb 512": "launch_inet10.py: projector_dim=512 for its ResNets (MINIMAL.md's 16 is "
    "for its ViT)",
    "--aug cw_rgp --crop_s0 0.3 --cj2 0.2 --gs_p 0.2 --solarize_p 0.2": "README's global "
    "views: a crop of scale (0.3, 1) first (bilinear, torchvision's default), jitter "
    "(0.4, 0.4, 0.2, 0.1) p 0.8, grey 0.2, solarization 0.2, flip",
    "--blur_p 0": "ours: no blur at 32 px, as every CIFAR recipe here (README: p 0.5 at 224)",
    "--sigreg_slices 256 --sigreg_points 17 --sigreg_t_max 3": "our defaults: MINIMAL.md's "
    "SIGReg (256 slices, 17 nodes of [0, 3])",
}
LEJEPA_LINE = "python -m train --method lejepa --dataset cifar10 " + " ".join(LEJEPA_SOURCES)
L = "LeJEPA README and MINIMAL.md (see LEJEPA_SOURCES)"
N = "INTL README"  # its table of CIFAR-10, CIFAR-100 and ImageNet-100 results
W = "W-MSE README"
B = "CW-RGP scripts/base.sh"
I = "CW-RGP scripts/ImageNet.sh"  # noqa: E741
# W-MSE paper Table 1 gives the CIFAR-10 numbers; the CW-RGP README the CW-RGP ones.
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        *_lines(
            W,
            "wmse4",
            [
                (
                    "cifar10",
                    "python -m train --dataset cifar10 --epoch 1000 --lr 3e-3 --num_samples 4 --bs 256 --emb 64 --w_size 128",
                    "91.99 / 89.87",
                ),
                (
                    "cifar100",
                    "python -m train --dataset cifar100 --epoch 1000 --lr 3e-3 --num_samples 4 --bs 256 --emb 64 --w_size 128",
                    "",
                ),
                (
                    "stl10",
                    "python -m train --dataset stl10 --epoch 2000 --lr 2e-3 --num_samples 4 --bs 256 --emb 128 --w_size 256",
                    "",
                ),
                (
                    "tiny_in",
                    "python -m train --dataset tiny_in --epoch 1000 --lr 2e-3 --num_samples 4 --bs 256 --emb 128 --w_size 256",
                    "",
                ),
                (
                    "imagenet100",
                    "python -m train --dataset imagenet --epoch 240 --lr 2e-3 --num_samples 4 --bs 256 --emb 128 --w_size 256 --crop_s0 0.08 --cj0 0.8 --cj1 0.8 --cj2 0.8 --cj3 0.2 --gs_p 0.2",
                    "",
                ),
            ],
        ),
        *_lines(
            W,
            "wmse2",
            [
                (
                    "cifar10",
                    "python -m train --dataset cifar10 --epoch 1000 --lr 3e-3 --emb 64 --w_size 128",
                    "91.55 / 89.69",
                ),
                (
                    "cifar100",
                    "python -m train --dataset cifar100 --epoch 1000 --lr 3e-3 --emb 64 --w_size 128",
                    "",
                ),
                (
                    "stl10",
                    "python -m train --dataset stl10 --epoch 2000 --lr 2e-3 --emb 128 --w_size 256 --w_iter 4",
                    "",
                ),
                (
                    "tiny_in",
                    "python -m train --dataset tiny_in --epoch 1000 --lr 2e-3 --emb 128 --w_size 256 --w_iter 4",
                    "",
                ),
                (
                    "imagenet100",
                    "python -m train --dataset imagenet --epoch 240 --lr 2e-3 --emb 128 --w_size 256 --crop_s0 0.08 --cj0 0.8 --cj1 0.8 --cj2 0.8 --cj3 0.2 --gs_p 0.2",
                    "",
                ),
            ],
        ),
        *_lines(
            W,
            "contrastive",
            [
                (
                    "cifar10",
                    "python -m train --dataset cifar10 --epoch 1000 --lr 3e-3 --emb 64 --method contrastive",
                    "",
                ),
                (
                    "cifar100",
                    "python -m train --dataset cifar100 --epoch 1000 --lr 3e-3 --emb 64 --method contrastive",
                    "",
                ),
                (
                    "stl10",
                    "python -m train --dataset stl10 --epoch 2000 --lr 2e-3 --emb 128 --method contrastive",
                    "",
                ),
                (
                    "tiny_in",
                    "python -m train --dataset tiny_in --epoch 1000 --lr 2e-3 --emb 128 --method contrastive",
                    "",
                ),
            ],
        ),
        *_lines(
            W,
            "byol",
            [
                (
                    "cifar10",
                    "python -m train --dataset cifar10 --epoch 1000 --lr 3e-3 --emb 64 --method byol",
                    "",
                ),
                (
                    "cifar100",
                    "python -m train --dataset cifar100 --epoch 1000 --lr 3e-3 --emb 64 --method byol",
                    "",
                ),
                (
                    "stl10",
                    "python -m train --dataset stl10 --epoch 2000 --lr 2e-3 --emb 128 --method byol",
                    "",
                ),
                (
                    "tiny_in",
                    "python -m train --dataset tiny_in --epoch 1000 --lr 2e-3 --emb 128 --method byol",
                    "",
                ),
            ],
        ),
        *_lines(
            B,
            "cwrgp4",
            [
                (
                    "cifar10",
                    "python base/train.py --dataset cifar10 --epochs 1000 --lr 3e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
                    "92.47 / 90.74",
                ),
                (
                    "cifar100",
                    "python base/train.py --dataset cifar100 --epochs 1000 --lr 3e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
                    "68.26 / 58.67",
                ),
                (
                    "stl10",
                    "python base/train.py --dataset stl10 --epochs 2000 --lr 2e-3 --num_samples 4 --bs 256 --w_size 64 --group 4",
                    "92.04 / 88.95",
                ),
                (
                    "tiny_in",
                    "python base/train.py --dataset tiny_in --epochs 1000 --lr 2e-3 --num_samples 4 --bs 256 --emb 1024 --w_size 128 --group 2 --head_size 2048",
                    "50.24 / 35.99",
                ),
            ],
        ),
        *_lines(
            B,
            "cwrgp2",
            [
                (
                    "cifar10",
                    "python base/train.py --dataset cifar10 --epochs 1000 --lr 3e-3 --bs 256 --w_size 64 --group 4 --w_iter 4",
                    "91.92 / 89.54",
                ),
                (
                    "cifar100",
                    "python base/train.py --dataset cifar100 --epochs 1000 --lr 3e-3 --w_size 64 --group 4",
                    "67.51 / 57.35",
                ),
                (
                    "stl10",
                    "python base/train.py --dataset stl10 --epochs 2000 --lr 2e-3 --w_size 64 --group 4",
                    "90.76 / 87.34",
                ),
                (
                    "tiny_in",
                    "python base/train.py --dataset tiny_in --epochs 1000 --lr 2e-3 --emb 1024 --w_size 128 --group 2 --head_size 2048",
                    "49.23 / 34.04",
                ),
            ],
        ),
        *_lines(
            I,
            "cwrgp4_imagenet",
            [
                (
                    "100ep",
                    "python ImageNet/train.py --md --imagenet_path [imagenet] --cov_w 0.005 --cov_stop 50",
                    "69.7 (lincls)",
                ),
                (
                    "200ep",
                    "python ImageNet/train.py --epochs 200 --md --imagenet_path [imagenet] --cov_w 0.01 --cov_stop 100",
                    "71.0 (lincls)",
                ),
            ],
        ),
        *_lines(
            N,
            "intl",
            [
                (
                    "cifar10",
                    "python cifar/main.py --dataset cifar10 --arch resnet18 --projection_size 2048 --epochs 1000 --lr 0.3 --wd 1e-4 --method intl --data_path ./data/",
                    "92.60 / 90.03 (top-5 99.80)",
                ),
                (
                    "cifar100",
                    "python cifar/main.py --dataset cifar100 --arch resnet18 --projection_size 2048 --epochs 1000 --lr 0.3 --wd 1e-4 --method intl --data_path ./data/",
                    "70.88 / 61.90 (top-5 92.13)",
                ),
                (
                    "imagenet100",
                    "python main.py --dataset in100 --arch resnet18 --bs 128 --projection_size 4096 --epochs 400 --lr 0.5 --wd 2.5e-5 --method intl --data_path ./data/IN100/",
                    "81.68 / 73.46 (top-5 95.42)",
                ),
            ],
        ),
        *_lines(L, "lejepa", [("cifar10", LEJEPA_LINE, "")]),
    ]
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown --recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
