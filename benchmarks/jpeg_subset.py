"""A small copy of the CIFAR-10 JPEG copy, for the GPU session's optional second call (which
carries the stripped Ray wheels, 49.4 MiB, so the whole copy's 53.6 MiB cannot travel too).

Writes OUT_DIR/cifar10_jpeg.npz with the source's keys (blob_/off_/y_ of train and test: the
JPEG bytes of each split, the offsets that cut them, the labels), keeping a seeded random
`--train` training and `--test` test images, and copies the source's to_batches.py beside
it: `python OUT_DIR/to_batches.py data` then writes `data/cifar-10-batches-py` (its
data_batch_2..5 empty when --train is at most 10,000).

    python -m benchmarks.jpeg_subset SRC_DIR OUT_DIR [--train 8000] [--test 2000]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

NPZ = "cifar10_jpeg.npz"


def keep(blob: np.ndarray, off: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The JPEG bytes of images `idx` (in that order) of one split, and their offsets:
    image i of the result is blob[off[i]:off[i + 1]]."""
    parts = [blob[off[i] : off[i + 1]] for i in idx]
    sizes = np.array([len(p) for p in parts], dtype=off.dtype)
    return np.concatenate(parts), np.concatenate([[0], np.cumsum(sizes)]).astype(off.dtype)


def subset(src: Path, out: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """Writes out/NPZ with `counts[split]` images of each split of src/NPZ (and copies
    to_batches.py); returns the written file."""
    data = np.load(src / NPZ)
    rng, arrays = np.random.default_rng(seed), {}
    for split, n in counts.items():
        labels = data[f"y_{split}"]
        if not 0 < n <= len(labels):
            raise ValueError(f"--{split} {n}: must be in 1..{len(labels)}")
        idx = np.sort(rng.permutation(len(labels))[:n])  # sorted: the source's class order
        blob, off = keep(data[f"blob_{split}"], data[f"off_{split}"], idx)
        arrays |= {f"blob_{split}": blob, f"off_{split}": off, f"y_{split}": labels[idx]}
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / NPZ, **arrays)
    shutil.copy(src / "to_batches.py", out / "to_batches.py")
    return out / NPZ


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jpeg_subset", description=__doc__)
    parser.add_argument("src", type=Path, help=f"holds {NPZ} and to_batches.py")
    parser.add_argument("out", type=Path, help="the folder to write (gpu_subset/)")
    parser.add_argument("--train", type=int, default=8000, help="training images kept")
    parser.add_argument("--test", type=int, default=2000, help="test images kept")
    args = parser.parse_args(argv)
    if not (args.src / NPZ).is_file():
        parser.error(f"{args.src}: no {NPZ} there")
    try:
        path = subset(args.src, args.out, {"train": args.train, "test": args.test})
    except ValueError as err:
        parser.error(str(err))
    print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
