"""Places where we once differed from the reference code, each checked against its behaviour."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from wsl_ray.config import (
    METHODS,
    Config,
    add_config_flags,
    config_from_args,
    defaults_note,
    validate_config,
)
from wsl_ray.data.augment import Augment
from wsl_ray.methods import get_method
from wsl_ray.methods.losses import sample_covariance_penalty
from wsl_ray.methods.networks import get_encoder
from wsl_ray.training.weights import load_weights, state_dict_of

SMALL = dict(arch="resnet18_w8", bs=16, emb=8, head_size=16)


def norm_mse(a, b):
    return 2 - 2 * F.cosine_similarity(a, b, dim=-1).mean()


def test_byol_head_and_predictor_see_each_view_alone_as_the_reference():
    torch.manual_seed(0)
    model = get_method("byol")(Config(method="byol", **SMALL), image_size=16)
    views = [
        torch.randn(16, 3, 16, 16),
        3 + 2 * torch.randn(16, 3, 16, 16),
        torch.randn(16, 3, 16, 16),
    ]
    loss = model(views)
    # the reference's forward (methods/byol.py): every module called on one view at a time
    z = [model.pred(model.head(model.model(x))) for x in views]
    with torch.no_grad():
        zt = [model.head_t(model.model_t(x)) for x in views]
    pairs = [(0, 1), (0, 2), (1, 2)]
    ref = sum(norm_mse(z[i], zt[j]) + norm_mse(z[j], zt[i]) for i, j in pairs) / 3
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    pooled = model.pred(model.head(torch.cat([model.model(x) for x in views]))).chunk(3)
    pooled_loss = sum(norm_mse(pooled[i], zt[j]) + norm_mse(pooled[j], zt[i]) for i, j in pairs)
    assert abs(pooled_loss.item() / 3 - ref.item()) > 1e-3  # the check can tell them apart


def test_small_image_conv1_keeps_pytorchs_default_init():
    model, _ = get_encoder("resnet18", 32)
    w = model.conv1.weight  # Kaiming-uniform with a = sqrt(5): U(-1/sqrt(fan_in), +)
    bound = 1 / math.sqrt(3 * 3 * 3)
    assert w.abs().max() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # Kaiming-normal: 0.06


def test_cw_rgp_defaults_are_the_reference_cfg_wherever_a_config_is_partial():
    parser = add_config_flags(argparse.ArgumentParser())
    for cfg in (
        Config(method="cw_rgp"),
        Config.from_dict({"method": "cw_rgp"}),
        config_from_args(parser.parse_args(["--method", "cw_rgp"])),
    ):
        assert (cfg.emb, cfg.groups, cfg.w_size, cfg.zero_init_residual) == (512, 1, 128, True)
        assert "emb 512, groups 1, zero_init_residual True" in defaults_note(cfg)
        validate_config(cfg)
    explicit = config_from_args(
        parser.parse_args(["--method", "cw_rgp", "--emb", "256", "--no_zero_init_residual"])
    )
    assert (explicit.emb, explicit.zero_init_residual) == (256, False)
    assert (Config().emb, Config().groups, Config().zero_init_residual) == (64, 1, False)
    assert Config.from_dict(Config(method="cw_rgp", emb=1024).to_dict()).emb == 1024


def test_zero_init_residual_follows_each_methods_code():
    """The CW-RGP code's get_model zero-initialises the residual BNs for every method of its
    study, and LeJEPA's timm backbones do (zero_init_last); the W-MSE code, home of W-MSE,
    Contrastive and BYOL, does not, nor INTL's code for its ResNet-18."""
    for method in METHODS:
        study = method not in ("w_mse", "contrastive", "byol", "intl")
        assert Config(method=method).zero_init_residual is study, method
        assert Config(method=method, zero_init_residual=not study).zero_init_residual is not study


def test_no_flags_say_what_they_turn_off():
    helps = {
        a.option_strings[0]: a.help for a in add_config_flags(argparse.ArgumentParser())._actions
    }
    assert "don't normalise" in helps["--no_norm"]
    assert "do not use BatchNorm" in helps["--no_add_bn"]
    assert helps["--no_lr_warmup"].startswith("no linear learning rate warm-up")


def test_reference_checkpoints_load_with_module_parts_dropped(capsys):
    model = get_method("byol")(Config(method="byol", **SMALL), image_size=16)
    ours = model.state_dict()
    # W-MSE's code saves a bare state dict of DataParallel encoders: model.module.*
    wmse = {
        k.replace(".", ".module.", 1) if k.startswith("model") else k: v.clone()
        for k, v in ours.items()
    }
    wmse["whitening.running_mean"] = torch.zeros(3)
    # CW-RGP's ImageNet code under DDP: {'state_dict': {'module.model.*': ...}, 'epoch': ...}
    cwrgp = {
        "state_dict": {"module." + k: v for k, v in ours.items() if not k.startswith("pred.")},
        "epoch": 100,
        "arch": "resnet50",
    }
    for payload in (wmse, {"model": ours}, cwrgp):
        assert set(state_dict_of(payload)) <= set(ours) | {"whitening.running_mean"}
    report = load_weights(model, wmse)
    assert report.missing == [] and report.unexpected == ["whitening.running_mean"]
    report = load_weights(model, cwrgp)
    assert (
        report.missing
        == sorted(k for k in ours if k.startswith("pred.") and "num_batches" not in k)
        and not report.unexpected
    )
    assert "unexpected keys: whitening.running_mean" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no weight of the checkpoint matches"):
        load_weights(model, {"fc.weight": torch.zeros(1)})


def test_covariance_term_value_and_gradient_in_float64():
    torch.manual_seed(0)
    views = [torch.randn(6, 5, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    value = sample_covariance_penalty(views)

    def reference(h):  # covariance_loss(h, axis=0) of CW-RGP's ImageNet/methods/losses.py
        x = h.T
        n, d = x.shape
        x = x - x.mean(dim=0)
        cov = x.T @ x / (n - 1)
        return cov[~torch.eye(d, dtype=torch.bool)].pow(2).sum() / d

    expected = sum(reference(h) for h in views)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    assert torch.autograd.gradcheck(lambda a, b: sample_covariance_penalty([a, b]), views)


def test_cw_rgp_covariance_weight_stops_at_cov_stop():
    cfg = Config(
        method="cw_rgp",
        arch="resnet18_w8",
        bs=8,
        emb=32,
        w_size=8,
        head_size=16,
        cov_w=0.5,
        cov_stop=2,
        epoch=4,
    )
    model = get_method("cw_rgp")(cfg, image_size=16)
    assert model.cov_on
    model.step(1 / 4)
    assert model.cov_on  # epoch 1 < cov_stop
    model.step(2 / 4)
    assert model.cov_on  # the first iteration of epoch 2 still has it, as the reference's
    model.step(2 / 4)  # after an iteration of epoch 2, as the reference's step(epoch)
    assert not model.cov_on


def test_cw_rgp_augmentation_preset_crops_first_bilinear_with_blur():
    cfg = Config(aug="cw_rgp")
    aug = Augment.from_config(cfg, 8, (0.5,) * 3, (0.25,) * 3)
    assert (aug.crop_first, aug.interpolation, aug.blur_p, aug.gs_p) == (True, "bilinear", 0.5, 0.2)
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    params = aug.sample(4, 16, 16)
    params.jitter[:] = torch.tensor([1.0, 0.5, 1.0, 0.0])  # contrast 0.5 only: its mean differs
    params.gray[:], params.blur_sigma[:] = False, 0.0
    out = aug.apply(x, params) * 0.25 + 0.5
    from wsl_ray.data.augment import color_jitter, resized_crop_flip

    cropped = resized_crop_flip(x.float() / 255, params.crop, params.flip, 8, "bilinear")
    expected = color_jitter(cropped, params.jitter, params.jitter_order)  # crop, then colour
    assert torch.allclose(out, expected, atol=1e-5)
    wmse = Augment.from_config(Config(), 8, (0.5,) * 3, (0.25,) * 3)
    assert (wmse.crop_first, wmse.interpolation, wmse.blur_p, wmse.gs_p) == (
        False,
        "bicubic",
        0,
        0.1,
    )
