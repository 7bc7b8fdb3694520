"""A checkpoint's encoder, frozen: the features that linear classification trains on."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..methods.networks import get_encoder
from .weights import encoder_state


class FrozenEncoder(nn.Module):
    """An encoder in eval mode whose `embed` gives features without gradients."""

    def __init__(self, encoder: nn.Module, out_size: int):
        super().__init__()
        self.encoder, self.embed_size = encoder.requires_grad_(False).eval(), out_size

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)  # BatchNorm statistics never change

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def load_encoder(payload: dict[str, Any], arch: str, image_size: int) -> FrozenEncoder:
    """The `arch` encoder for `image_size` with the read checkpoint's encoder weights
    (`weights.encoder_state`); a ValueError when they do not fit it."""
    encoder, out_size = get_encoder(arch, image_size)
    weights = encoder_state(payload)
    result = encoder.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys or not weights:
        raise ValueError(
            f"the checkpoint's encoder does not fit --arch {arch}: missing "
            f"{result.missing_keys[:4]}, unexpected {result.unexpected_keys[:4]}"
        )
    return FrozenEncoder(encoder, out_size)
