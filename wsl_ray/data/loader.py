"""Batches of uint8 images: index a resident tensor, or stream files through workers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

from .sources import ImageFiles, full_sizes


def iterate_batches(
    images: torch.Tensor | ImageFiles,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    with_sizes: bool = False,
    index: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yields (uint8 [b, C, H, W], int64 [b]) on `device`, one epoch over the images at
    `index` (all of them by default; no copy of the rest is made); with_sizes adds
    int64 [b, 2], each image's (height, width) in the top-left of its [H, W] (the training
    role of ImageFiles keeps whole images of several sizes on a canvas; a tensor's images
    all fill it), which `Augment(x, sizes)` crops from.

    A tensor (on the GPU when it fits, else in CPU memory) is indexed with one shuffled
    permutation per epoch: no per-image Python. Under data parallelism every rank draws the
    same permutation (same generator state) and takes every world_size-th index from
    `rank` on, so the ranks' batches are disjoint. ImageFiles are decoded by DataLoader
    workers (sharded by a DistributedSampler-like slice of the same permutation).

    Every rank gets the same number of images, n // world_size (the permutation's tail is
    dropped), hence the same number of batches: DDP's collectives need every rank to step.
    """
    device = torch.device(device) if device is not None else None
    n = len(images) if index is None else len(index)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order[: n - n % world_size][rank::world_size]
    if index is not None:
        order = index.cpu()[order]
    if isinstance(images, ImageFiles):
        for x, y, sizes in _stream(images, order, batch_size, drop_last, device, num_workers):
            yield (x, y, sizes) if with_sizes else (x, y)
        return
    order = order.to(images.device)
    n = len(order)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x, y = images[idx], labels.to(images.device)[idx]
        x, y = to_device(x, device), to_device(y, device)
        yield (x, y, full_sizes(len(x), *x.shape[-2:], x.device)) if with_sizes else (x, y)


def to_device(x: torch.Tensor, device: torch.device | None) -> torch.Tensor:
    """x on `device` (unchanged when None or already there). A CPU tensor bound for a GPU
    goes through pinned memory with a non-blocking copy; nothing else is ever pinned
    (`pin_memory()` raises on a tensor that is not on the CPU)."""
    if device is None or x.device == device:
        return x
    if x.device.type == "cpu" and device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _stream(images, order, batch_size, drop_last, device, num_workers):
    loader = torch.utils.data.DataLoader(
        images,
        batch_size=batch_size,
        sampler=order.tolist(),
        drop_last=drop_last,
        num_workers=os.cpu_count() if num_workers is None else num_workers,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=False,
    )
    for batch in loader:
        yield tuple(to_device(t, device) for t in batch)
