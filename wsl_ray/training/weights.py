"""Model weights from a checkpoint: ours, or the reference code's (W-MSE, CW-RGP).

Accepted layouts: a bare state dict; `{'model': state_dict, ...}` (ours); and
`{'state_dict': state_dict, ...}` (CW-RGP's ImageNet code). The reference wraps its
encoders in (Distributed)DataParallel, so its keys hold `module.` at the front
(`module.model.conv1.weight`) or in the middle (`model.module.conv1.weight`,
`model_t.module.*`); every `module` part of a key path is dropped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

ENCODER_PREFIX = "model."  # BaseMethod.model is the encoder; the head and targets are not


def state_dict_of(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint, with `module.` parts removed from keys."""
    for key in ("model", "state_dict"):
        if isinstance(payload.get(key), dict):
            payload = payload[key]
            break
    weights = {}
    for key, value in payload.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"the checkpoint's entry {key!r} is not a tensor: expected a state dict, "
                "{'model': state_dict} or {'state_dict': state_dict}"
            )
        weights[".".join(p for p in key.split(".") if p != "module")] = value
    return weights


def encoder_state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a read checkpoint (ours, W-MSE's or CW-RGP's): the keys
    under `model.` without that prefix, detached, on the CPU and contiguous. A classifier's
    `model.fc.` keys are left out: the encoder's fc is an identity (networks.get_encoder)."""
    return {
        k[len(ENCODER_PREFIX) :]: v.detach().cpu().contiguous()
        for k, v in state_dict_of(payload).items()
        if k.startswith(ENCODER_PREFIX) and not k.startswith(f"{ENCODER_PREFIX}fc.")
    }


@dataclass
class LoadReport:
    """Keys of the model the checkpoint lacked, and keys of the checkpoint the model lacks."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.missing and not self.unexpected:
            return "all weights matched"
        parts = []
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                more = f", ... ({len(keys)} in all)" if len(keys) > 8 else ""
                shown = ", ".join(keys[:8]) + more
                parts.append(f"{name} keys: {shown}")
        return "; ".join(parts)


def load_weights(
    model: torch.nn.Module, payload: dict[str, Any], verbose: bool = True
) -> LoadReport:
    """Loads what matches into `model` and reports the rest (printed when verbose).

    Raises ValueError when no key matches (not a checkpoint of this kind of model) or when
    a matching key has another shape.
    """
    weights = state_dict_of(payload)
    own = model.state_dict()
    common = [k for k in weights if k in own]
    if not common:
        raise ValueError(
            f"no weight of the checkpoint matches the model (checkpoint keys such as "
            f"{sorted(weights)[:3]}; model keys such as {sorted(own)[:3]})"
        )
    wrong = [k for k in common if weights[k].shape != own[k].shape]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{len(wrong)} weight(s) have another shape, e.g. {k}: checkpoint "
            f"{tuple(weights[k].shape)}, model {tuple(own[k].shape)}; check --arch, --emb, "
            "--head_size and --head_layers"
        )
    result = model.load_state_dict(weights, strict=False)
    report = LoadReport(sorted(result.missing_keys), sorted(result.unexpected_keys))
    if verbose:
        print(f"loaded {len(common)} weights: {report}", file=sys.stderr)
    return report
