"""A config's path flags made absolute against the directory the command runs in.

Ray workers run in directories of their own (Train V2: a per-run folder), and on other
nodes, so a relative `data` would be looked up there. Every path flag of a config is
resolved before it leaves the command; the data must then exist at that path on every node.
It lives in data/ because an unset --data_dir becomes the dataset's own folder.
"""

from __future__ import annotations

from typing import Any

from ..utils.paths import absolute
from . import DATASETS, DEFAULT_DATASET

PATH_KEYS = ("data_dir", "out", "fname")


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """Config values with every path flag absolute; an unset --data_dir becomes the
    dataset's default folder (e.g. ./data), resolved here rather than where a worker runs."""
    out = dict(values)
    spec = DATASETS.get(out.get("dataset", DEFAULT_DATASET))
    if out.get("data_dir") is None and spec is not None and spec.default_dir:
        out["data_dir"] = spec.default_dir
    for key in PATH_KEYS:
        if out.get(key) is not None and not str(out[key]).strip():
            raise ValueError(f"--{key} {out[key]!r}: give a path (an empty one names nothing)")
        if out.get(key) is not None:
            out[key] = absolute(out[key])
    return out
