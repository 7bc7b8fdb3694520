"""The Tune trainable of a sweep trial: one Ray Train run per trial, its evaluated epochs
forwarded to Tune, its test metrics kept out of Tune, a diverged loss ending it once."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from ..config import Config
from ..training.journal import evaluated, journal_uri
from ..training.runner import make_trainer
from ..utils.storage import write_text
from .experiment import Experiment
from .results import TEST_FILE
from .space import CONFIG_KEYS


class EvaluationReportCallback(TuneReportCallback):
    """Forwards to Tune only the epochs that were evaluated, so that every Tune result
    carries the metric that ASHA and Optuna read (Tune checks this strictly), and never a
    test metric: the test_* keys of the final epoch go to `test_file` instead. The live
    table shows a result's first metrics: epoch, validation k-NN and linear accuracy, loss."""

    def __init__(self, test_file: str):
        super().__init__()
        self.test_file = test_file

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not evaluated(metrics[0]):
            return
        test = {k: v for k, v in metrics[0].items() if k.startswith("test_")}
        if test:
            write_text(self.test_file, json.dumps(test))
        kept = [{k: v for k, v in m.items() if not k.startswith("test_")} for m in metrics]
        shown = ("epoch", "val_acc_knn", "val_acc", "loss")
        shown_first = {k: kept[0][k] for k in shown if k in kept[0]}
        super().after_report(run_context, [shown_first | kept[0], *kept[1:]], checkpoint)


def diverged(err: BaseException) -> str | None:
    """The message of a NonFiniteLossError that ended a Train run, else None."""
    failures = getattr(err, "worker_failures", {}) or {}
    for failure in [*failures.values(), err]:
        text = str(failure)
        if "NonFiniteLossError" in f"{type(failure).__name__} {text}" or "loss became" in text:
            found = re.search(r"the loss became .*", text)
            return found.group(0).splitlines()[0] if found else text.splitlines()[-1]
    return None


def make_trial(
    workers: int,
    gpus: float,
    cpus: float,
    experiment: Experiment,
    metric: str,
    shared_data: dict[str, Any] | None = None,
):
    """The Tune trainable: builds the trial's TorchTrainer and runs it to completion.
    Its Train run is `experiment/train-<trial_id>`; test metrics go to its trial folder.

    The trial's config is its whole training configuration (see SearchSpace.suggest),
    plus helper ratios that are not training flags. A run whose loss diverges ends the
    trial at once with one last result {diverged: True, metric: nan, message}: the trial
    function returns, so Tune does not retry it, while other failures raise and are
    retried from the last checkpoint (--max-failures); rank 0 journals its epochs
    (wsl_ray.sweep.history). Its wandb run (with --wandb) has id = the trial id and
    group = the sweep's name, its files in the experiment folder (or, for remote storage,
    the driver's working directory). `shared_data` is the dataset the driver put in the
    object store, mapped by the trials instead of loaded.
    """
    name, path = experiment.name, experiment.path
    log_dir = path if "://" not in path else os.getcwd()

    def trial(trial_config: dict[str, Any]) -> None:
        cfg = Config.from_dict({k: v for k, v in trial_config.items() if k in CONFIG_KEYS})
        context = tune.get_context()
        trial_id = context.get_trial_id()
        folder = f"{path}/{Path(context.get_trial_dir()).name}"
        trainer = make_trainer(
            cfg,
            workers=workers,
            gpus_per_worker=gpus,
            cpus_per_worker=cpus,
            storage_path=path,
            name=f"train-{trial_id}",
            callbacks=[EvaluationReportCallback(f"{folder}/{TEST_FILE}")],
            wandb={"run_id": trial_id, "group": name, "log_dir": log_dir},
            shared_data=shared_data,
            journal=journal_uri(path, trial_id),
        )
        try:
            trainer.fit()
        except Exception as err:
            message = diverged(err)
            if message is None:
                raise
            found = re.search(r"in epoch (\d+)", message)
            epoch = int(found.group(1)) if found else 0
            tune.report({"epoch": epoch, metric: math.nan, "diverged": True, "message": message})

    return trial
