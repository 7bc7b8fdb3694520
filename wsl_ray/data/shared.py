"""One copy of a sweep's dataset per node: numpy arrays in Ray's object store.

The sweep driver loads the dataset once and `ray.put`s its uint8 images and int64 labels as
numpy arrays; it owns the object, so a resumed sweep puts it again. A Train worker's
`ray.get` maps the arrays from the node's shared-memory object store without copying
(numpy arrays are zero-copy; torch tensors would be copied), and `torch.from_numpy` wraps
them, so packed trials on one node share one read-only copy instead of each reading and
decoding its own. Batches are gathered from it by indexing (a copy per batch); on a GPU each
trial still places its own device copy. Streamed datasets (ImageFiles) are not shared.
Set WSL_RAY_SHARE_DATA=0 to give every trial its own copy (for measurements).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import numpy as np
import ray
import torch

from . import ImageData

ROLES = ("train_x", "train_y", "clf_x", "clf_y", "test_x", "test_y")


def share_dataset(data: ImageData, dataset: str, data_dir: str | None) -> dict[str, Any] | None:
    """Puts `data` (loaded for --dataset `dataset` from `data_dir`) in the object store:
    {"dataset", "data_dir", "ref"} for the trials, or None when it cannot be shared."""
    if os.environ.get("WSL_RAY_SHARE_DATA", "1") == "0":
        return None
    if not all(isinstance(getattr(data, role), torch.Tensor) for role in ROLES):
        return None
    arrays = {role: getattr(data, role).numpy() for role in ROLES}
    if data.clf_x is data.train_x:  # one array for both roles (the default clf set)
        arrays["clf_x"] = arrays["clf_y"] = None
    meta = {f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.name not in ROLES}
    ref = ray.put({"arrays": arrays, "meta": meta})
    return {"dataset": dataset, "data_dir": data_dir, "ref": ref}


def shared_dataset(
    shared: dict[str, Any] | None, dataset: str, data_dir: str | None
) -> ImageData | None:
    """The shared dataset as an ImageData of read-only tensors mapped from the object store,
    or None when nothing is shared for `dataset` from `data_dir` (load it yourself)."""
    if not shared or (shared["dataset"], shared["data_dir"]) != (dataset, data_dir):
        return None
    stored = ray.get(shared["ref"])
    arrays = stored["arrays"]
    if arrays["clf_x"] is None:
        arrays = arrays | {"clf_x": arrays["train_x"], "clf_y": arrays["train_y"]}
    with warnings.catch_warnings():  # the arrays are read-only: nothing here writes to them
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = {role: torch.from_numpy(np.asarray(arrays[role])) for role in ROLES}
    return ImageData(**tensors, **stored["meta"])
