"""Paths the user gives: made absolute against the directory the command runs in (Ray
workers run elsewhere), and output folders checked for writing before anything starts.
A config's path flags: `wsl_ray.data.paths`.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | os.PathLike) -> str:
    """`path` with ~ expanded, against the current directory; URIs (s3://...) as given."""
    text = str(path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


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
