"""Views/s of the batched augmentation against the reference's PIL pipeline.

The reference is the W-MSE code's torchvision transforms on PIL images in a DataLoader
using every core; ours is `wsl_ray.data.Augment` on whole batches (eager and compiled),
on the CPU and, where there is one, on the GPU. Same images, same flags.

    python -m benchmarks.bench_augment [--dataset shapes] [--images 8192] [--bs 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import append_results
from wsl_ray.data import Augment, load_dataset
from wsl_ray.training.device import resolve_device
from wsl_ray.utils.markdown import markdown_table as table


class PILViews(Dataset):
    """The reference: uint8 images as PIL, each turned into `k` augmented views."""

    def __init__(self, x: torch.Tensor, transform, k: int):
        self.x, self.transform, self.k = x.permute(0, 2, 3, 1).numpy(), transform, k

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        image = Image.fromarray(self.x[i])
        return tuple(self.transform(image) for _ in range(self.k))


def reference_views_per_s(x, size, mean, std, k, bs) -> float:
    transform = T.Compose(
        [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.1),
            T.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=3),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    loader = DataLoader(
        PILViews(x, transform, k), batch_size=bs, num_workers=os.cpu_count(), drop_last=True
    )
    next(iter(loader))  # start the workers before the clock
    start, views = time.perf_counter(), 0
    for batch in loader:
        views += k * len(batch[0])
    return views / (time.perf_counter() - start)


def ours_views_per_s(x, size, mean, std, k, bs, device, compile) -> float:
    aug = Augment(size, mean, std, num_samples=k, compile=compile, device=device)
    x = x.to(device)
    batches = x[: len(x) - len(x) % bs].split(bs)
    aug(batches[0])  # warm-up (and compilation)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for batch in batches:
        aug(batch)
    sync()
    return k * bs * len(batches) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--bs", type=int, default=512)
    parser.add_argument("--num_samples", type=int, default=2)
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, args.data_dir)
    x, k, size = data.train_x[: args.images], args.num_samples, data.crop_size
    gpu = [resolve_device("cuda")] if torch.cuda.is_available() else []
    devices = [torch.device("cpu"), *gpu]
    ours = {  # measured before the reference, whose worker processes would compete
        (device.type, compile): ours_views_per_s(
            x, size, data.mean, data.std, k, args.bs, device, compile
        )
        for device in devices
        for compile in (False, True)
    }
    ref = reference_views_per_s(x, size, data.mean, data.std, k, args.bs)
    rows = [["reference (PIL, DataLoader)", f"cpu x{os.cpu_count()}", f"{ref:,.0f}", "1.0x"]]
    for (device, compile), v in ours.items():
        name = f"wsl_ray Augment ({'compiled' if compile else 'eager'})"
        rows.append([name, device, f"{v:,.0f}", f"{v / ref:.1f}x"])
    body = (
        f"{args.dataset}, {len(x)} images of {size}x{size}, {k} views, batch {args.bs}\n\n"
        + table(["pipeline", "device", "views/s", "vs reference"], rows)
    )
    command = " ".join(["python -m benchmarks.bench_augment", *sys.argv[1:]])
    append_results("Augmentation throughput", devices[-1], body, command)


if __name__ == "__main__":
    main()
