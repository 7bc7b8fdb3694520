"""One experiment per name: the experiment as a value, its folder's name, its record and its
driver lock.

- `--name` is a plain name, one folder below `--storage`, never a path;
- a new sweep never starts in a folder that holds an experiment (`--resume` continues one);
- `sweep.json`, written before the first trial, fixes what a sweep is: its metric and mode,
  its search space and the settings that `Tuner.restore` keeps from the first run; `--resume`
  and the analysis package read it, and a `--resume` that asks for anything else is refused;
- `driver.lock` holds the PID and host of the driver running the experiment: a second
  driver is refused, a lock whose process is gone (same host) is taken over. On an object
  store (s3://, gs://) the lock is written and read, but not created atomically.

Everything here runs before Ray starts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs
import yaml

from ..data.paths import absolute_paths
from ..utils.atomic import alive
from ..utils.storage import filesystem, read_text, write_text
from .metrics import DEFAULT_METRIC
from .space import SearchSpace, parse_space

RECORD = "sweep.json"
LOCK = "driver.lock"
PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")
# sweep flags that Tuner.restore takes from the first run: a --resume may not change them
FIXED_SETTINGS = ("num_trials", "scheduler", "grace", "concurrency", "max_failures", "seed")


@dataclass(frozen=True)
class Experiment:
    """A Tune experiment: the folder `name` under `storage` (a local path or a URI), the
    (storage_path, name) pair that Ray's RunConfig takes."""

    storage: str
    name: str

    @classmethod
    def at(cls, path: str) -> Experiment:
        """The experiment whose folder is `path` (a trailing '/' ignored)."""
        storage, _, name = path.rstrip("/").rpartition("/")
        return cls(storage, name)

    @property
    def path(self) -> str:
        """The experiment folder, STORAGE/NAME (NAME alone for a relative folder's)."""
        return f"{self.storage}/{self.name}" if self.storage else self.name


class ExperimentError(ValueError):
    """An experiment name, folder, record or lock that does not allow the command."""


def check_name(name: str, flag: str = "--name") -> None:
    """Raises ExperimentError unless `name` is a plain folder name (letters, digits and
    . _ + = -, not starting with a dot or dash): never a path, so never outside --storage."""
    if not PLAIN_NAME.match(name) or name in (".", ".."):
        raise ExperimentError(
            f"{flag} {name!r}: give a plain name (letters, digits, . _ + = -; no '/', not "
            "starting with '.' or '-'); the experiment goes to --storage/NAME"
        )


def holds_experiment(path: str) -> bool:
    """Whether the folder `path` (a local path or a URI) exists and is not empty."""
    fs, where = filesystem(path)
    if fs.get_file_info(where).type != pyarrow.fs.FileType.Directory:
        return False
    return bool(fs.get_file_info(pyarrow.fs.FileSelector(where)))


def refuse_existing(path: str, name: str) -> None:
    """Raises ExperimentError, saying what to change, when a new sweep would start in a
    folder that holds an experiment already."""
    if holds_experiment(path):
        raise ExperimentError(
            f"--name {name}: the experiment {path} exists already; continue it with "
            "--resume, or start a new sweep with another --name"
        )


def write_record(
    path: str,
    metric: str,
    mode: str,
    space_yaml: str,
    settings: dict,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Writes EXPERIMENT/sweep.json (what the sweep selects on, its space as run, its
    settings, and the `overrides` the command line put on the space file: --set and the
    named flags) and the space alone as EXPERIMENT/search_space.yaml, which earlier versions
    read."""
    record = {
        "metric": metric,
        "mode": mode,
        "space": space_yaml,
        "overrides": overrides or {},
        "settings": settings,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_text(f"{path}/search_space.yaml", space_yaml)
    write_text(f"{path}/{RECORD}", json.dumps(record, indent=1))


def add_to_record(path: str, key: str, value: Any) -> None:
    """Sets `key` in EXPERIMENT/sweep.json (e.g. the bill, at the end of the sweep)."""
    record = read_record(path)
    if record is not None:  # an experiment of an earlier version has none to add to
        write_text(f"{path}/{RECORD}", json.dumps(record | {key: value}, indent=1))


def read_record(path: str) -> dict[str, Any] | None:
    """EXPERIMENT/sweep.json as a dict; None when there is none (a sweep of an earlier version).
    Raises ExperimentError for a file that is not a sweep record."""
    try:
        record = json.loads(read_text(f"{path}/{RECORD}"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExperimentError(f"{path}/{RECORD} is not valid JSON ({err}); restore it") from None
    if not isinstance(record, dict) or not isinstance(record.get("metric"), str):
        raise ExperimentError(f"{path}/{RECORD}: not a sweep record (no metric); restore it")
    return record


def space_differences(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """What differs between two spaces (their to_yaml() as dicts), one phrase per entry:
    `section key: stored X, given Y`."""
    problems = []
    for section in ("config", "params", "derived", "first"):
        old, new = stored.get(section) or {}, given.get(section) or {}
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                problems.append(
                    f"{section} {key}: stored {_shown(old.get(key))}, given {_shown(new.get(key))}"
                )
    return problems


def resume_conflicts(
    record: dict[str, Any], space_yaml: str | None, metric: str | None, settings: dict
) -> list[str]:
    """Why a --resume may not go on: each explicitly given value (None: not given) that
    differs from the experiment's record: the metric, the space, a fixed setting."""
    problems = []
    if metric is not None and metric != record["metric"]:
        problems.append(f"--metric {metric}: this experiment selects on {record['metric']}")
    if space_yaml is not None and record.get("space"):
        stored = yaml.safe_load(record["space"]) or {}
        problems += space_differences(stored, yaml.safe_load(space_yaml) or {})
    fixed = record.get("settings") or {}
    for key, value in settings.items():
        if key in fixed and value != fixed[key]:
            problems.append(f"--{key} {value}: this experiment ran with {fixed[key]}")
    return problems


def _shown(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, default=str)


@contextmanager
def experiment_lock(path: str) -> Iterator[None]:
    """Holds EXPERIMENT/driver.lock while the block runs (see the module docstring); raises
    ExperimentError when a live driver holds it. A local experiment folder that the lock
    created and the block left empty (--plan, a sweep refused before its record) is removed
    with the lock: a command that wrote no experiment leaves no folder of one."""
    lock = f"{path.rstrip('/')}/{LOCK}"
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    new = _missing_folders(path)
    _acquire(lock, mine)
    try:
        yield
    finally:
        if _holder(lock) == mine:
            fs, where = filesystem(lock)
            fs.delete_file(where)
        for folder in new:  # the deepest first; one that holds something stays, and above it
            try:
                os.rmdir(folder)
            except OSError:
                break


def _missing_folders(path: str) -> list[str]:
    """The local folders from `path` up that do not exist yet, the deepest first (none for
    a URI, whose folders are the prefixes of its objects and vanish with them)."""
    fs, where = filesystem(path)
    if not isinstance(fs, pyarrow.fs.LocalFileSystem):
        return []
    missing = []
    folder = Path(where).absolute()
    while not folder.exists():
        missing.append(str(folder))
        folder = folder.parent
    return missing


def _acquire(lock: str, mine: dict[str, Any]) -> None:
    """Creates the lock holding `mine`, taking over a stale one (a dead PID on this host)."""
    for _ in range(2):
        if _create(lock, json.dumps(mine)):
            return
        holder = _holder(lock)
        if holder is None:  # released meanwhile, or unreadable: the next try decides
            continue
        if holder.get("host") == mine["host"] and not alive(int(holder.get("pid", 0))):
            print(f"note: {lock}: removing the stale lock of PID {holder.get('pid')} (gone)")
            fs, where = filesystem(lock)
            fs.delete_file(where)
            continue
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
        raise ExperimentError(
            f"{lock}: another driver runs this experiment (PID {holder.get('pid')} on "
            f"{holder.get('host')}, since {since}); wait for it, or use another --name. "
            "If that driver is gone, delete the lock file"
        )
    raise ExperimentError(
        f"{lock}: the lock file is unreadable; if no driver runs this experiment, delete it"
    )


def _create(lock: str, text: str) -> bool:
    """Writes a new lock file; False when one exists (atomic for a local file)."""
    fs, where = filesystem(lock)
    if not isinstance(fs, pyarrow.fs.LocalFileSystem):
        if fs.get_file_info(where).type != pyarrow.fs.FileType.NotFound:
            return False
        write_text(lock, text)
        return True
    os.makedirs(os.path.dirname(where), exist_ok=True)
    try:
        fd = os.open(where, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


def _holder(lock: str) -> dict[str, Any] | None:
    """The lock's content, or None when there is no readable lock."""
    try:
        holder = json.loads(read_text(lock))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def recorded_metric(path: str) -> str | None:
    """The metric the experiment at `path` selects on, from its record (None: no record)."""
    record = read_record(path)
    return record["metric"] if record else None


def resumed_sweep(
    path: str,
    space_text: str | None,
    overrides: dict[str, Any],
    metric: str | None,
    settings: dict[str, Any],
) -> tuple[SearchSpace, str]:
    """(space, metric) that a --resume of the experiment at `path` continues with: the ones
    in its record. What the command line gave explicitly (the text of a --space file,
    `overrides` from --set and the named flags, a --metric, FIXED_SETTINGS values; None or
    empty: not given) must agree with the record, or ExperimentError names each difference.
    A flag not given keeps its recorded value: a --space file is read with the first run's
    overrides under the given ones, so only a change (of the file, or by a flag) differs.
    An experiment of an earlier version (no sweep.json) resumes with its search_space.yaml
    and the given (or default) metric."""
    if not holds_experiment(path):
        raise ExperimentError(
            f"--resume: no experiment to resume at {path}; give its --name and --storage"
        )
    record = read_record(path)
    if record is None:
        try:
            text = read_text(f"{path}/search_space.yaml")
        except FileNotFoundError:
            raise ExperimentError(
                f"--resume: no experiment to resume ({path} has no {RECORD} or "
                "search_space.yaml); give its --name and --storage"
            ) from None
        return parse_space(text, Path(path)), metric or DEFAULT_METRIC
    space = parse_space(record["space"], Path(path))
    given = None
    if space_text is not None:  # the file again, with the first run's flags and the new ones
        overrides = (record.get("overrides") or {}) | overrides
    if space_text is not None or overrides:
        given_space = parse_space(space_text or record["space"], Path(path), overrides)
        given_space.config = absolute_paths(given_space.config)
        given = given_space.to_yaml()
    problems = resume_conflicts(record, given, metric, settings)
    if problems:
        raise ExperimentError(
            f"--resume {path}: the command asks for another sweep than the one stored in "
            f"{RECORD}: " + "; ".join(problems) + ". Drop those flags to continue it, or "
            "start a new sweep with another --name"
        )
    return space, record["metric"]
