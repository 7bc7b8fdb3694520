"""`python -m wsl_ray.export`: the encoder alone, loadable into a plain torchvision ResNet."""

import json

import pytest
import torch

from wsl_ray.config import Config
from wsl_ray.export import main, torchvision_backbone
from wsl_ray.methods import get_method


def checkpoint(tmp_path, arch, dataset, image_size, method="byol"):
    """A checkpoint of a method whose every weight and BN statistic is random (not init)."""
    cfg = Config(arch=arch, dataset=dataset, method=method, emb=16, head_size=32)
    torch.manual_seed(0)
    model = get_method(method)(cfg, image_size)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) * 0.2 + (0.9 if "running_var" in name else 0))
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 3}, path)
    return path, model.model.eval()


@pytest.mark.parametrize(
    "arch, dataset, size",
    [("resnet18", "cifar10", 32), ("resnet50", "stl10", 64), ("resnet34", "imagenet100", 224)],
)
def test_torchvision_export_loads_strictly_and_gives_the_same_features(
    tmp_path, arch, dataset, size
):
    path, encoder = checkpoint(tmp_path, arch, dataset, size)
    assert main([str(tmp_path), "--out", str(tmp_path / "backbone.pt")]) == 0
    net = torchvision_backbone(arch, size)
    net.load_state_dict(torch.load(tmp_path / "backbone.pt", weights_only=True), strict=True)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), encoder(x), rtol=0, atol=1e-6)
    info = json.loads((tmp_path / "backbone.json").read_text())
    assert info["arch"] == arch and info["image_size"] == size
    assert info["stem"] == {
        "conv1": "7x7 stride 2" if size > 96 else "3x3 stride 1",
        "maxpool": size > 32,
    }
    assert info["features"] == (2048 if arch == "resnet50" else 512)
    assert len(info["normalize"]["mean"]) == 3


def test_safetensors_export_holds_the_same_tensors_and_the_record(tmp_path):
    from safetensors import safe_open

    checkpoint(tmp_path, "resnet18", "cifar10", 32)
    ckpt = str(tmp_path / "checkpoint.pt")
    assert main([ckpt, "--out", str(tmp_path / "b.st"), "--format", "safetensors"]) == 0
    assert main([ckpt, "--out", str(tmp_path / "b.pt")]) == 0
    expected = torch.load(tmp_path / "b.pt", weights_only=True)
    with safe_open(str(tmp_path / "b.st"), framework="pt") as f:
        assert set(f.keys()) == set(expected)
        assert all(torch.equal(f.get_tensor(k), expected[k]) for k in expected)
        meta = f.metadata()
    assert json.loads(meta["arch"]) == "resnet18"
    assert json.loads(meta["normalize"])["mean"] == [0.4914, 0.4822, 0.4465]


def test_a_narrow_encoder_is_refused_clearly(tmp_path, capsys):
    checkpoint(tmp_path, "resnet18_w8", "cifar10", 32)
    assert main([str(tmp_path), "--out", str(tmp_path / "b.pt")]) == 2
    assert "resnet18_w8 has no torchvision twin" in capsys.readouterr().err
    assert not (tmp_path / "b.pt").exists()
