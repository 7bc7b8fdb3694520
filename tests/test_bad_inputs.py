"""Every bad input a user tried: one clear line naming the flag or file, before any work.

One table: each row is a command (entry point and arguments), the exit code it must end
with (2: a usage error) and a phrase its message must contain. The entry points run in this
process (`main(argv)`), which is 100x faster than a subprocess each; an uncaught exception
fails the row, so no row may end in a traceback. Rows that would start Ray must fail first:
after every row Ray is still not started. Add a row whenever a new flag arrives.

Placeholders in the arguments: {tmp} a fresh folder; {ckpt_text}, {ckpt_yaml}, {ckpt_object},
{ckpt_tensor}, {cifar_garbage}, {cifar_evil}, {stl_short}, {space_*}: the files made by
`bad_files` below.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
from pathlib import Path

import pytest
import torch

from analysis.__main__ import main as analysis_main
from benchmarks.bench_train import main as bench_train_main
from benchmarks.profile_step import main as profile_step_main
from wsl_ray.confirm import main as confirm_main
from wsl_ray.export import main as export_main
from wsl_ray.lincls import main as lincls_main
from wsl_ray.test import main as evaluate_main
from wsl_ray.train import main as train_main
from wsl_ray.tune import main as tune_main

ENTRY = {
    "train": train_main,
    "test": evaluate_main,
    "tune": tune_main,
    "analysis": analysis_main,
    "lincls": lincls_main,
    "export": export_main,
    "confirm": confirm_main,
}
SWEEP = str(Path(__file__).parent / "fixtures" / "sweep_val")  # a finished sweep's folder
LEGACY = str(Path(__file__).parent / "fixtures" / "sweep_wmse")  # from before the val split
TUNE = ("tune", "--storage", "{tmp}/sweeps")
TRAIN = ("train", "--out", "{tmp}/run")
SHAPES = (*TRAIN, "--dataset", "shapes")
STORED = ("tune", "--storage", "{store}")  # experiments made by `stored_experiments`
RESUME = (*STORED, "--name", "done", "--resume")
LEJEPA = ("train", "--method", "lejepa")

ROWS = [
    # training flags accepted silently before
    (("train", "--knn", "0"), 2, "--knn 0: must be 1 or more"),
    (("train", "--subset", "-5"), 2, "--subset -5: must be 1 or more"),
    (("train", "--epoch", "0"), 2, "--epoch 0: must be 1 or more"),
    (("train", "--lr", "0"), 2, "--lr 0.0: must be a number > 0"),
    (("train", "--lr", "nan"), 2, "--lr nan"),
    (("train", "--hf_p", "1.5"), 2, "--hf_p 1.5: must be in [0, 1]"),
    (("train", "--crop_s0", "0.9", "--crop_s1", "0.5"), 2, "need 0 < crop_s0 <= crop_s1"),
    (("train", "--drop", "-3"), 2, "--drop [-3]"),
    (("train", "--device", "gpu"), 2, "--device 'gpu': use auto, cpu, cuda or cuda:N"),
    (("train", "--cuda_graph", "on", "--device", "cpu"), 2, "--cuda_graph on needs --device cuda"),
    (("train", "--cuda_graph", "yes"), 2, "--cuda_graph: invalid choice"),
    # ZeroDivisionError before; --ckpt_every 0 failed after the first epoch
    (("train", "--w_size", "0"), 2, "--w_size 0: must be 1 or more"),
    (("train", "--eval_every", "0"), 2, "--eval_every 0: must be 1 or more"),
    (("train", "--ckpt_every", "0"), 2, "--ckpt_every 0: must be 1 or more"),
    (("train", "--w_size", "100"), 2, "--w_size 100 must divide the per-worker batch 512"),
    (("train", "--workers", "-1"), 2, "--workers -1"),
    (("train", "--cpus-per-worker", "0"), 2, "--cpus-per-worker 0"),
    (("train", "--emb", "abc"), 2, "--emb: invalid int value"),
    (("train", "--method", "simclr"), 2, "--method: invalid choice"),
    (("train", "--arch", "vgg"), 2, "unknown --arch 'vgg'"),
    (("train", "--sync_bn"), 2, "--sync_bn needs GPU workers"),
    (("train", "--method", "vicreg", "--num_samples", "4"), 2, "takes exactly 2 views"),
    (("train", "--method", "w_mse", "--w_axis", "channel"), 2, "use --method whitened_mse"),
    (("train", "--recipe", "wmse_mnist"), 2, "unknown --recipe 'wmse_mnist'"),
    (("train", "--config", "{tmp}/none.yaml"), 2, "--config {tmp}/none.yaml: no such file"),
    # INTL's options and the flags it brought (issue #27)
    (("train", "--method", "intl", "--intl_iters", "0"), 2, "--intl_iters 0: must be in [1, 64]"),
    (("train", "--method", "intl", "--intl_axis", "rows"), 2, "--intl_axis: invalid choice"),
    # every count of work repeated in each step has an upper bound (issue 37)
    (("train", "--method", "intl", "--intl_iters", "100000000"), 2, "must be in [1, 64]"),
    (("train", "--w_iter", "1000"), 2, "--w_iter 1000: must be in [1, 64]"),
    (("train", "--num_samples", "1"), 2, "--num_samples 1: must be in [2, 32]"),
    (("train", "--head_layers", "17"), 2, "--head_layers 17: must be in [1, 16]"),
    ((*LEJEPA, "--sigreg_slices", "99999"), 2, "--sigreg_slices 99999: must be in [1, 16384]"),
    ((*LEJEPA, "--sigreg_points", "1001"), 2, "--sigreg_points 1001: must be in [3, 257]"),
    (("train", "--method", "intl", "--intl_tl_w", "-1"), 2, "--intl_tl_w -1.0: must be 0 or more"),
    (("train", "--method", "intl", "--intl_m", "1.5"), 2, "--intl_m 1.5: must be in [0, 1]"),
    (("train", "--method", "intl", "--bs", "4"), 2, "use --bs 8 or more, or set --intl_tl_w"),
    # LeJEPA's options (issue 39)
    ((*LEJEPA, "--lejepa_lambda", "1.5"), 2, "--lejepa_lambda 1.5: must be in [0, 1]"),
    ((*LEJEPA, "--sigreg_slices", "0"), 2, "--sigreg_slices 0: must be in [1, 16384]"),
    ((*LEJEPA, "--sigreg_points", "16"), 2, "--sigreg_points 16: must be odd"),
    ((*LEJEPA, "--sigreg_t_max", "0"), 2, "--sigreg_t_max 0.0: must be > 0"),
    (("train", "--solarize_p", "1.5"), 2, "--solarize_p [1.5]: probabilities must be in [0, 1]"),
    (("train", "--solarize_p", "0", "0.1", "0.2"), 2, "give one probability, or one per view"),
    (("train", "--blur_p", "-0.1"), 2, "--blur_p [-0.1]: probabilities must be in [0, 1]"),
    (("train", "--warmup_epochs", "0"), 2, "--warmup_epochs 0: must be 1 or more (or unset)"),
    (("train", "--w_matrix", "iternorm"), 2, "--w_matrix iternorm contradicts it"),
    # values by their meaning: a seed the runs can derive seeds from, a momentum below 1, a
    # width of 1 or more, a k-NN with enough images to vote
    (("train", "--seed", str(2**64)), 2, f"--seed {2**64}: must be in [0, 2**53)"),
    (("train", "--seed", "-1"), 2, "--seed -1: must be in [0, 2**53)"),
    (("train", "--optimizer", "sgd", "--momentum", "2"), 2, "--momentum 2.0: must be in [0, 1)"),
    (("train", "--arch", "resnet18_w0"), 2, "unknown --arch 'resnet18_w0'"),
    ((*SHAPES, "--subset", "200", "--knn", "500"), 2, "--knn 500 is more than the 200 classifier"),
    (("train", "--config", "{config_bad_yaml}"), 2, "not valid YAML (line"),
    # --resume continues a run that exists, and nothing else
    ((*SHAPES, "--resume"), 2, "--resume: nothing to continue, {tmp}/run/checkpoint.pt does not"),
    ((*SHAPES, "--resume", "--fname", "{ckpt_tensor}"), 2, "give one of them"),
    # files
    ((*SHAPES, "--out", "/proc/wsl_ray_no"), 2, "--out /proc/wsl_ray_no: cannot create"),
    ((*SHAPES, "--resume", "--out", "{ckpt_dir_corrupt}"), 2, "not a readable PyTorch checkpoint"),
    ((*SHAPES, "--fname", "{tmp}/none.pt"), 2, "--fname {tmp}/none.pt: no such checkpoint"),
    ((*SHAPES, "--fname", "{ckpt_object}"), 2, "refused, it holds objects other than"),
    ((*TRAIN, "--dataset", "nope"), 2, "unknown --dataset 'nope'; choose one of"),
    # checked before Ray starts, not inside a worker
    ((*TRAIN, "--dataset", "cifar01", "--workers", "2"), 2, "unknown --dataset 'cifar01'; choo"),
    ((*TRAIN, "--data_dir", "{tmp}/empty"), 2, "CIFAR-10 not found: looked for"),
    ((*TRAIN, "--data_dir", "{cifar_garbage}"), 2, "data_batch_1 is not a CIFAR-10 batch"),
    ((*TRAIN, "--data_dir", "{cifar_evil}"), 2, "refusing global posix.system"),
    ((*TRAIN, "--data_dir", "{cifar_labels}"), 2, "batch has labels from 0 to 49, outside [0, 10)"),
    (
        (*TRAIN, "--data_dir", "{cifar_short}"),
        2,
        "data_batch_1: this CIFAR-10 batch has 150 labels",
    ),
    (
        (*TRAIN, "--dataset", "stl10", "--data_dir", "{stl_short}"),
        2,
        "unlabeled_X.bin is not an STL-10 image file",
    ),
    # evaluation of a checkpoint
    (("test", "--fname", "{tmp}/none.pt"), 2, "--fname {tmp}/none.pt: no such checkpoint file"),
    (("test", "--fname", "{ckpt_text}"), 2, "is not a readable PyTorch checkpoint"),
    (("test", "--fname", "{ckpt_yaml}"), 2, "is not a readable PyTorch checkpoint"),
    (("test", "--fname", "{ckpt_object}"), 2, "weights_only=True loads no code"),
    (("test", "--fname", "{ckpt_tensor}"), 2, "holds a Tensor, not a checkpoint"),
    (("test", "--knn", "0"), 2, "--knn 0: must be 1 or more"),
    (("test", "--fname", "{ckpt_lincls}"), 2, "is a lincls checkpoint (a linear classifier"),
    (("test", "--fname", "{ckpt_backbone}"), 2, "looks like an exported backbone"),
    # linear classification and export of a checkpoint
    (("lincls", "--fname", "{tmp}/none.pt"), 2, "--fname {tmp}/none.pt: no such checkpoint"),
    (("lincls", "--fname", "{ckpt_text}"), 2, "is not a readable PyTorch checkpoint"),
    (("lincls", "--fname", "{ckpt_tensor}", "--epochs", "0"), 2, "--epochs 0: must be at least 1"),
    (("lincls", "--fname", "{ckpt_tensor}", "--lr", "nan"), 2, "--lr nan: must be a number > 0"),
    (("lincls", "--fname", "{ckpt_tensor}", "--lr", "-1"), 2, "--lr -1.0: must be a number > 0"),
    (("lincls", "--fname", "{ckpt_tensor}", "--momentum", "nan"), 2, "--momentum nan: must be"),
    (("lincls", "--fname", "{ckpt_tensor}", "--crop_s0", "0"), 2, "--crop_s0 0.0: must be an"),
    (("lincls", "--fname", "{ckpt_tensor}", "--crop_s0", "2"), 2, "--crop_s0 2.0: must be an"),
    (("lincls", "--fname", "{ckpt_tensor}", "--out", "{ckpt_text}"), 2, "cannot create this"),
    (
        ("lincls", "--fname", "{ckpt_tensor}", "--out", "{tmp}/empty", "--resume"),
        2,
        "--resume: nothing to continue, {tmp}/empty/lincls.pt does not exist",
    ),
    (("export", "{tmp}/none.pt", "--out", "{tmp}/b.pt"), 2, "checkpoint {tmp}/none.pt: no such"),
    (
        ("export", "{ckpt_tensor}", "--out", "{tmp}/bb.safetensors", "--format", "torchvision"),
        2,
        "names a safetensors file, not --format torchvision; end it in .pt",
    ),
    (("export", "{ckpt_tensor}", "--out", "{tmp}"), 2, "is a folder; give the file to write"),
    (("export", "{ckpt_tensor}", "--out", "/proc/no/b.pt"), 2, "--out's folder /proc/no: cannot"),
    (("export", "{ckpt_object}", "--out", "{tmp}/b.pt"), 2, "weights_only=True loads no code"),
    # sweeps: every row fails before Ray starts
    ((*TUNE, "--num_trials", "-1"), 2, "--num_trials -1: must be 1 or more"),
    ((*TUNE, "--concurrency", "0"), 2, "--concurrency 0: must be 1 or more"),
    ((*TUNE, "--scheduler", "fifo", "--grace", "3"), 2, "--grace 3 is ASHA's grace period, and"),
    ((*TUNE, "--plan", "--resume"), 2, "--plan plans a new sweep: drop --resume"),
    # the power of a confirmation (issue 36): a spread and a gain in points, read by --plan
    ((*TUNE, "--plan", "--seed_spread", "0"), 2, "--seed_spread 0.0: give points of the test"),
    ((*TUNE, "--plan", "--detect", "inf"), 2, "--detect inf: give points of the test metric"),
    ((*TUNE, "--detect", "3"), 2, "--detect is read by --plan only: add --plan, or drop"),
    ((*TUNE, "--max-failures", "-2"), 2, "--max-failures -2"),
    ((*TUNE, "--epochs", "0"), 2, "--epoch 0: must be 1 or more"),
    ((*TUNE, "--eval_every", "0"), 2, "--eval_every 0: must be 1 or more"),
    ((*TUNE, "--set", "emb=abc"), 2, "--emb 'abc': must be an integer"),
    ((*TUNE, "--set", "head_size=abc"), 2, "--head_size 'abc': must be an integer"),
    ((*TUNE, "--set", "lr=-1e-3"), 2, "--lr -0.001: must be a number > 0"),
    ((*TUNE, "--set", "knn"), 2, "--set 'knn': write KEY=VALUE"),
    ((*TUNE, "--set", "cuda_graph=no"), 2, "--cuda_graph 'no': one of auto, on, off"),
    ((*TUNE, "--set", "nosuch=1"), 2, "config key 'nosuch' is not a training flag"),
    (
        (*TUNE, "--dataset", "shapes", "--set", "val_size=20000"),
        2,
        "--val_size 20000 gives 20000 validation images",
    ),
    ((*TUNE, "--space", "nosuch"), 2, "no search space 'nosuch'"),
    ((*TUNE, "--space", "{space_list}"), 2, "a search space is a YAML mapping"),
    ((*TUNE, "--space", "{space_bad_yaml}"), 2, "not valid YAML"),
    ((*TUNE, "--space", "{space_lr_uniform}"), 2, "lr=0.0: --lr 0.0: must be a number > 0"),
    ((*TUNE, "--space", "{space_int_inside}"), 2, "w_size=96: --w_size 96 must divide"),
    ((*TUNE, "--resume", "--name", "never"), 2, "--resume: no experiment to resume"),
    # one experiment per name: a plain name, a new sweep never over an old one, a resume of
    # the stored sweep only, one driver at a time
    ((*TUNE, "--name", "../../escape"), 2, "--name '../../escape': give a plain name"),
    ((*TUNE, "--space", "{tmp}/.x.yaml"), 2, "--name (from --space) '.x': give a plain name"),
    ((*STORED, "--name", "done"), 2, "exists already; continue it with --resume"),
    ((*RESUME, "--set", "lr=0.1"), 2, "params lr: stored {{"),
    ((*RESUME, "--epochs", "5"), 2, "config epoch: stored 2, given 5"),
    ((*RESUME, "--metric", "rankme"), 2, "--metric rankme: this experiment selects on val_acc"),
    ((*RESUME, "--num_trials", "9"), 2, "--num_trials 9: this experiment ran with 3"),
    ((*STORED, "--name", "live", "--resume"), 2, "another driver runs this experiment (PID"),
    ((*STORED, "--name", "nostate", "--resume"), 2, "holds no Tune experiment"),
    (("tune", "--storage", "{ckpt_text}"), 2, "--storage {ckpt_text}: cannot create this folder"),
    ((*TUNE, "--data_dir", "{tmp}/empty"), 2, "needs the data at this same path"),
    ((*TUNE, "--set", "sync_bn=true", "--gpus-per-trial", "0"), 2, "--sync_bn needs GPU workers"),
    # trial resources: a CPU share > 0, GPUs a fraction of one or whole ones
    ((*TUNE, "--cpus-per-trial", "0"), 2, "--cpus-per-trial 0.0: must be a number > 0"),
    ((*TUNE, "--cpus-per-trial", "nan"), 2, "--cpus-per-trial nan: must be a number > 0"),
    ((*TUNE, "--gpus-per-trial", "1.5"), 2, "give a fraction of one GPU, or whole GPUs"),
    ((*TUNE, "--wait-for-resources", "-1"), 2, "--wait-for-resources -1.0: give seconds"),
    ((*TUNE, "--set", "seed=5"), 2, "--set seed=5: use the sweep's --seed"),
    ((*TUNE, "--optuna-storage", "/proc/no/j.journal"), 2, "--optuna-storage /proc/no/j.journal"),
    # --warm_start: an earlier experiment of the same metric and parameters (issue #24)
    ((*TUNE, "--warm_start", "{tmp}/nosuch"), 2, "nosuch: no such experiment folder or Optuna"),
    ((*TUNE, "--warm_start", "{tmp}/empty"), 2, "not an experiment folder (it has no sweep.json"),
    ((*TUNE, "--warm_start", "{ckpt_text}"), 2, "a file, but not the Optuna journal of one study"),
    ((*TUNE, "--warm_start", "{store}/done"), 2, "no trials found (a trial folder holds"),
    (
        (*TUNE, "--space", "{space_lr_only}", "--warm_start", "{store}/done"),
        2,
        "it searched emb, w_ratio, which the space 'lr_only' does not",
    ),
    (
        (*TUNE, "--warm_start", "{store}/done", "--metric", "rankme"),
        2,
        "selected on val_acc_knn (max), this sweep on rankme (max); give --metric val_acc_knn",
    ),
    ((*TUNE, "--warm_start_top", "-1"), 2, "--warm_start_top -1: must be 0 or more"),
    ((*TUNE, "--warm_start_top", "2"), 2, "--warm_start_top 2 needs --warm_start PATH"),
    ((*RESUME, "--warm_start", "{store}/done"), 2, "--warm_start seeds a new sweep's study"),
    (("export", "{ckpt_tensor}", "--out", ""), 2, "--out '': give the file to write"),
    (
        ("analysis", "collect", SWEEP, "--out", "/proc/x.parquet"),
        2,
        "--out /proc/x.parquet: cannot",
    ),
    (("train", "--out", ""), 2, "--out '': give a path"),
    (("lincls", "--fname", "{ckpt_tensor}", "--subset", "0"), 2, "--subset 0: must be at least 1"),
    (("analysis", "tables", SWEEP, "--kind", "top", "--top", "0"), 2, "--top 0: show at least"),
    (
        (*TUNE, "--gpus-per-trial", "0.5", "--workers-per-trial", "2"),
        2,
        "several workers cannot share one GPU",
    ),
    # confirmation of a finished sweep: checked before Ray starts
    (("confirm", SWEEP, "--confirm", "0"), 2, "--confirm 0: give how many top configurations"),
    (("confirm", SWEEP, "--metric", "bogus"), 2, "--metric: invalid choice: 'bogus'"),
    (("confirm", SWEEP, "--seeds", "1"), 2, "--seeds 1: a confirmation needs at least 2"),
    (("confirm", SWEEP, "--gpus-per-trial", "-1"), 2, "--gpus-per-trial -1.0: must be a number"),
    (("confirm", "{tmp}/nosuch"), 2, "nosuch: no such experiment folder"),
    # analysis outputs that cannot be written, inputs that do not exist
    (
        ("analysis", "collect", "{tmp}", "--out", "/missing/x.parquet"),
        2,
        "--out /missing/x.parquet: the folder /missing does not exist",
    ),
    (
        ("analysis", "plots", "{tmp}", "--out", "{ckpt_text}/plots"),
        2,
        "plots: cannot create this folder",
    ),
    (("analysis", "collect", "{tmp}/nosuch"), 2, "no such experiment folder"),
    (("analysis", "tables", "{parquet_no_status}"), 2, "lacks the column(s) ['status']"),
    (("analysis", "plots", "{parquet_no_history}"), 2, "lacks the column(s) ['history']"),
    # a metric the table lacks: an error naming it and the table's metric columns, not an
    # empty table
    (("analysis", "tables", SWEEP, "--metric", "bogus"), 2, "--metric bogus: " + SWEEP),
    (("analysis", "tables", SWEEP, "--kind", "top", "--metric", "x"), 2, "has no column 'x'"),
    (("analysis", "rungs", SWEEP, "--metric", "val_acc_9"), 2, "metric columns: val_acc,"),
    (("analysis", "tables", "{parquet_no_test_acc}"), 2, "--kind paper reads test_acc: "),
    (("analysis", "rankme", "{ckpt_text}.parquet"), 2, "no such Parquet file"),
    (("analysis", "tables", "{parquet_text}"), 2, "not a readable Parquet file"),
    # label-free metrics (issue #38): LiDAR is opt-in, and a sweep cannot select on it without
    ((*TRAIN, "--label_free", "all"), 2, "--label_free: invalid choice: 'all'"),
    ((*TUNE, "--set", "label_free=all"), 2, "--label_free 'all': one of spectral, lidar"),
    ((*TUNE, "--metric", "lidar"), 2, "--metric lidar: the trials compute no LiDAR; add --set"),
    ((*TUNE, "--metric", "alpha"), 2, "--metric: invalid choice: 'alpha'"),
    (("analysis", "agreement", "{tmp}/nosuch"), 2, "no such experiment folder"),
    (("analysis", "agreement", SWEEP, "--format", "html"), 2, "--format: invalid choice"),
    (("analysis", "agreement", LEGACY), 2, "no finished or stopped trial has val_acc_knn"),
]


class Anything:
    """Not a tensor, number, string or container: weights_only=True must refuse it."""


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "empty").mkdir()
    files = {"tmp": str(tmp)}

    def write(name: str, data: bytes | str) -> str:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(path)

    files["ckpt_text"] = write("text.pt", "not a checkpoint")
    files["ckpt_yaml"] = write("config.yaml", "a: [\n")  # the unpickler underflows its stack
    torch.save({"model": {}, "thing": Anything()}, tmp / "object.pt")
    files["ckpt_object"] = str(tmp / "object.pt")
    torch.save(torch.zeros(3), tmp / "tensor.pt")
    files["ckpt_tensor"] = str(tmp / "tensor.pt")
    linear = {"weight": torch.zeros(10, 8), "bias": torch.zeros(10)}
    torch.save({"linear": linear, "optimizer": {}, "epoch": 1}, tmp / "lincls.pt")
    files["ckpt_lincls"] = str(tmp / "lincls.pt")
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3)}, tmp / "backbone.pt")  # as exported
    files["ckpt_backbone"] = str(tmp / "backbone.pt")
    write("corrupt/checkpoint.pt", b"PK\x03\x04 truncated")
    files["ckpt_dir_corrupt"] = str(tmp / "corrupt")
    write("garbage/cifar-10-batches-py/data_batch_1", b"\x80\x04garbage")
    files["cifar_garbage"] = str(tmp / "garbage")
    write("evil/cifar-10-batches-py/data_batch_1", pickle.dumps(Evil()))
    files["cifar_evil"] = str(tmp / "evil")
    import numpy as np

    images = np.zeros((200, 3072), dtype=np.uint8)
    for name, labels in (("labels", [i % 50 for i in range(200)]), ("short", [0] * 150)):
        batch = pickle.dumps({"data": images, "labels": labels})
        files[f"cifar_{name}"] = str(
            Path(write(f"{name}/cifar-10-batches-py/data_batch_1", batch)).parents[1]
        )
    write("stl/stl10_binary/unlabeled_X.bin", b"\x00" * 10)
    files["stl_short"] = str(tmp / "stl")
    files["space_list"] = write("list.yaml", "- lr\n- emb\n")
    files["space_bad_yaml"] = write("bad_yaml.yaml", "params: {lr: [\n")
    files["space_lr_uniform"] = write(
        "lr_uniform.yaml",
        "config: {dataset: shapes, bs: 128, emb: 16, w_size: 32}\n"
        "params: {lr: {distribution: uniform, low: 0.0, high: 1.0e-2}}\n",
    )
    files["space_int_inside"] = write(  # the ends 64 and 128 divide bs 256; 96 does not
        "int_inside.yaml",
        "config: {dataset: shapes, bs: 256, emb: 16}\n"
        "params: {w_size: {distribution: int, low: 64, high: 128, step: 32}}\n",
    )
    files["space_lr_only"] = write(
        "lr_only.yaml",
        "config: {dataset: shapes, bs: 128, emb: 16, w_size: 32}\n"
        "params: {lr: {distribution: loguniform, low: 1.0e-4, high: 1.0e-2}}\n",
    )
    files["config_bad_yaml"] = write("bad_config.yaml", "lr: 0.1\nemb: [1,\n")
    files["parquet_text"] = write("text.parquet", "not parquet")
    import pyarrow.parquet as pq

    results = pq.read_table(Path(SWEEP) / "results.parquet")
    for column in ("status", "history", "test_acc"):
        files[f"parquet_no_{column}"] = str(tmp / f"no_{column}.parquet")
        pq.write_table(results.drop([column]), files[f"parquet_no_{column}"])
    stored_experiments(tmp / "store")
    files["store"] = str(tmp / "store")
    return files


def stored_experiments(store: Path) -> None:
    """Experiment folders as a sweep leaves them, for the rows above: `done` (stopped, no
    driver), `live` (its driver, this process, runs) and `nostate` (stopped before Tune
    wrote its state). Their record: the tests' tiny space, 2 epochs, 3 trials."""
    import os
    import socket

    from helpers import SPACE

    from wsl_ray.data.paths import absolute_paths
    from wsl_ray.sweep.experiment import write_record
    from wsl_ray.sweep.space import parse_space

    space = parse_space(SPACE, Path("tiny.yaml"), {"epoch": 2, "seed": 0, "eval_on": "val"})
    space.config = absolute_paths(space.config)
    for name in ("done", "live", "nostate"):
        settings = {"num_trials": 3, "scheduler": "fifo", "seed": 0}
        write_record(str(store / name), "val_acc_knn", "max", space.to_yaml(), settings)
        if name != "nostate":
            (store / name / "tuner.pkl").write_bytes(b"")
    lock = {"pid": os.getpid(), "host": socket.gethostname(), "since": 0}
    (store / "live" / "driver.lock").write_text(json.dumps(lock))


class Evil:
    """A pickle that would run `touch` when loaded: the restricted Unpickler must refuse it."""

    target = "/tmp/wsl_ray_bad_input_pwned"

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.target}",)


def run(argv: list[str]) -> tuple[int, str]:
    """Runs an entry point in this process: its exit code and what it printed to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = ENTRY[argv[0]](argv[1:])
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    return code, err.getvalue()


@pytest.mark.parametrize("command,code,phrase", ROWS, ids=[" ".join(r[0]) for r in ROWS])
def test_bad_input_gives_one_clear_line(command, code, phrase, bad_files, monkeypatch, tmp_path):
    import ray

    monkeypatch.setenv("WSL_RAY_CACHE", bad_files["tmp"] + "/cache")  # shapes made once
    argv = [part.format(**bad_files) for part in command]
    got, stderr = run(argv)
    assert (got, "Traceback" in stderr) == (code, False), stderr
    assert phrase.format(**bad_files) in stderr, stderr
    assert "error" in stderr
    lines = stderr.strip().splitlines()
    error_at = next(i for i, line in enumerate(lines) if "error" in line)
    assert len(lines) - error_at <= 2, stderr  # one line, plus at most a hint (after notes)
    assert not ray.is_initialized()
    assert not Path(bad_files["tmp"], "run", "metrics.jsonl").exists()  # nothing trained
    assert not list(Path(bad_files["tmp"], "sweeps").glob("*"))  # no experiment folder left


# The benchmarks' own flags (argparse's usage text before the error line, exit 2)
BENCHMARKS = {"bench_train": bench_train_main, "profile_step": profile_step_main}
BENCHMARK_ROWS = [
    (("bench_train", "--compile", "on", "--cuda_graph", "on"), "a compiled encoder is never"),
    (("bench_train", "--cuda_graph", "yes"), "--cuda_graph: invalid choice"),
    (("profile_step", "--cuda_graph", "on", "--device", "cpu"), "--cuda_graph on needs a CUDA"),
    (("profile_step", "--cuda_graph", "sometimes"), "--cuda_graph: invalid choice"),
]


@pytest.mark.parametrize(
    "command,phrase", BENCHMARK_ROWS, ids=[" ".join(r[0]) for r in BENCHMARK_ROWS]
)
def test_bad_benchmark_flags_are_refused_before_any_work(command, phrase):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        BENCHMARKS[command[0]](list(command[1:]))
    assert exit_.value.code == 2 and phrase in err.getvalue(), err.getvalue()


@pytest.mark.parametrize("command", sorted(ENTRY))
def test_every_commands_usage_error_is_one_line_and_a_hint(command):
    code, stderr = run([command, "--no_such_flag"])
    assert code == 2 and len(stderr.strip().splitlines()) == 2, stderr
    line, hint = stderr.strip().splitlines()
    assert "error: " in line and "--help" in hint


def test_crafted_cifar_pickle_is_refused_and_runs_nothing(bad_files):
    from pathlib import Path

    from wsl_ray.data.sources import read_cifar

    Path(Evil.target).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="refusing global posix.system"):
        read_cifar(Path(bad_files["cifar_evil"]), 10)
    assert not Path(Evil.target).exists()
    # the file is a real threat: plain pickle runs its command
    pickle.loads(Path(bad_files["cifar_evil"], "cifar-10-batches-py/data_batch_1").read_bytes())
    assert Path(Evil.target).exists()
    Path(Evil.target).unlink()


@pytest.mark.parametrize("core", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_genuine_cifar_pickles_still_load(tmp_path, core):
    """Batches naming numpy 2's numpy._core and numpy 1's numpy.core (as the original files
    do): a dict of a uint8 array and a label list, read into [N, 3, 32, 32]."""
    import numpy as np

    from wsl_ray.data.sources import read_cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    raw = pickle.dumps({"data": images, "labels": [3, 7]}, protocol=3)  # text GLOBALs
    raw = raw.replace(b"numpy._core.multiarray", core.encode())
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(raw)
    data = read_cifar(tmp_path, 10)
    assert data["train_x"].shape == (10, 3, 32, 32) and data["test_y"].tolist() == [3, 7]
    assert data["train_x"][1, 2, 31, 31].item() == (2 * 3072 - 1) % 256


def test_paths_are_made_absolute_where_the_command_runs(tmp_path, monkeypatch):
    """Ray workers run in folders of their own: a trial gets absolute paths, and an unset
    --data_dir becomes the dataset's default folder under the directory of the command."""
    from wsl_ray.data.paths import absolute_paths

    monkeypatch.chdir(tmp_path)
    assert absolute_paths({"dataset": "cifar10"})["data_dir"] == str(tmp_path / "data")
    assert absolute_paths({})["data_dir"] == str(tmp_path / "data")  # cifar10 by default
    assert "data_dir" not in absolute_paths({"dataset": "shapes"})  # generated: no folder
    got = absolute_paths({"fname": "w.pt", "out": "runs", "data_dir": "s3://bucket/d"})
    assert got == {
        "fname": str(tmp_path / "w.pt"),
        "out": str(tmp_path / "runs"),
        "data_dir": "s3://bucket/d",
    }


def test_the_docs_count_this_table():
    text = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    assert (
        f"**{len(ROWS)} bad inputs**" in text and f"**all {len(ROWS)} give a clear error**" in text
    )
