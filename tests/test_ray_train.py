"""The training loop as a real 2-worker Ray Train TorchTrainer (DDP over gloo) on CPU."""

import os

import pytest
import ray
import torch
from helpers import offline_runs

from wsl_ray.config import Config
from wsl_ray.data import load_dataset
from wsl_ray.data.shared import share_dataset, shared_dataset
from wsl_ray.training.checkpoint import CHECKPOINT_FILE
from wsl_ray.training.runner import make_trainer


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    os.environ["WSL_RAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"WSL_RAY_CACHE": os.environ["WSL_RAY_CACHE"]}},
    )
    yield
    ray.shutdown()


def test_two_worker_cpu_run_completes_and_reports(local_ray, tmp_path):
    cfg = Config(
        dataset="shapes",
        arch="resnet18_w8",
        bs=64,
        emb=8,
        w_size=32,
        head_size=32,
        epoch=1,
        lr_warmup=False,
        w_eps=0.01,
        eval_every=1,
        subset=511,
        wandb="proj",
    )
    # per-worker batch 32 is a multiple of w_size; 2 x 1 CPU fits the 2-CPU local Ray.
    # 511 images split 256 / 255: unequal shards would give 8 vs 7 batches and hang DDP
    wandb = {"run_id": "trial_7", "group": "sweep", "log_dir": str(tmp_path / "logs")}
    # the workers map it, load nothing
    shared = share_dataset(load_dataset("shapes"), cfg.dataset, cfg.data_dir)
    trainer = make_trainer(
        cfg,
        workers=2,
        storage_path=str(tmp_path),
        name="train-test",
        wandb=wandb,
        shared_data=shared,
    )
    result = trainer.fit()
    assert result.error is None
    assert result.metrics["epoch"] == 1 and 0 <= result.metrics["acc_knn"] <= 1
    with result.checkpoint.as_directory() as folder:
        saved = torch.load(os.path.join(folder, CHECKPOINT_FILE), weights_only=True)
    assert saved["epoch"] == 1 and saved["config"]["bs"] == 64
    # one wandb run, from rank 0 only, with the trial's id and the sweep's group
    (run,) = offline_runs(tmp_path / "logs")
    assert (run["id"], run["group"], run["steps"]) == ("trial_7", "sweep", [1])


def test_the_shared_dataset_is_mapped_read_only_from_the_object_store(local_ray):
    data = load_dataset("shapes")
    cfg = Config(dataset="shapes")
    shared = share_dataset(data, cfg.dataset, cfg.data_dir)
    mapped = shared_dataset(shared, cfg.dataset, cfg.data_dir)
    for role in ("train_x", "train_y", "clf_x", "clf_y", "test_x", "test_y"):
        assert torch.equal(getattr(mapped, role), getattr(data, role))
    stored = ray.get(shared["ref"])["arrays"]["train_x"]
    assert not stored.flags.writeable and not stored.flags.owndata  # mapped from the store
    assert mapped.clf_x.data_ptr() == mapped.train_x.data_ptr()  # the clf set is not stored twice
    assert (mapped.mean, mapped.crop_size, mapped.num_classes) == (data.mean, 32, 10)
    assert shared_dataset(shared, "cifar10", cfg.data_dir) is None  # another dataset: load it


def test_lincls_runs_as_a_two_worker_ray_train_job(local_ray, tmp_path):
    from wsl_ray.lincls import build_parser
    from wsl_ray.training.linear_runner import train_linear_with_ray
    from wsl_ray.training.loop import initial_model

    cfg = Config(dataset="shapes", arch="resnet18_w8", emb=8, w_size=32, head_size=32, bs=64)
    ckpt = tmp_path / "ssl.pt"
    torch.save(
        {
            "model": initial_model(cfg, 32, torch.device("cpu")).state_dict(),
            "config": cfg.to_dict(),
        },
        ckpt,
    )
    args = build_parser().parse_args(
        [
            "--fname",
            str(ckpt),
            "--subset",
            "256",
            "--epochs",
            "1",
            "--bs",
            "64",
            "--workers",
            "2",
            "--out",
            str(tmp_path / "lincls"),
        ]
    )
    summary = train_linear_with_ray(args)  # 2 DDP ranks of 32 images a batch, over gloo
    assert summary["epochs"] == 1 and 0 <= summary["acc1"] <= summary["acc5"] <= 1
