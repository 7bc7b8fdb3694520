"""Every method trains: forward, backward, and a falling loss on a fixed batch."""

import pytest
import torch

from wsl_ray.config import METHODS, Config
from wsl_ray.methods import get_method
from wsl_ray.models import get_encoder, get_head

SMALL = dict(arch="resnet18_w8", bs=32, emb=8, w_size=16, head_size=32, groups=2)


def small_config(method: str) -> Config:
    overrides = {"cw_rgp": dict(emb=64, w_size=16, groups=2)}.get(method, {})
    return Config(method=method, **{**SMALL, **overrides})


@pytest.mark.parametrize("method", METHODS)
def test_method_loss_falls_on_a_fixed_batch(method):
    torch.manual_seed(0)
    model = get_method(method)(small_config(method), image_size=16)
    images = torch.randn(32, 3, 16, 16)
    batch = [images + 0.1 * torch.randn_like(images) for _ in range(2)]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        torch.manual_seed(step)  # the same whitening sub-batches at the first and last check
        loss = model(batch)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        model.step(step / 8)
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_byol_target_follows_the_online_network_by_ema():
    model = get_method("byol")(small_config("byol"), image_size=16)
    online, target = next(model.model.parameters()), next(model.model_t.parameters())
    assert torch.equal(online, target) and not target.requires_grad
    with torch.no_grad():
        online.add_(1.0)
    before = target.clone()
    model.update_target(0.9)
    assert torch.allclose(target, 0.9 * before + 0.1 * online)


def test_embed_gives_encoder_or_head_features():
    cfg = small_config("w_mse")
    x = torch.randn(4, 3, 16, 16)
    model = get_method("w_mse")(cfg, image_size=16).eval()
    assert model.embed(x).shape == (4, model.embed_size) == (4, 64)
    cfg.eval_head = True
    assert model.embed(x).shape == (4, model.embed_size) == (4, 8)


@pytest.mark.parametrize(
    "arch, image_size, out_size, has_maxpool, conv1_stride",
    [
        ("resnet18", 32, 512, False, 1),
        ("resnet18", 64, 512, True, 1),
        ("resnet50", 224, 2048, True, 2),
        ("resnet18_w16", 32, 128, False, 1),
    ],
)
def test_encoder_stem_follows_the_image_size(arch, image_size, out_size, has_maxpool, conv1_stride):
    model, size = get_encoder(arch, image_size)
    assert size == out_size
    assert isinstance(model.maxpool, torch.nn.MaxPool2d) == has_maxpool
    assert model.conv1.stride == (conv1_stride, conv1_stride)
    assert model(torch.randn(2, 3, image_size, image_size)).shape == (2, out_size)


def test_zero_init_residual_zeroes_the_last_bn_of_each_block():
    model, _ = get_encoder("resnet18_w8", 32, zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in model.layer1)
    model, _ = get_encoder("resnet18_w8", 32)
    assert all(b.bn2.weight.abs().sum() > 0 for b in model.layer1)


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match="resnet18_wN"):
        get_encoder("vgg16", 32)


def test_head_layout():
    head = get_head(512, 64, head_layers=3, head_size=128, add_bn=False)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert head(torch.randn(2, 512)).shape == (2, 64)
    kinds = [type(m).__name__ for m in get_head(512, 64)]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
