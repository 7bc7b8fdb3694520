"""What a dataset's contents must be, checked when it is loaded, whatever the reader: a file
with wrong labels fails here, naming the file, instead of training on them (labels beyond the
classes) or failing an epoch later (a negative label, fewer labels than images).

Per role (train, clf, test): images a uint8 tensor [N, 3, H, W] (or streamed files), N >= 1;
labels an integer tensor [N], in [0, num_classes), where the training role may also hold
-1 (unlabeled images, as STL-10's); classifier and test images crop_size x crop_size, the
size the encoder is evaluated at.
"""

from __future__ import annotations

from typing import Any

import torch

ROLES = ("train", "clf", "test")


class DataError(ValueError):
    """A dataset whose contents do not fit its roles; the message names the file."""


def check_roles(
    name: str, raw: dict[str, Any], num_classes: int, crop_size: int, where: str
) -> None:
    """Raises DataError for the first role of `raw` (a reader's dict: ROLE_x, ROLE_y and
    optionally files: {role: the files it came from}) that breaks the rules above. `where`
    names the data when the reader gives no files."""
    files = raw.get("files") or {}
    for role in ROLES:
        x, y = raw[f"{role}_x"], raw[f"{role}_y"]
        source = files.get(role, where)
        problem = _images_problem(x, role, crop_size) or labels_problem(
            y, len(x), num_classes, lowest=-1 if role == "train" else 0
        )
        if problem:
            raise DataError(
                f"{source}: the {name} {role} set {problem}; is this the right file for "
                f"--dataset {name}? Replace the damaged file"
            )


def _images_problem(x: Any, role: str, crop_size: int) -> str | None:
    """What is wrong with one role's images, or None (streamed files are checked on read)."""
    if not isinstance(x, torch.Tensor):
        return None if len(x) else "has no images"
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        return f"holds {x.dtype} images of shape {list(x.shape)}, not uint8 [N, 3, H, W]"
    if len(x) == 0:
        return "has no images"
    if role != "train" and tuple(x.shape[2:]) != (crop_size, crop_size):
        return f"holds {x.shape[2]}x{x.shape[3]} images, not {crop_size}x{crop_size}"
    return None


def labels_problem(y: Any, n: int, num_classes: int, lowest: int = 0) -> str | None:
    """What is wrong with one role's labels for `n` images, or None."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.is_floating_point():
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        return f"has labels of shape {shape}, not one integer per image"
    if len(y) != n:
        return f"has {len(y)} labels for {n} images"
    if n == 0:  # an empty batch file (a subset's: benchmarks/jpeg_subset.py)
        return None
    low, high = int(y.min()), int(y.max())
    if low < lowest or high >= num_classes:
        allowed = f"[{lowest}, {num_classes})" + (" (-1: unlabeled)" if lowest < 0 else "")
        return f"has labels from {low} to {high}, outside {allowed}"
    return None
