"""Linear classification (SimSiam / CW-RGP protocol) on shapes: it learns, and resumes exactly."""

import json
import os

import pytest
import torch
import torch.nn.functional as F

from wsl_ray.config import Config
from wsl_ray.data import load_dataset
from wsl_ray.lincls import main
from wsl_ray.training.linear_eval import CHECKPOINT_FILE, accuracy
from wsl_ray.training.loop import initial_model
from wsl_ray.training.optim import cosine

ARGS = ["--subset", "512", "--bs", "32", "--lr", "0.05", "--crop_s0", "0.5"]


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    """Our checkpoint format around a narrow encoder given 4 quick supervised epochs on
    shapes: frozen features that a linear layer can use (random ones are at chance)."""
    os.environ["WSL_RAY_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    data = load_dataset("shapes").subset(512)
    cfg = Config(dataset="shapes", arch="resnet18_w4", emb=16, head_size=32, bs=64, w_size=32)
    model = initial_model(cfg, 32, torch.device("cpu"))
    head = torch.nn.Linear(model.out_size, 10)
    opt = torch.optim.Adam([*model.model.parameters(), *head.parameters()], lr=3e-3)
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    x = (data.train_x.float() / 255 - mean) / std
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        for idx in torch.randperm(len(x), generator=gen).split(32):
            loss = F.cross_entropy(head(model.model(x[idx])), data.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("ssl") / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


@pytest.fixture(scope="module")
def two_epochs(encoder_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("lincls")
    assert (
        main(["--fname", str(encoder_checkpoint), "--epochs", "2", "--out", str(out), *ARGS]) == 0
    )
    return out


def test_a_few_epochs_beat_chance_by_a_margin(two_epochs):
    history = [json.loads(line) for line in (two_epochs / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in history] == [1, 2]
    # chance is 0.10 and 0.50; measured here: 0.19 and 0.72 (512 test images, so the
    # thresholds are about 4 standard errors above chance)
    assert history[-1]["acc1"] > 0.15 and history[-1]["acc5"] > 0.6
    assert history[0]["lr"] == pytest.approx(0.05 * 32 / 256)


def test_a_resumed_run_continues_exactly(encoder_checkpoint, two_epochs, tmp_path):
    common = ["--fname", str(encoder_checkpoint), "--out", str(tmp_path), *ARGS]
    assert main([*common, "--epochs", "1"]) == 0  # stops after one epoch of two
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 1
    assert main([*common, "--epochs", "2", "--resume"]) == 0
    resumed = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    straight = torch.load(two_epochs / CHECKPOINT_FILE, weights_only=True)
    assert resumed["epoch"] == 2 and len(resumed["history"]) == 2
    for key, value in straight["linear"].items():
        assert torch.allclose(resumed["linear"][key], value, atol=1e-6), key


def test_cosine_schedule_and_topk():
    assert [cosine(0.4, e, 4) for e in range(4)] == pytest.approx(
        [0.4, 0.3414, 0.2, 0.0586], abs=1e-4
    )
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert accuracy(logits, torch.tensor([0, 0]), 1).item() == 0.5
    assert accuracy(logits, torch.tensor([0, 2]), 5).item() == 1.0  # k capped at the classes


def test_reference_checkpoint_needs_arch_and_dataset(tmp_path, capsys):
    ckpt = tmp_path / "ref.pth.tar"
    torch.save({"state_dict": {"module.model.conv1.weight": torch.zeros(8, 3, 3, 3)}}, ckpt)
    assert main(["--fname", str(ckpt), "--out", str(tmp_path)]) == 2
    assert "--arch: the checkpoint holds no config" in capsys.readouterr().err
