"""The sweep's Optuna study: the searcher that reports per epoch and tells each trial's
end state, where the study is stored, and its repair and copy around a --resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from ..data import cache_dir
from ..utils.storage import filesystem

STUDY_FILE = "optuna.journal"


class EpochOptunaSearch(OptunaSearch):
    """OptunaSearch that tells the study what happened to each trial.

    Intermediate values are reported with step = epoch (not Tune's iteration). On completion
    the study hears COMPLETE with the last value for a trial that ran its epoch budget,
    PRUNED for one the scheduler ended earlier, and FAIL for an errored or diverged one.
    The keys of the last result the searcher was given are kept as the user attribute
    `result_keys`, so anyone can check that no test metric reached the search.
    """

    def __init__(self, *args, epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self._epochs = epochs

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if trial_id in self._completed_trials or value is None or not math.isfinite(value):
            return
        try:
            self._ot_trials[trial_id].report(value, int(result["epoch"]))
        except RuntimeError:  # a trial that a crash left RUNNING was closed as FAIL on --resume
            pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials:
            return
        result = result or {}
        value = result.get(self.metric)
        budget = result.get("config/epoch", (result.get("config") or {}).get("epoch"))
        if error or result.get("diverged") or value is None or not math.isfinite(value):
            state, value = TrialState.FAIL, None
        elif result.get("epoch", 0) < (budget or self._epochs):
            state, value = TrialState.PRUNED, None
        else:
            state = TrialState.COMPLETE
        ot_trial = self._ot_trials[trial_id]
        keys = sorted(k for k in result if k != "config" and not k.startswith("config/"))
        try:
            if state != TrialState.FAIL:  # Tune hands the last result only to this method
                self.on_trial_result(trial_id, result)
            ot_trial.set_user_attr("result_keys", keys)
            self._ot_study.tell(ot_trial, value, state=state)
        except RuntimeError:  # closed as FAIL by --resume: record the finished run anew
            frozen = self._ot_study.trials[ot_trial.number]
            self._ot_study.add_trial(
                optuna.trial.create_trial(
                    params=frozen.params,
                    distributions=frozen.distributions,
                    value=value,
                    state=state,
                    intermediate_values=frozen.intermediate_values,
                    user_attrs={"result_keys": keys},
                )
            )
        self._completed_trials.add(trial_id)


def study_storage(url: str | None, experiment: str, name: str) -> tuple[Any, str]:
    """The Optuna storage of the sweep and where its file lives locally.

    Default: a JournalStorage file EXPERIMENT/optuna.journal. A journal is an append-only
    log with a lock file, safe on NFS where SQLite's locking is not, and optuna-dashboard
    opens it directly. For s3:// or gs:// experiments the journal is a local file,
    $WSL_RAY_CACHE/optuna/<name>.journal, copied to EXPERIMENT/optuna.journal after the
    search (and back before a --resume). An URL with :// is an RDB (sqlite:///f.db).
    """
    if url and "://" in url:
        return optuna.storages.RDBStorage(url), url
    if url:
        path = str(Path(url).expanduser().resolve())
    elif "://" in experiment:
        path = str(cache_dir() / "optuna" / f"{name}.journal")
    else:
        path = f"{experiment}/{STUDY_FILE}"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    backend = optuna.storages.journal.JournalFileBackend(path)
    return optuna.storages.JournalStorage(backend), path


def sync_study(local: str, experiment: str, upload: bool) -> None:
    """Copies a remote experiment's journal from its local file to EXPERIMENT/ (upload), or
    back when the local file is missing (before --resume on another machine)."""
    if "://" not in experiment or "://" in local:
        return
    fs, remote = filesystem(f"{experiment}/{STUDY_FILE}")
    here = pyarrow.fs.LocalFileSystem()
    if upload:
        pyarrow.fs.copy_files(local, remote, source_filesystem=here, destination_filesystem=fs)
    elif not Path(local).exists() and fs.get_file_info(remote).type == pyarrow.fs.FileType.File:
        pyarrow.fs.copy_files(remote, local, source_filesystem=fs, destination_filesystem=here)


def fail_stale_trials(storage: Any, name: str) -> int:
    """Marks trials that a crash left RUNNING as FAIL (TPE's constant_liar would otherwise
    treat them as pending forever); returns how many."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return 0
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
    return len(stale)
