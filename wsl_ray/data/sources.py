"""Readers for the datasets' files as distributed, into uint8 tensors [N, C, H, W].

No reader goes through PIL: pickles and binaries are reshaped, JPEG/PNG files are
decoded by torchvision.io. Each raises FileNotFoundError naming the path it looked for.
ImageNet is too large for that: its readers return `ImageFiles`, decoded per item, whose
training role keeps each whole image (bounded, aspect ratio kept) on a fixed canvas.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import ImageReadMode, decode_image

from .checks import DataError, labels_problem

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def missing(what: str, path: Path, how: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found: looked for {path}. {how} Point --data_dir at the folder that "
        "holds it, or pass --download on a machine with a network where supported."
    )


def _require(path: Path, what: str, how: str) -> Path:
    if not path.exists():
        raise missing(what, path, how)
    return path


# The only globals that genuine CIFAR pickles name: numpy's array reconstructor (module
# numpy.core in files written by numpy 1, numpy._core by numpy 2), the array and dtype types.
PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _DataUnpickler(pickle.Unpickler):
    """An Unpickler that builds only numpy arrays and plain containers: a data file that
    names any other global (os.system, builtins.eval, ...) is refused before it runs."""

    def find_class(self, module: str, name: str):
        if (module, name) not in PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: a dataset file may hold only numpy arrays"
            )
        if name == "_reconstruct":  # from this numpy's own module, without numpy.core's warning
            core = getattr(np, "_core", None) or np.core
            return core.multiarray._reconstruct
        return getattr(np, name)


def read_pickle(path: Path):
    """A data pickle (latin1 strings, as Python 2 wrote CIFAR), through `_DataUnpickler`."""
    with open(path, "rb") as f:
        return _DataUnpickler(f, encoding="latin1").load()


def read_cifar(root: Path, num_classes: int) -> dict[str, torch.Tensor]:
    """CIFAR-10/100 python pickles: `cifar-10-batches-py/` or `cifar-100-python/`."""
    if num_classes == 10:
        folder, train_files, test_files, key = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            ["test_batch"],
            "labels",
        )
    else:
        folder, train_files, test_files, key = (
            "cifar-100-python",
            ["train"],
            ["test"],
            ("fine_labels"),
        )
    how = f"Extract the 'python version' archive of CIFAR-{num_classes} there."
    base = _require(root / folder, f"CIFAR-{num_classes}", how)

    def load(files: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in files:
            path = _require(base / name, f"CIFAR-{num_classes} batch", how)
            try:
                batch = read_pickle(path)
                xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[key], dtype=np.int64).reshape(-1))
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{path} is not a CIFAR-{num_classes} batch ({type(err).__name__}: {err}). "
                    f"{how}"
                ) from None
            if problem := labels_problem(torch.from_numpy(ys[-1]), len(xs[-1]), num_classes):
                raise DataError(f"{path}: this CIFAR-{num_classes} batch {problem}. {how}")
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = load(train_files)
    test_x, test_y = load(test_files)
    train = ", ".join(str(base / f) for f in train_files)
    files = {"train": train, "clf": train, "test": ", ".join(str(base / f) for f in test_files)}
    return dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, files=files)


def read_stl10(root: Path) -> dict[str, torch.Tensor]:
    """STL-10 binaries in `stl10_binary/`: images stored column-major, labels 1..10."""
    how = "Extract the STL-10 binary archive (stl10_binary.tar.gz) there."
    base = _require(root / "stl10_binary", "STL-10", how)

    def images(name: str) -> torch.Tensor:
        path = _require(base / f"{name}_X.bin", "STL-10 images", how)
        raw = np.fromfile(path, np.uint8)
        if raw.size == 0 or raw.size % (3 * 96 * 96):
            raise ValueError(
                f"{path} is not an STL-10 image file: {raw.size} bytes is not a whole number "
                f"of 3x96x96 images. {how}"
            )
        return torch.from_numpy(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2).copy())

    def labels(name: str) -> torch.Tensor:
        raw = np.fromfile(_require(base / f"{name}_y.bin", "STL-10 labels", how), np.uint8)
        return torch.from_numpy(raw.astype(np.int64) - 1)

    return dict(
        unlabeled_x=images("unlabeled"),
        train_x=images("train"),
        train_y=labels("train"),
        test_x=images("test"),
        test_y=labels("test"),
        files={
            "train": f"{base}/train_X.bin, train_y.bin, unlabeled_X.bin",
            "clf": f"{base}/train_X.bin, train_y.bin",
            "test": f"{base}/test_X.bin, test_y.bin",
        },
    )


def resize_center_crop(images: torch.Tensor, resize: int, crop: int) -> torch.Tensor:
    """Shorter side to `resize` (bicubic, antialiased), then the central crop x crop."""
    resized = TF.resize(images, resize, TF.InterpolationMode.BICUBIC, antialias=True)
    return TF.center_crop(resized, crop)


def decode_files(paths: Sequence[Path]) -> torch.Tensor:
    """Decodes image files of one size to uint8 RGB [N, 3, H, W]."""
    return torch.stack([decode_rgb(path) for path in paths])


def decode_rgb(path: Path) -> torch.Tensor:
    """One image file as uint8 RGB [3, H, W]."""
    return decode_image(str(path), mode=ImageReadMode.RGB)


def fit_within(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """image [C, H, W] scaled down (bicubic, antialiased) so that its longer side is
    max_side, the aspect ratio kept (each side rounded, at least 1); unchanged when it
    already fits: never upscaled."""
    height, width = image.shape[-2:]
    longer = max(height, width)
    if longer <= max_side:
        return image
    size = [max(1, round(height * max_side / longer)), max(1, round(width * max_side / longer))]
    return TF.resize(image, size, TF.InterpolationMode.BICUBIC, antialias=True)


def on_canvas(image: torch.Tensor, side: int) -> torch.Tensor:
    """image [C, h, w] (h, w <= side) top-left in a zero [C, side, side] of its dtype."""
    canvas = image.new_zeros(image.shape[0], side, side)
    canvas[:, : image.shape[1], : image.shape[2]] = image
    return canvas


def full_sizes(n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """int64 [n, 2] rows (height, width), made on `device` by fills (no host-to-device copy,
    so no wait for a GPU)."""
    sizes = torch.full((n, 2), height, dtype=torch.int64, device=device)
    sizes[:, 1] = width
    return sizes


def read_tiny_imagenet(root: Path) -> dict[str, torch.Tensor]:
    """`tiny-imagenet-200/`: train/<wnid>/images/*.JPEG, val labels in val_annotations.txt."""
    how = "Extract tiny-imagenet-200.zip there."
    base = _require(root / "tiny-imagenet-200", "Tiny ImageNet", how)
    wnids = (_require(base / "wnids.txt", "Tiny ImageNet class list", how)).read_text().split()
    index = {w: i for i, w in enumerate(wnids)}
    train = sorted(
        (p, index[p.parent.parent.name])
        for p in (base / "train").glob("*/images/*")
        if p.suffix.lower() in IMAGE_SUFFIXES
    )
    ann = _require(base / "val" / "val_annotations.txt", "Tiny ImageNet val labels", how)
    val = [line.split("\t")[:2] for line in ann.read_text().splitlines() if line.strip()]
    val_paths = [base / "val" / "images" / name for name, _ in val]
    return dict(
        train_x=decode_files([p for p, _ in train]),
        train_y=torch.tensor([y for _, y in train]),
        test_x=decode_files(val_paths),
        test_y=torch.tensor([index[w] for _, w in val]),
    )


def read_idx(path: Path) -> np.ndarray:
    """An idx-ubyte file (optionally .gz): magic (2 zero bytes, type, ndim), dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        ndim = raw[3]
        dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    except (OSError, EOFError, IndexError, ValueError) as err:
        raise ValueError(f"{path} is not an idx-ubyte file ({err})") from None


def read_fashion_mnist(root: Path) -> dict[str, torch.Tensor]:
    """Fashion-MNIST idx files (plain or .gz), grey 28x28 repeated to 3 channels."""

    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz"):
            for folder in (root, root / "FashionMNIST" / "raw"):
                if (folder / name).exists():
                    return folder / name
        raise missing(
            "Fashion-MNIST",
            root / (stem + ".gz"),
            "Install the Debian package dataset-fashion-mnist, or put the idx files there.",
        )

    def images(stem: str) -> torch.Tensor:
        x = torch.from_numpy(read_idx(find(stem)).copy())
        return x[:, None].expand(-1, 3, -1, -1).contiguous()

    def labels(stem: str) -> torch.Tensor:
        return torch.from_numpy(read_idx(find(stem)).astype(np.int64))

    train = f"{find('train-images-idx3-ubyte')}, {find('train-labels-idx1-ubyte')}"
    return dict(
        train_x=images("train-images-idx3-ubyte"),
        train_y=labels("train-labels-idx1-ubyte"),
        test_x=images("t10k-images-idx3-ubyte"),
        test_y=labels("t10k-labels-idx1-ubyte"),
        files={
            "train": train,
            "clf": train,
            "test": f"{find('t10k-images-idx3-ubyte')}, {find('t10k-labels-idx1-ubyte')}",
        },
    )


class ImageFiles(torch.utils.data.Dataset):
    """Images too many for memory (ImageNet): decoded per item by DataLoader workers.

    Item i is (uint8 [3, S, S], label, int64 [2] size), in one of two modes:
      resize=R, crop=C (evaluation): the shorter side resized to R (bicubic, antialiased)
        and the central C x C (S = C); size is (C, C).
      max_side=M (training): the whole image, scaled down by `fit_within` when its longer
        side exceeds M (never up), top-left in a zero M x M canvas (S = M), so batches
        stack; size is its (height, width) there. Random resized crops are drawn from that
        region on the GPU afterwards (`Augment(x, sizes)`), as the reference's
        RandomResizedCrop draws them from the whole image.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int],
        resize: int | None = None,
        crop: int | None = None,
        max_side: int | None = None,
    ):
        if (max_side is None) == (resize is None or crop is None):
            raise ValueError(
                "ImageFiles takes resize and crop (evaluation) or max_side (training), "
                f"got resize={resize}, crop={crop}, max_side={max_side}"
            )
        self.paths, self.labels = list(paths), torch.tensor(labels)
        self.resize, self.crop, self.max_side = resize, crop, max_side
        side = crop if max_side is None else max_side
        self.shape = (len(self.paths), 3, side, side)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: torch.Tensor) -> ImageFiles:
        """The files at `index` (a split by file list: nothing is decoded)."""
        picked = index.tolist()
        return ImageFiles(
            [self.paths[i] for i in picked],
            self.labels[index].tolist(),
            self.resize,
            self.crop,
            self.max_side,
        )

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = decode_rgb(self.paths[i])
        if self.max_side is None:
            image = resize_center_crop(image, self.resize, self.crop)
        else:
            image = fit_within(image, self.max_side)
        size = torch.tensor(image.shape[-2:])
        if self.max_side is not None:
            image = on_canvas(image, self.max_side)
        return image, self.labels[i], size


# The 100 ImageNet classes of CMC (Tian et al., 2019), used by the W-MSE and CW-RGP papers.
IMAGENET100_CLASSES = """
n02869837 n01749939 n02488291 n02107142 n13037406 n02091831 n04517823 n04589890 n03062245
n01773797 n01735189 n07831146 n07753275 n03085013 n04485082 n02105505 n01983481 n02788148
n03530642 n04435653 n02086910 n02859443 n13040303 n03594734 n02085620 n02099849 n01558993
n04493381 n02109047 n04111531 n02877765 n04429376 n02009229 n01978455 n02106550 n01820546
n01692333 n07714571 n02974003 n02114855 n03785016 n03764736 n03775546 n02087046 n07836838
n04099969 n04592741 n03891251 n02701002 n03379051 n02259212 n07715103 n03947888 n04026417
n02326432 n03637318 n01980166 n02113799 n02086240 n03903868 n02483362 n04127249 n02089973
n03017168 n02093428 n02804414 n02396427 n04418357 n02172182 n01729322 n02113978 n03787032
n02089867 n02119022 n03777754 n04238763 n02231487 n03032252 n02138441 n02104029 n03837869
n03494278 n04136333 n03794056 n03492542 n02018207 n04067472 n03930630 n03584829 n02123045
n04229816 n02100583 n03642806 n04336792 n03259280 n02116738 n02108089 n03424325 n01855672
n02090622
""".split()


# Bound on the longer side of streamed training images: most ImageNet images are at most
# 500 px on their longer side and so reach the crops at full resolution; larger ones are
# scaled down once at decoding, which bounds the canvas (uint8 3 x 500 x 500 per image).
TRAIN_MAX_SIDE = 500


def read_imagenet(root: Path, classes: Sequence[str] | None = None) -> dict:
    """ImageFolder-style `train/<wnid>/*` and `val/<wnid>/*`: every class folder of train/
    (sorted, as ImageFolder), or only `classes` in that order.

    Training images stream whole, at most TRAIN_MAX_SIDE on the longer side, each on a
    canvas with its size, and the GPU draws their random resized crops from the whole
    image as the reference's RandomResizedCrop does; evaluation images (clf_x, test_x) are
    resized to 256 and centre-cropped to 224, the preprocessing the reference asks for.
    """
    name = "ImageNet" if classes is None else "ImageNet-100"
    how = "Put ImageNet's train/ and val/ class folders (ImageFolder layout) there."
    if classes is None:
        train_dir = _require(root / "train", f"{name} train", how)
        classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    sets = {}
    for split in ("train", "val"):
        folder = _require(root / split, f"{name} {split}", how)
        files, labels = [], []
        for label, wnid in enumerate(classes):
            found = sorted(
                p for p in (folder / wnid).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise missing(f"{name} class {wnid}", folder / wnid, how)
            files += found
            labels += [label] * len(found)
        sets[split] = (files, labels)
    return dict(
        train_x=ImageFiles(*sets["train"], max_side=TRAIN_MAX_SIDE),
        train_y=torch.tensor(sets["train"][1]),
        clf_x=ImageFiles(*sets["train"], resize=256, crop=224),
        test_x=ImageFiles(*sets["val"], resize=256, crop=224),
        test_y=torch.tensor(sets["val"][1]),
    )


def read_imagenet100(root: Path) -> dict:
    """ImageNet-100: `read_imagenet` restricted to the 100 CMC classes."""
    return read_imagenet(root, IMAGENET100_CLASSES)
