"""`shapes`: the embedded default dataset, generated in seconds and needing no files.

Ten classes, each a distinct shape (circle, square, triangle, plus, ring, star, crescent,
bar, dumbbell, half-disc), drawn at 32x32 with random position, scale and rotation (by a
right angle), a random noise texture on the shape, two small grey clutter blobs and pixel
noise.
Raw pixels are a poor feature for k-NN; an encoder must learn shape.

Every nuisance is either low in entropy or destroyed by the augmentations: what two views
of one image share beyond their class is what self-supervised learning learns. With
colours drawn freely, or stripes of random frequency and angle, or clutter in random
colours, or any rotation angle, an encoder matches views by that instance identity instead
of shape (k-NN accuracy does not rise while the loss falls to 0.1). So the colours come
from 3 shape colours x 3 backgrounds shared by every class, rotations are right angles,
and the texture is fine noise that random crops resample away.
"""

from __future__ import annotations

import math

import torch

CLASSES = (
    "circle", "square", "triangle", "plus", "ring",
    "star", "crescent", "bar", "dumbbell", "half_disc",
)  # fmt: skip
SHAPE_COLOURS = torch.tensor([[0.85, 0.2, 0.2], [0.2, 0.65, 0.25], [0.2, 0.35, 0.9]])
BACKGROUNDS = torch.tensor([[0.15, 0.15, 0.15], [0.8, 0.8, 0.8], [0.9, 0.8, 0.35]])


def _star(u, v, r):
    return r < 0.55 + 0.45 * torch.cos(5 * torch.atan2(v, u)).clamp(min=0) ** 2


# Membership of shape-local points (u, v), r = |(u, v)|, in each class's shape.
SHAPES = (
    lambda u, v, r: r < 0.9,
    lambda u, v, r: torch.maximum(u.abs(), v.abs()) < 0.75,
    lambda u, v, r: (v > -0.5) & (v < 0.9 - 1.6 * u.abs()),
    lambda u, v, r: ((u.abs() < 0.28) & (v.abs() < 0.95)) | ((v.abs() < 0.28) & (u.abs() < 0.95)),
    lambda u, v, r: (r < 0.95) & (r > 0.55),
    _star,
    lambda u, v, r: (r < 0.9) & ((u - 0.45) ** 2 + v**2 > 0.55**2),
    lambda u, v, r: (u.abs() < 0.95) & (v.abs() < 0.3),
    lambda u, v, r: ((u - 0.55) ** 2 + v**2 < 0.16) | ((u + 0.55) ** 2 + v**2 < 0.16),
    lambda u, v, r: (r < 0.95) & (v > 0),
)
assert len(SHAPES) == len(CLASSES)


def _inside(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Whether the points (u, v) [N, S, S] lie in the shape of each image's class."""
    mask = torch.zeros(u.shape, dtype=torch.bool)
    for cls, shape in enumerate(SHAPES):
        idx = labels == cls
        ui, vi = u[idx], v[idx]
        mask[idx] = shape(ui, vi, torch.sqrt(ui**2 + vi**2))
    return mask


def render(labels: torch.Tensor, generator: torch.Generator, size: int = 32) -> torch.Tensor:
    """Draws one image per label: uint8 [N, 3, size, size], anti-aliased by 2x supersampling."""
    n, s = len(labels), 2 * size

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator)

    scale = 0.4 + 0.3 * rand(n)  # shape radius, as a fraction of the half-width
    centre = (rand(n, 2) * 2 - 1) * (1 - scale[:, None])  # the shape stays inside the image
    angle = torch.randint(4, (n,), generator=generator) * (math.pi / 2)  # right angles only
    grid = (torch.arange(s) + 0.5) / s * 2 - 1
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    dx = gx[None] - centre[:, 0, None, None]
    dy = gy[None] - centre[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    sc = scale[:, None, None]
    u, v = (cos * dx + sin * dy) / sc, (-sin * dx + cos * dy) / sc
    mask = _inside(labels, u, v).float()[:, None]  # [N, 1, s, s]

    def pick(colours: torch.Tensor) -> torch.Tensor:
        return colours[torch.randint(len(colours), (n,), generator=generator)][:, :, None, None]

    fg, bg = pick(SHAPE_COLOURS), pick(BACKGROUNDS)
    phase = rand(n, 1, 1, 1) * 2 * math.pi  # stripes of one frequency and angle
    texture = 1 + 0.2 * torch.sin(6 * math.pi * (gx + gy) + phase)
    image = mask * fg * texture + (1 - mask) * bg
    for _ in range(2):  # small grey clutter blobs, moved around by random crops
        pos = rand(n, 2, 1, 1) * 2 - 1
        radius = 0.06 + 0.06 * rand(n, 1, 1)
        blob = ((gx - pos[:, 0]) ** 2 + (gy - pos[:, 1]) ** 2 < radius**2).float()[:, None]
        image = blob * 0.5 + (1 - blob) * image
    image = torch.nn.functional.avg_pool2d(image, 2)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def generate(
    num_train: int = 10_000, num_test: int = 2_000, seed: int = 0, size: int = 32
) -> dict[str, torch.Tensor]:
    """Balanced classes (label = index % 10), deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for role, count in (("train", num_train), ("test", num_test)):
        labels = torch.arange(count) % len(CLASSES)
        labels = labels[torch.randperm(count, generator=generator)]
        images = torch.cat([render(chunk, generator, size) for chunk in labels.split(2_000)])
        out[f"{role}_x"], out[f"{role}_y"] = images, labels
    return out
