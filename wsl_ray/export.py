"""`python -m wsl_ray.export CKPT --out backbone.pt`: a checkpoint's encoder, alone.

`--format torchvision` (default) writes the encoder's state dict with torch.save; it loads
with strict=True into torchvision.models.resnet18/34/50 after the same changes as training
made (see `torchvision_backbone`). A sidecar JSON beside it (`backbone.json` for
`backbone.pt`) records arch, stem, image size, normalisation and feature size.
`--format safetensors` writes the same tensors with that record in the file's metadata.
The narrow resnetNN_wM encoders have no torchvision twin and are refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torchvision import models

from .config import Config
from .data import DATASETS, load_dataset
from .methods.networks import ARCHS, NARROW
from .training.checkpoint import read_checkpoint
from .training.weights import encoder_state
from .utils.cli import Parser, command_name
from .utils.paths import writable_folder


class ExportError(ValueError):
    """A checkpoint that cannot be exported as asked; the message says why."""


def stem(image_size: int) -> dict[str, Any]:
    """The encoder's first layers for `image_size` (as networks.get_encoder builds them)."""
    small = image_size <= 96
    return {
        "conv1": "3x3 stride 1" if small else "7x7 stride 2",
        "maxpool": image_size > 32,
    }


def torchvision_backbone(arch: str, image_size: int) -> nn.Module:
    """torchvision's `arch` changed as training changed it: the state dict of an export
    loads into it with strict=True. Maps [B, 3, H, W] to [B, features]."""
    net = getattr(models, arch)()
    if image_size <= 96:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, 3, stride=1, padding=1, bias=False)
    if image_size <= 32:
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def describe(cfg: Config, features: int) -> dict[str, Any]:
    """What a user of the backbone needs: arch, stem, input size and normalisation."""
    spec = DATASETS[cfg.dataset]
    mean, std = spec.mean, spec.std
    if mean is None:  # computed from the training images, as training did
        data = load_dataset(cfg.dataset, cfg.data_dir)
        mean, std = data.mean, data.std
    return {
        "arch": cfg.arch,
        "image_size": spec.crop_size,
        "stem": stem(spec.crop_size),
        "normalize": {"mean": list(mean), "std": list(std), "input": "RGB in [0, 1]"},
        "features": features,
        "method": cfg.method,
        "dataset": cfg.dataset,
    }


def export(ckpt: str | Path, out: str | Path, fmt: str = "torchvision") -> dict[str, Any]:
    """Writes the encoder of checkpoint `ckpt` to `out`; returns the recorded description.

    Raises ExportError for a narrow encoder or a checkpoint without a config, CheckpointError
    for a missing, corrupt or refused file.
    """
    payload = read_checkpoint(ckpt, flag="checkpoint")
    if "config" not in payload:
        raise ExportError(f"{ckpt} holds no config: export needs a wsl_ray checkpoint")
    cfg = Config.from_dict(payload["config"])
    if NARROW.match(cfg.arch) or cfg.arch not in ARCHS:
        raise ExportError(
            f"--arch {cfg.arch} has no torchvision twin: only {', '.join(ARCHS)} encoders can "
            "be exported (load a narrow encoder with wsl_ray.methods.networks.get_encoder instead)"
        )
    state = encoder_state(payload)
    last_bn = max(k for k in state if k.startswith("layer4.") and k.endswith(".weight"))
    info = describe(cfg, features=len(state[last_bn]))  # the last block's last BN
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(out), metadata={k: json.dumps(v) for k, v in info.items()})
    else:
        torch.save(state, out)
        out.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


FORMATS = ("torchvision", "safetensors")
SUFFIXES = {".safetensors": "safetensors", ".pt": "torchvision", ".pth": "torchvision"}


def output_format(out: str, fmt: str | None) -> str:
    """The format to write `out` in: `fmt`, else the one its suffix names (torchvision for
    others). Raises ValueError, before any work, for a suffix of the other format (a torch
    pickle named .safetensors), an --out that is a folder, or a folder that cannot be
    created or written."""
    if not out.strip():
        raise ValueError(f"--out {out!r}: give the file to write, e.g. backbone.pt")
    named = SUFFIXES.get(Path(out).suffix)
    if fmt and named and fmt != named:
        wanted = next(suffix for suffix, f in SUFFIXES.items() if f == fmt)
        raise ValueError(
            f"--out {out} names a {named} file, not --format {fmt}; end it in {wanted}"
        )
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a folder; give the file to write, e.g. {out}/b.pt")
    writable_folder(Path(out).parent, "--out's folder")
    return fmt or named or "torchvision"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog=command_name("wsl_ray.export"),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("ckpt", help="checkpoint.pt, or the folder that holds it")
    parser.add_argument("--out", required=True, help="where to write the backbone")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="default: from --out's suffix (.safetensors: safetensors; else torchvision)",
    )
    args = parser.parse_args(argv)
    try:
        args.format = output_format(args.out, args.format)
        info = export(args.ckpt, args.out, args.format)
    except (ValueError, OSError) as err:  # ExportError, CheckpointError, an unwritable --out
        print(f"error: {err}", file=sys.stderr)
        return 2
    where = "its metadata" if args.format == "safetensors" else Path(args.out).with_suffix(".json")
    print(
        f"wrote the {info['arch']} encoder ({info['features']} features) to {args.out}; "
        f"arch, stem and normalisation in {where}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
