"""Encoders (ResNets with the small-image stem), the projection head, and the BatchNorm
that lets one call carry several views."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torchvision import models
from torchvision.models.resnet import BasicBlock

ARCHS = ("resnet18", "resnet34", "resnet50")
# Narrow ResNets for CPU tests and the embedded demo: "resnet18_w16" is a ResNet-18 whose
# stages have 16, 32, 64, 128 channels instead of 64, 128, 256, 512.
NARROW = re.compile(r"^resnet(18|34)_w(\d+)$")
BLOCKS = {"18": [2, 2, 2, 2], "34": [3, 4, 6, 3]}


def check_arch(arch: str) -> None:
    """Raises ValueError with the accepted names when `arch` is not one."""
    narrow = NARROW.match(arch)
    if arch not in ARCHS and (not narrow or int(narrow.group(2)) < 1):
        raise ValueError(
            f"unknown --arch {arch!r}: use one of {', '.join(ARCHS)}, or resnet18_wN / "
            "resnet34_wN for a narrow ResNet of base width N >= 1 (e.g. resnet18_w16)"
        )


class ViewBatchNorm:
    """BatchNorm over a batch that holds `views` views of the same images, view-major
    ([views * bs, ...], rows v*bs .. (v+1)*bs - 1 are view v), as if each view were its own
    batch: in training mode each view is normalised with its own mean and variance, and the
    running statistics take the views one after another, exactly as `views` separate calls
    (r <- (1-m)^V r + sum_v m (1-m)^(V-1-v) s_v, num_batches_tracked += V). The reference
    code calls its encoder once per view; one call on all views runs each convolution once.
    In eval mode, or with `views` 1, it is plain BatchNorm. `views` is set by
    `view_statistics` around a call; the parameters, buffers and state-dict keys are those
    of the nn.BatchNorm class it extends."""

    views = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.views == 1:
            return super().forward(x)
        return torch.cat([super(ViewBatchNorm, self).forward(v) for v in x.chunk(self.views)])


class ViewBatchNorm1d(ViewBatchNorm, nn.BatchNorm1d):
    """nn.BatchNorm1d that can normalise several views per call (`ViewBatchNorm`)."""


class ViewBatchNorm2d(ViewBatchNorm, nn.BatchNorm2d):
    """nn.BatchNorm2d that can normalise several views per call (`ViewBatchNorm`)."""


def views_in_one_call(module: nn.Module) -> bool:
    """Whether `module` may take several views in one call: not once --sync_bn has made its
    BatchNorm layers SyncBatchNorm, whose statistics cannot be split by view."""
    return not any(isinstance(m, nn.SyncBatchNorm) for m in module.modules())


@contextmanager
def view_statistics(module: nn.Module, views: int) -> Iterator[None]:
    """Within the block, every `ViewBatchNorm` of `module` takes batches of `views` views."""
    layers = [m for m in module.modules() if isinstance(m, ViewBatchNorm)]
    for layer in layers:
        layer.views = views
    try:
        yield
    finally:
        for layer in layers:
            layer.views = 1


class NarrowResNet(models.ResNet):
    """torchvision's ResNet with base width `width` (64 in the standard nets)."""

    def __init__(self, layers: list[int], width: int, zero_init_residual: bool = False):
        super().__init__(
            BasicBlock, layers, zero_init_residual=zero_init_residual, norm_layer=ViewBatchNorm2d
        )
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = ViewBatchNorm2d(width)
        self.layer1 = self._make_layer(BasicBlock, width, layers[0])
        self.layer2 = self._make_layer(BasicBlock, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, 8 * width, layers[3], stride=2)
        self.fc = nn.Linear(8 * width, 1000)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """The same initialisation as torchvision's ResNet, for the rebuilt layers."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)


def get_encoder(
    arch: str, image_size: int, zero_init_residual: bool = False
) -> tuple[nn.Module, int]:
    """A ResNet encoder without its classifier, adapted to the image size as the reference is.

    image_size <= 32 (CIFAR): 3x3 stride-1 conv1 and no maxpool;
    image_size <= 96 (STL-10 and Tiny ImageNet at 64): 3x3 stride-1 conv1, maxpool kept;
    larger (ImageNet-100 at 224): the standard 7x7 stride-2 stem.
    Its BatchNorm layers are `ViewBatchNorm2d`, so one call can carry several views.
    Returns (encoder mapping [B, 3, H, W] -> [B, out_size], out_size).
    """
    check_arch(arch)
    narrow = NARROW.match(arch)
    if narrow:
        depth, width = narrow.groups()
        model = NarrowResNet(BLOCKS[depth], int(width), zero_init_residual)
    else:
        model = getattr(models, arch)(
            weights=None, zero_init_residual=zero_init_residual, norm_layer=ViewBatchNorm2d
        )
    if image_size <= 96:
        # PyTorch's default init (Kaiming-uniform, a = sqrt(5)), as the reference leaves it
        model.conv1 = nn.Conv2d(
            3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False
        )
    if image_size <= 32:
        model.maxpool = nn.Identity()
    out_size = model.fc.in_features
    model.fc = nn.Identity()
    return model, out_size


class Float32Linear(nn.Linear):
    """A Linear layer that computes in float32 even under bf16 autocast.

    The head's last layer feeds the whitening, which amplifies rounding in low-variance
    directions: a bf16 embedding moves the whitened output by 0.3-2% at condition numbers
    1e1-1e4. The layer costs nothing next to the encoder, so it runs in float32, as all of
    the reference code does. Its parameters and state-dict keys are those of nn.Linear.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))


def get_head(
    in_size: int, emb: int, head_layers: int = 2, head_size: int = 1024, add_bn: bool = True
) -> nn.Sequential:
    """Projection head: (head_layers - 1) x [Linear -> BN -> ReLU], then Linear(emb) in
    float32 (`Float32Linear`); its BN is `ViewBatchNorm1d`, per view where asked."""
    layers: list[nn.Module] = []
    for _ in range(head_layers - 1):
        layers.append(nn.Linear(in_size, head_size))
        if add_bn:
            layers.append(ViewBatchNorm1d(head_size))
        layers.append(nn.ReLU(inplace=True))
        in_size = head_size
    layers.append(Float32Linear(in_size, emb))
    return nn.Sequential(*layers)
