"""`python -m wsl_ray.tune --space wmse`: a hyperparameter sweep on Ray Tune.

Optuna's TPE proposes trials (the space's `first` point first), behind a concurrency limit;
ASHA stops weak trials early on a validation metric (`val_acc_knn` by default: k-NN fit on
the classifier set minus a fixed, stratified validation split, scored on that split)
evaluated every `--eval_every` epochs. Test metrics never reach Tune: a trial that runs its
whole budget computes them once, at the end, into `test_metrics.json` in its trial folder.
Each trial is a Ray Train TorchTrainer run named `train-<trial_id>` on the sweep's storage,
so a restarted trial resumes from its last checkpoint; a trial whose loss diverges ends once,
as DIVERGED, and is not retried. The Optuna study is stored (a JournalStorage file in the
experiment folder by default) with PRUNED for trials that ASHA ended early. At the end: a
summary of the best trials, `results.parquet`, and with `--confirm K --seeds S` a
confirmation of the top K and the default over S new seeds (wsl_ray.confirm).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import optuna
import pyarrow.fs
import ray
from optuna.trial import TrialState
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from .config import Config, ConfigError
from .confirm import check_counts, report, run_confirmation, sweep_metric
from .data import ImageData, load_dataset
from .data.shared import share_dataset
from .sweep.results import TEST_FILE, filesystem, ranked, read_text, summarize_sweep, write_text
from .sweep.space import (
    CONFIG_KEYS,
    SearchSpace,
    SpaceError,
    load_space,
    parse_setting,
    parse_space,
)
from .training.device import resolve_device
from .training.evaluate import evaluate_run
from .training.loop import initial_model
from .training.runner import make_trainer
from .utils.paths import absolute, absolute_paths

DEFAULT_STORAGE = "~/wsl_ray_results"
METRICS = ("val_acc_knn", "val_acc", "val_acc_5", "rankme")
STUDY_FILE = "optuna.journal"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wsl_ray.tune",
        description="Hyperparameter sweep of self-supervised training on Ray Tune + Optuna.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", default="wmse", help="search_spaces/NAME.yaml, or a path")
    p.add_argument("--num_trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (space default)")
    p.add_argument("--eval_every", type=int, default=None, help="evaluate every N epochs")
    p.add_argument("--dataset", default=None, help="dataset (space default)")
    p.add_argument("--data_dir", default=None)
    p.add_argument(
        "--metric",
        default="val_acc_knn",
        choices=METRICS,
        help="what the search maximises: a validation accuracy, or the label-free RankMe",
    )
    p.add_argument("--val_size", type=float, default=None, help="validation split (0.1)")
    p.add_argument("--scheduler", default="asha", choices=("asha", "fifo"))
    p.add_argument("--grace", type=int, default=None, help="ASHA grace period in epochs")
    p.add_argument("--name", default=None, help="experiment name (default: the space's)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help="local path or URI (s3://...)")
    p.add_argument("--resume", action="store_true", help="continue the experiment --name")
    p.add_argument(
        "--optuna-storage",
        default=None,
        help="Optuna storage: a journal file path, or an RDB URL (sqlite:///f.db); default "
        f"EXPERIMENT/{STUDY_FILE}",
    )
    p.add_argument("--confirm", type=int, default=0, help="re-run the top K configs and default")
    p.add_argument("--seeds", type=int, default=3, help="new seeds per confirmed config")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial")
    p.add_argument("--concurrency", type=int, default=None, help="trials at once (default: fit)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="DDP workers per trial")
    p.add_argument("--gpus-per-trial", type=float, default=None, help="may be fractional")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the search (and trials)")
    p.add_argument("--wandb", default=None, help="log every trial to this wandb project")
    p.add_argument(
        "--baseline",
        action="store_true",
        help="evaluate the default config's untrained encoder first, to show what SSL adds",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="fix training flags, or pin searched parameters to one value",
    )
    return p


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Training flags fixed on the command line, on top of the space's `config`."""
    fixed: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpaceError(f"--set {item!r}: write KEY=VALUE, e.g. --set arch=resnet18_w16")
        fixed[key] = parse_setting(key, value)
    named = {
        "epoch": args.epochs,
        "eval_every": args.eval_every,
        "dataset": args.dataset,
        "data_dir": args.data_dir,
        "wandb": args.wandb,
        "seed": args.seed,
        "val_size": args.val_size,
        "eval_on": "val",
    }
    return fixed | {k: v for k, v in named.items() if v is not None}


def storage_uri(storage: str) -> str:
    """A URI as given; a local path made absolute (Ray needs one)."""
    return absolute(storage)


class EvaluationReportCallback(TuneReportCallback):
    """Forwards to Tune only the epochs that were evaluated, so that every Tune result
    carries the metric that ASHA and Optuna read (Tune checks this strictly), and never a
    test metric: the test_* keys of the final epoch go to `test_file` instead. The live
    table shows a result's first metrics: epoch, validation k-NN and linear accuracy, loss."""

    def __init__(self, test_file: str):
        super().__init__()
        self.test_file = test_file

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if "rankme" not in metrics[0]:
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
    experiment: str,
    metric: str,
    shared_data: dict[str, Any] | None = None,
):
    """The Tune trainable: builds the trial's TorchTrainer and runs it to completion.
    Its Train run is `experiment/train-<trial_id>`; test metrics go to its trial folder.

    The trial's config is its whole training configuration (see SearchSpace.suggest),
    plus helper ratios that are not training flags. A run whose loss diverges ends the
    trial at once with one last result {diverged: True, metric: nan, message}: the trial
    function returns, so Tune does not retry it, while other failures raise and are
    retried from the last checkpoint (--max-failures). Its wandb run (with --wandb) has
    id = the trial id and group = the sweep's name, its files in the experiment folder
    (or, for remote storage, the driver's working directory). `shared_data` is the
    dataset the driver put in the object store, mapped by the trials instead of loaded.
    """
    name = experiment.rstrip("/").rsplit("/", 1)[-1]
    log_dir = experiment if "://" not in experiment else os.getcwd()

    def trial(trial_config: dict[str, Any]) -> None:
        cfg = Config.from_dict({k: v for k, v in trial_config.items() if k in CONFIG_KEYS})
        context = tune.get_context()
        trial_id = context.get_trial_id()
        folder = f"{experiment}/{Path(context.get_trial_dir()).name}"
        trainer = make_trainer(
            cfg,
            workers=workers,
            gpus_per_worker=gpus,
            cpus_per_worker=cpus,
            storage_path=experiment,
            name=f"train-{trial_id}",
            callbacks=[EvaluationReportCallback(f"{folder}/{TEST_FILE}")],
            wandb={"run_id": trial_id, "group": name, "log_dir": log_dir},
            shared_data=shared_data,
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
        from .data import cache_dir

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


def asha_limits(epochs: int, eval_every: int, grace: int | None) -> tuple[int, int]:
    """(max_t, grace_period) for ASHA, the grace clamped to the epoch budget: Ray asserts
    grace_period <= max_t, and --epochs below the space's eval_every would break that."""
    grace = grace or eval_every
    if grace < 1:
        raise SpaceError(f"--grace {grace}: give a whole number of epochs >= 1")
    if grace > epochs:
        print(f"note: ASHA grace period {grace} > --epochs {epochs}; using {epochs}")
    return epochs, min(grace, epochs)


def run_sweep(
    args: argparse.Namespace, space: SearchSpace, shared_data: dict[str, Any] | None = None
) -> Any:
    """Runs (or resumes) the sweep and returns Tune's ResultGrid."""
    storage = storage_uri(args.storage)
    gpus = args.gpus_per_trial if args.gpus_per_trial is not None else _default_gpus()
    path = experiment_path(args)
    trial = make_trial(
        args.workers_per_trial, gpus, args.cpus_per_trial, path, args.metric, shared_data
    )
    # the trial driver only waits on its Train run: it asks for no CPU (Tune needs some resource)
    trainable = tune.with_resources(trial, {"CPU": 0, "memory": 64 * 2**20})
    name = path.rsplit("/", 1)[-1]
    study, local_study = study_storage(args.optuna_storage, path, name)
    if args.resume:
        if not tune.Tuner.can_restore(path):
            raise SpaceError(f"--resume: no experiment to resume at {path}")
        sync_study(local_study, path, upload=False)
        stale = fail_stale_trials(study, name)
        if stale:
            print(f"--resume: {stale} trial(s) left RUNNING by the crash marked FAIL in the study")
        grid = tune.Tuner.restore(path, trainable, resume_errored=True).fit()
        sync_study(local_study, path, upload=True)
        return grid
    write_text(f"{path}/search_space.yaml", space.to_yaml())  # for the analysis package
    sampler = optuna.samplers.TPESampler(seed=args.seed, multivariate=True, constant_liar=True)
    epochs, grace = sweep_epochs(args, space)
    searcher = EpochOptunaSearch(
        space.suggest,
        metric=args.metric,
        mode="max",
        sampler=sampler,
        points_to_evaluate=[space.first] if space.first else None,
        study_name=name,
        storage=study,
        epochs=epochs,
    )
    concurrency = args.concurrency or _fitting_trials(args, gpus)
    if args.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=epochs, grace_period=grace, reduction_factor=2
        )
    else:
        scheduler = FIFOScheduler()
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=args.metric,
            mode="max",
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrency),
            scheduler=scheduler,
            num_samples=args.num_trials,
        ),
        run_config=tune.RunConfig(
            name=path.rsplit("/", 1)[-1],
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            callbacks=exit_hooks(),
        ),
    )
    grid = tuner.fit()
    sync_study(local_study, path, upload=True)
    return grid


def sweep_epochs(args: argparse.Namespace, space: SearchSpace) -> tuple[int, int]:
    """The trials' epoch budget and ASHA's grace period (clamped to the budget)."""
    epochs = space.config.get("epoch", Config().epoch)
    eval_every = space.config.get("eval_every", Config().eval_every)
    return asha_limits(epochs, eval_every, args.grace)


EXIT_HOOK = "WSL_RAY_TEST_EXIT_AFTER_FINAL"


class _ExitAfterFinalResult(tune.Callback):
    """Test hook: with WSL_RAY_TEST_EXIT_AFTER_FINAL=N the driver dies (exit code 99) right
    after trial N's final result, whose checkpoint is on storage by then, and before Tune
    records the trial as finished: the moment that a kill of the driver can hit."""

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # read now, not when built: Tuner.restore brings the callback back from the pickled
        # experiment, and the resumed sweep must run to its end
        number = os.environ.get(EXIT_HOOK)
        final = result.get("epoch") == trial.config.get("epoch", Config().epoch)
        if final and number and str(trial.experiment_tag).split("_")[0] == number:
            os._exit(99)


def exit_hooks() -> list[tune.Callback]:
    return [_ExitAfterFinalResult()] if os.environ.get(EXIT_HOOK) else []


def _default_gpus() -> float:
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _fitting_trials(args: argparse.Namespace, gpus: float) -> int:
    """How many trials the cluster fits at once, from its CPUs (and GPUs)."""
    resources = ray.cluster_resources()
    per_trial_cpus = args.workers_per_trial * args.cpus_per_trial
    fit = int(resources.get("CPU", 1) // max(per_trial_cpus, 1e-9))
    if gpus:
        fit = min(fit, int(resources.get("GPU", 0) // (gpus * args.workers_per_trial)))
    return max(1, fit)


def experiment_path(args: argparse.Namespace) -> str:
    name = args.name or Path(args.space).stem
    return f"{storage_uri(args.storage).rstrip('/')}/{name}"


def check_sweep_flags(args: argparse.Namespace) -> str | None:
    """The first problem with the sweep's own flags, or None."""
    positive = {
        "--num_trials": args.num_trials,
        "--concurrency": args.concurrency,
        "--workers-per-trial": args.workers_per_trial,
        "--grace": args.grace,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            return f"{flag} {value}: must be 1 or more"
    if args.gpus_per_trial is not None and args.gpus_per_trial < 0:
        return f"--gpus-per-trial {args.gpus_per_trial}: must be 0 or more"
    if args.cpus_per_trial < 0:
        return f"--cpus-per-trial {args.cpus_per_trial}: must be 0 or more"
    if args.max_failures < -1:
        return f"--max-failures {args.max_failures}: must be 0 or more (-1: retry forever)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problem := check_sweep_flags(args):
        parser.error(problem)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("WANDB_MODE", "offline")
    path = experiment_path(args)
    try:
        check_counts(args.confirm, args.seeds)
        if args.resume:  # the space and metric as the sweep ran them, from the experiment folder
            saved = f"{path}/search_space.yaml"
            try:
                text = read_text(saved)
            except FileNotFoundError:
                raise SpaceError(
                    f"--resume: no experiment to resume ({saved} is missing); "
                    "give its --name and --storage"
                ) from None
            space = parse_space(text, Path(path))
            args.metric = sweep_metric(path)
        else:
            space = load_space(args.space, overrides_from_args(args))
        space.check(workers=args.workers_per_trial, gpus=args.gpus_per_trial)
        sweep_epochs(args, space)  # Ray asserts grace_period <= max_t: settle it here
        space.config = absolute_paths(space.config)  # trials run in folders of their own
        default = Config.from_dict(space.resolve(space.default_point()))
        data = _check_data(default, space.name)
    except (SpaceError, ConfigError, FileNotFoundError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    baseline = untrained_baseline(default, data) if args.baseline else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run `finally`: stop our Ray
    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True)
    confirmed = None
    try:
        if args.gpus_per_trial is None:  # now the cluster's GPUs are known (--sync_bn needs one)
            space.check(workers=args.workers_per_trial, gpus=_default_gpus())
        # one copy per node, owned by this driver: a resumed sweep puts it again
        run_sweep(args, space, share_dataset(data, default))
        if not args.resume:
            write_text(f"{path}/sweep.json", json.dumps({"metric": args.metric}))
        if args.confirm:
            gpus = args.gpus_per_trial if args.gpus_per_trial is not None else _default_gpus()
            resources = {
                "workers": args.workers_per_trial,
                "gpus": gpus,
                "cpus": args.cpus_per_trial,
                "concurrency": _fitting_trials(args, gpus),  # order does not matter here
            }
            confirmed = run_confirmation(
                path,
                space,
                args.metric,
                args.confirm,
                args.seeds,
                args.seed,
                resources,
                args.max_failures,
            )
    except SpaceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()  # before the summary, so that no late worker log interleaves with it
    rows = summarize_sweep(path, args.metric, space, baseline)
    if confirmed:
        report(confirmed, args.metric, space)
    if not ranked(rows, args.metric):
        print(f"error: no trial finished with a {args.metric}", file=sys.stderr)
        return 1
    return 0


def untrained_baseline(cfg: Config, data: ImageData) -> dict[str, float]:
    """Validation k-NN and linear accuracy (and RankMe) of the encoder a run of `cfg`
    starts from."""
    device = resolve_device(cfg.device)
    model = initial_model(cfg, data.crop_size, device)
    print("evaluating the untrained encoder (--baseline) ...", flush=True)
    return evaluate_run(model, data.subset(cfg.subset), device, cfg)


def _check_data(cfg: Config, space_name: str) -> ImageData:
    """Loads the dataset once before Ray starts: missing files fail here, with the fix."""
    try:
        data = load_dataset(cfg.dataset, cfg.data_dir, val_size=cfg.val_size)
        data.subset(cfg.subset).val_indices()  # a --val_size that does not fit fails here
        return data
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}\nEvery node that runs trials needs the data at this same path (a shared "
            "file system, or a copy on each node). Or sweep the embedded data: "
            f"python -m wsl_ray.tune --space {space_name} --dataset shapes"
        ) from None


if __name__ == "__main__":
    sys.exit(main())
