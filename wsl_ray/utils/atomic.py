"""Atomic file writes that leave no debris: write `<name>.tmp<pid>`, then rename.

A write killed half-way leaves its `.tmp<pid>` file behind. Several processes may write
into the same folder at once (trials filling the data cache), so a leftover is removed only
when the process named by its pid is gone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

TMP = re.compile(r"\.tmp(\d+)$")


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to `path` via `path.tmp<pid>` and a rename: readers never see half a file.
    Then removes the leftovers of writers in this folder that were killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    tmp.replace(path)
    remove_stale_tmp(path.parent)


def remove_stale_tmp(folder: Path) -> list[Path]:
    """Deletes the `*.tmp<pid>` files in `folder` whose process no longer exists; returns them."""
    removed = []
    for path in folder.glob("*.tmp*"):
        match = TMP.search(path.name)
        if match and not alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def alive(pid: int) -> bool:
    """Whether a process with this PID exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
