"""Paths the user gives, made absolute against the directory the command runs in.

Ray workers run in directories of their own (Train V2: a per-run folder), and on other
nodes, so a relative `data` would be looked up there. Every path flag of a config is
resolved before it leaves the command; the data must then exist at that path on every node.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PATH_KEYS = ("data_dir", "out", "fname")


def absolute(path: str | os.PathLike) -> str:
    """`path` with ~ expanded, against the current directory; URIs (s3://...) as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """Config values with every path flag absolute; an unset --data_dir becomes the
    dataset's default folder (e.g. ./data), resolved here rather than where a worker runs."""
    from ..config import Config
    from ..data import DATASETS

    out = dict(values)
    spec = DATASETS.get(out.get("dataset", Config().dataset))
    if out.get("data_dir") is None and spec is not None and spec.default_dir:
        out["data_dir"] = spec.default_dir
    for key in PATH_KEYS:
        if out.get(key) is not None and not str(out[key]).strip():
            raise ValueError(f"--{key} {out[key]!r}: give a path (an empty one names nothing)")
        if out.get(key) is not None:
            out[key] = absolute(out[key])
    return out


def writable_folder(path: str | os.PathLike, flag: str) -> None:
    """Creates the folder `path` (a local path; URIs are left to their filesystem), or raises
    ValueError naming `flag` when it cannot be created or written."""
    if "://" in str(path):
        return
    if not str(path).strip():
        raise ValueError(f"{flag} {path!r}: give a folder (an empty path means nothing)")
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot create this folder ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: this folder is not writable")
