"""The papers' training settings as named presets: `python -m wsl_ray.train --recipe NAME`.

Each preset is a reference command line, copied literally from the W-MSE README, CW-RGP's
`scripts/base.sh` or its `scripts/ImageNet.sh`, read on top of the defaults of the script
it calls (W-MSE's train.py, CW-RGP's base/cfg.py or ImageNet/cfg.py), so that what the
authors ran and what we run can be compared flag by flag. Flags given with --recipe
override the recipe. `target` is the accuracy the paper or README reports for it.
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
# The reference flags whose names differ from ours, and values that name our datasets.
RENAMED = {"--epochs": "epoch", "--group": "groups", "--weight_decay": "adam_l2"}
DATASET_NAMES = {"imagenet": "imagenet100", "in100": "imagenet100"}  # in W-MSE / base code
IGNORED = {"--md": 0, "--imagenet_path": 1}  # launch flags: number of values they take
# Workers the reference ran on (ImageNet: 4 GPUs, so each whitens 512 / 4 = 128 images)
REFERENCE_WORKERS = {"ImageNet/train.py": 4}


@dataclass(frozen=True)
class Recipe:
    name: str
    source: str  # file the line comes from
    line: str  # the reference command, verbatim (ImageNet.sh's comments and "\" removed)
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
            values[name] = (
                int(value)
                if kind.startswith("int")
                else (float(value) if kind.startswith("float") else value)
            )
            i += 2
        return values

    def config(self) -> Config:
        return Config(**self.values())


def _lines(source: str, prefix: str, entries: list[tuple[str, str, str]]) -> list[Recipe]:
    return [Recipe(f"{prefix}_{name}", source, line, target) for name, line, target in entries]


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
    ]
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown --recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
