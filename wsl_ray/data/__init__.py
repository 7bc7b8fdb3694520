"""Datasets as uint8 tensors for the three roles of the reference code.

`load_dataset(name)` returns an ImageData with
    train_x, train_y   self-supervised training (labels only for bookkeeping)
    clf_x, clf_y       classifier training for evaluation
    validation         a stratified part of the classifier set (`val_indices`)
    test_x, test_y     testing
as uint8 [N, C, H, W] and int64 [N], plus the normalisation constants, the number of
classes and the crop size of the augmented views. ImageNet and ImageNet-100 are streamed:
their image fields are `ImageFiles` datasets that decode on access, the training images
whole (at most 500 px on the longer side) on a canvas, with their sizes, so that the random
resized crops come from the whole image as in the reference.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.atomic import atomic_save, remove_stale_tmp
from . import shapes, sources
from .augment import Augment
from .checks import DataError, check_roles
from .loader import iterate_batches
from .sources import ImageFiles

Images = torch.Tensor | ImageFiles
VAL_SEED = 20240229  # the validation split's own seed: every run, whatever --seed, scores the
# same validation images


def stratified_split(labels: torch.Tensor, size: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, val) index tensors that partition range(len(labels)), val stratified by label.

    `size` < 1 is a fraction of the images, >= 1 a number of images. The total
    V = round(size * N) (or size) is shared out over the classes in proportion to their
    counts n_c by largest remainder (V n_c / N, floors first, then the largest fractional
    parts), and each class's share is drawn with the fixed VAL_SEED. Both index lists are
    sorted.
    """
    n = len(labels)
    total = round(size * n) if size < 1 else int(size)
    if not 0 < total < n:
        raise ValueError(
            f"--val_size {size} gives {total} validation images out of {n} classifier "
            "images; use a fraction in (0, 1) or a count between 1 and N - 1"
        )
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * total / n
    share = exact.floor().long()
    by_remainder = torch.argsort(exact - share, descending=True, stable=True)
    share[by_remainder[: total - int(share.sum())]] += 1
    gen = torch.Generator().manual_seed(VAL_SEED)
    val = []
    for c, k in zip(classes.tolist(), share.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        val.append(members[torch.randperm(len(members), generator=gen)[:k]])
    val_idx = torch.cat(val).sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep).flatten(), val_idx


def take(images: Images, index: torch.Tensor) -> Images:
    """The images at `index`: a tensor gather, or a file list for streamed data."""
    if isinstance(images, ImageFiles):
        return images.select(index)
    return images[index.to(images.device)]


@dataclass
class ImageData:
    name: str
    train_x: Images
    train_y: torch.Tensor
    clf_x: Images
    clf_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    crop_size: int  # side of the training views and evaluation images the encoder sees
    blur: bool = False  # the reference adds Gaussian blur for ImageNet-100
    val_size: float = 0.1  # the validation part of the classifier set: fraction or count

    def val_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(fit, val): indices into the classifier set of its fitting and validation parts."""
        return stratified_split(self.clf_y.cpu(), self.val_size)

    def val_split(self) -> tuple[Images, torch.Tensor, Images, torch.Tensor]:
        """(fit_x, fit_y, val_x, val_y): the classifier set minus validation, and validation
        (copies of the images; evaluation iterates over `val_indices` instead)."""
        fit, val = self.val_indices()
        labels = self.clf_y
        return (
            take(self.clf_x, fit),
            labels[fit.to(labels.device)],
            take(self.clf_x, val),
            labels[val.to(labels.device)],
        )

    def subset(self, n: int | None) -> ImageData:
        """The first n images of each role (all of them for n=None); in-memory data only."""
        if n is None:
            return self
        roles = ("train_x", "train_y", "clf_x", "clf_y", "test_x", "test_y")
        return dataclasses.replace(self, **{r: getattr(self, r)[:n] for r in roles})

    def summary(self) -> str:
        size = "x".join(str(s) for s in self.train_x.shape[1:])
        if isinstance(self.train_x, ImageFiles) and self.train_x.max_side is not None:
            size = f"at most {self.train_x.max_side} px (whole, on a {size} canvas)"
        return (
            f"{self.name}: {len(self.train_x)} train / {len(self.clf_x)} clf / "
            f"{len(self.test_x)} test images of {size}, {self.num_classes} classes"
        )


@dataclass(frozen=True)
class DatasetSpec:
    read: Callable[..., dict]
    default_dir: str
    mean: tuple[float, float, float] | None  # None: computed from the training images
    std: tuple[float, float, float] | None
    num_classes: int
    crop_size: int
    download: Callable[[Path], None] | None = None
    cache: bool = False  # decoded tensors are cached (folders of JPEGs, generated data)
    version: int = 1  # part of the cache key: bump when the reader or generator changes


def _torchvision_download(cls_name: str, **kwargs) -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        getattr(tvd, cls_name)(root=str(root), download=True, **kwargs)

    return download


def _read_stl10(root: Path) -> dict:
    """SSL on train + unlabeled; evaluation images resized to 70 and centre-cropped to 64."""
    raw = sources.read_stl10(root)
    return dict(
        train_x=torch.cat([raw["train_x"], raw["unlabeled_x"]]),
        train_y=torch.cat([raw["train_y"], torch.full((len(raw["unlabeled_x"]),), -1)]),
        clf_x=sources.resize_center_crop(raw["train_x"], 70, 64),
        clf_y=raw["train_y"],
        test_x=sources.resize_center_crop(raw["test_x"], 70, 64),
        test_y=raw["test_y"],
        files=raw["files"],
    )


def _read_shapes(root: Path, num_train: int = 10_000, num_test: int = 2_000, seed: int = 0):
    return shapes.generate(num_train, num_test, seed)


DEFAULT_DATASET = "cifar10"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        lambda root: sources.read_cifar(root, 10),
        "data",
        (0.4914, 0.4822, 0.4465),
        (0.2023, 0.1994, 0.2010),
        10,
        32,
        _torchvision_download("CIFAR10"),
    ),
    "cifar100": DatasetSpec(
        lambda root: sources.read_cifar(root, 100),
        "data",
        (0.5071, 0.4867, 0.4408),
        (0.2675, 0.2565, 0.2761),
        100,
        32,
        _torchvision_download("CIFAR100"),
    ),
    "stl10": DatasetSpec(
        _read_stl10,
        "data",
        (0.43, 0.42, 0.39),
        (0.27, 0.26, 0.27),
        10,
        64,
        _torchvision_download("STL10", split="train"),
    ),
    "tiny_in": DatasetSpec(
        sources.read_tiny_imagenet,
        "data",
        (0.480, 0.448, 0.398),
        (0.277, 0.269, 0.282),
        200,
        64,
        cache=True,
    ),
    "imagenet100": DatasetSpec(
        sources.read_imagenet100, "data/imagenet", IMAGENET_MEAN, IMAGENET_STD, 100, 224
    ),
    "imagenet": DatasetSpec(
        sources.read_imagenet, "data/imagenet", IMAGENET_MEAN, IMAGENET_STD, 1000, 224
    ),
    "fashion_mnist": DatasetSpec(
        sources.read_fashion_mnist,
        "/usr/share/datasets/fashion-mnist",
        None,
        None,
        10,
        28,
        _torchvision_download("FashionMNIST"),
    ),
    "shapes": DatasetSpec(_read_shapes, "", None, None, 10, 32, cache=True, version=8),
}


def cache_dir() -> Path:
    """Where decoded and generated datasets are cached: $WSL_RAY_CACHE or ~/.cache/wsl_ray."""
    return Path(os.environ.get("WSL_RAY_CACHE", Path.home() / ".cache" / "wsl_ray"))


def _cached(key: str, build: Callable[[], dict]) -> dict:
    path = cache_dir() / f"{key}.pt"
    if path.parent.is_dir():
        remove_stale_tmp(path.parent)  # of writers that were killed; live ones are kept
    if path.exists():
        return torch.load(path, weights_only=True)
    data = build()
    atomic_save(data, path)  # concurrent trials never read a half-written file
    return data


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    sample = x[:10_000].float() / 255
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3))
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of the dataset `name`; ValueError listing the names for an unknown one."""
    if name not in DATASETS:
        raise ValueError(f"unknown --dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    val_size: float = 0.1,
    **options,
) -> ImageData:
    """Reads (or generates) a dataset. `val_size` sets the validation part of the classifier
    set (see `stratified_split`); `options` go to the reader (shapes: num_train,
    num_test, seed). Raises ValueError for an unknown name, FileNotFoundError, naming
    the path and how to get the data, for missing files, and DataError (a ValueError),
    naming the file, for contents that do not fit the roles (wsl_ray.data.checks)."""
    spec = dataset_spec(name)
    root = Path(data_dir if data_dir is not None else spec.default_dir).expanduser()
    if download:
        if spec.download is None:
            raise ValueError(f"--download is not supported for {name}; get its files by hand")
        spec.download(root)
    if spec.cache:
        opts = "-".join(f"{k}{v}" for k, v in sorted(options.items()))
        where = str(root.resolve()).strip("/").replace("/", "_") if name != "shapes" else ""
        key = f"{name}-v{spec.version}-{where}-{opts}".strip("-")
        raw = _cached(key, lambda: spec.read(root, **options))
    else:
        raw = spec.read(root, **options)
    raw.setdefault("clf_x", raw["train_x"])
    raw.setdefault("clf_y", raw["train_y"])
    where = str(root) if spec.default_dir or data_dir else f"the generated {name} data"
    check_roles(name, raw, spec.num_classes, spec.crop_size, where)
    mean, std = (spec.mean, spec.std) if spec.mean else _channel_stats(raw["train_x"])
    return ImageData(
        name=name,
        **{k: raw[k] for k in ("train_x", "train_y", "clf_x", "clf_y", "test_x", "test_y")},
        mean=mean,
        std=std,
        num_classes=spec.num_classes,
        crop_size=spec.crop_size,
        blur=name in ("imagenet100", "imagenet"),
        val_size=val_size,
    )


__all__ = [
    "Augment",
    "DATASETS",
    "DataError",
    "dataset_spec",
    "ImageData",
    "ImageFiles",
    "iterate_batches",
    "load_dataset",
    "stratified_split",
    "take",
]
