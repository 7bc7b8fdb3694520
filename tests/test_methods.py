"""Every method trains: forward, backward, and a falling loss on a fixed batch."""

import argparse
import copy
import math
import re

import pyarrow as pa
import pytest
import torch

from analysis.tables import paper_table
from wsl_ray.config import (
    METHODS,
    TWO_VIEW_METHODS,
    Config,
    ConfigError,
    add_config_flags,
    config_from_args,
    validate_config,
)
from wsl_ray.methods import base, family, get_method, get_spec, whitening
from wsl_ray.methods.byol import ema_update
from wsl_ray.methods.family import Family, family_of
from wsl_ray.methods.losses import intl_loss, lejepa_loss, sigreg_directions
from wsl_ray.methods.networks import get_encoder, get_head

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
    ema_update(model, torch.tensor(0.1))  # tau 0.9
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
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Float32Linear"]  # fp32 before whitening
    assert head(torch.randn(2, 512)).shape == (2, 64)
    kinds = [type(m).__name__ for m in get_head(512, 64)]
    assert kinds == ["Linear", "ViewBatchNorm1d", "ReLU", "Float32Linear"]


# --- the whitening family and the methods of the CW-RGP study --------------------------------


@pytest.mark.parametrize(
    "method, flags, family",
    [
        ("w_mse", {}, Family("cholesky", "batch", 1, False, 1)),
        (
            "w_mse",
            dict(w_axis="batch", w_matrix="cholesky", groups=2),
            Family("cholesky", "batch", 1, False, 1),
        ),
        ("cw_rgp", dict(groups=4), Family("zca", "channel", 4, True, 1)),
        # an unset --groups is 1 wherever a config is built (base/cfg.py's group 1)
        ("whitened_mse", {}, Family("cholesky", "batch", 1, False, 1)),
        (
            "whitened_mse",
            dict(w_matrix="pca", w_axis="channel", w_random_groups=True, minus=0),
            Family("pca", "channel", 1, True, 0),
        ),
    ],
)
def test_presets_and_flags_choose_the_whitening(method, flags, family):
    cfg = Config(method=method, **flags)
    assert family_of(cfg.to_dict()) == get_method(method)(small(cfg), 16).family == family


def small(cfg: Config) -> Config:
    cfg.arch, cfg.head_size = "resnet18_w8", 32
    return cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            dict(method="w_mse", w_axis="channel"),
            "--method w_mse is --method whitened_mse "
            "--w_matrix cholesky --w_axis batch --groups 1; --w_axis channel contradicts it: use "
            "--method whitened_mse",
        ),
        (
            dict(method="cw_rgp", emb=512, w_size=64, w_matrix="pca", minus=0),
            "--w_matrix pca, --minus 0 contradicts",
        ),
        (dict(method="w_mse", w_random_groups=True), "--w_random_groups True contradicts"),
        (dict(method="whitened_mse", groups=3), "--groups 3 must divide --emb 64"),
        (
            dict(method="whitened_mse", groups=1, w_size=64),
            "batch whitening needs --w_size > "
            "channels per group: --w_size 64 <= --emb 64 / --groups 1 = 64; e.g. --w_size 128",
        ),
        (
            dict(method="whitened_mse", w_axis="channel", groups=1),
            "channel whitening needs "
            "channels per group > --w_size: --emb 64 / --groups 1 = 64 <= --w_size 128",
        ),
        (dict(method="whitened_mse", w_matrix="bn", groups=2), "--w_matrix bn takes no groups"),
        (dict(method="whitened_mse", w_matrix="svd"), "--w_matrix 'svd': one of cholesky"),
        (dict(method="vicreg", num_samples=4), "--method vicreg takes exactly 2 views"),
        (dict(method="byol", whiten_global=True), "--whiten_global is for --method w_mse or"),
        (
            dict(method="w_mse", global_negatives=True),
            "--global_negatives is for --method contrastive",
        ),
        (dict(method="barlow_twins", barlow_scale="dim"), "--barlow_scale 'dim': one of emb"),
    ],
)
def test_family_and_method_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(Config(**overrides))


def test_whiten_global_splits_the_global_batch_not_the_workers_share():
    cfg = Config(bs=256, emb=64, w_size=256)
    with pytest.raises(ConfigError, match="must divide the per-worker batch 128"):
        validate_config(cfg, workers=2)
    cfg.whiten_global = True
    validate_config(cfg, workers=2)
    cfg.w_size = 192
    with pytest.raises(ConfigError, match="must divide the batch 256 .*e.g. --w_size 128"):
        validate_config(cfg, workers=2)


def test_method_defaults_fill_only_the_flags_the_user_did_not_set():
    parser = add_config_flags(argparse.ArgumentParser())

    def from_argv(*argv):
        return config_from_args(parser.parse_args(argv))

    assert from_argv("--method", "vicreg").emb == 512  # the CW-RGP code's base/cfg.py
    assert from_argv("--method", "vicreg", "--emb", "64").emb == 64  # the default, but given
    assert from_argv("--method", "w_mse").emb == 64
    assert from_argv("--method", "whitened_mse").groups == 1  # W-MSE's whitening by default
    assert from_argv("--method", "whitened_mse", "--groups", "4").groups == 4
    assert (
        Config.from_dict({"method": "zero_icl", "lr": 3e-3}).to_dict()
        == Config(method="zero_icl", lr=3e-3, emb=512).to_dict()
    )
    for method in TWO_VIEW_METHODS:  # their defaults are valid
        validate_config(Config.from_dict({"method": method}))


def test_barlow_twins_batch_norm_follows_the_scale_option():
    cfg = small(Config(method="barlow_twins", emb=8))
    assert get_method("barlow_twins")(cfg, 16).bn.affine
    cfg.barlow_scale = "batch"
    assert not get_method("barlow_twins")(cfg, 16).bn.affine


def test_simsiam_projector_and_predictor_layout():
    model = get_method("simsiam")(small(Config(method="simsiam", emb=16)), 16)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Linear", "ViewBatchNorm1d", "ReLU"] * 2 + ["Linear", "ViewBatchNorm1d"]
    assert not model.head[-1].affine and model.head[0].bias is None
    assert model.pred[0].out_features == 512 and model.pred[-1].out_features == 16


def _loss_and_grads(model, views, monkeypatch, one_call: bool):
    """The loss of `views` and its gradients, all views in one encoder call or one call each."""
    with monkeypatch.context() as patch:
        if not one_call:  # the per-view loop, as in the reference code (and under --sync_bn)
            patch.setattr(base, "views_in_one_call", lambda module: False)
        torch.manual_seed(5)  # the same whitening sub-batches and groups
        loss = model(views)
        loss.backward()
    return loss.detach()


@pytest.mark.parametrize(
    "method, k",
    [(m, k) for m in METHODS for k in (2, 4) if get_spec(m).views in (None, k)],
)
def test_one_encoder_call_equals_one_call_per_view_in_float64(method, k, monkeypatch):
    """Loss, every gradient, the running statistics and num_batches_tracked of one call on all
    views equal those of k calls within 1e-12 (the gradient relative to the largest one: the
    biases before a per-view BatchNorm have gradient 0 up to round-off)."""
    torch.manual_seed(0)
    one = get_method(method)(small_config(method), image_size=16).double()
    each = copy.deepcopy(one)
    views = [(1 + v) * torch.randn(16, 3, 16, 16, dtype=torch.float64) + v for v in range(k)]
    loss = _loss_and_grads(one, views, monkeypatch, one_call=True)
    expected = _loss_and_grads(each, views, monkeypatch, one_call=False)
    assert torch.allclose(loss, expected, rtol=1e-12, atol=0)
    grads = [
        (a.grad, b.grad)
        for a, b in zip(one.parameters(), each.parameters(), strict=True)
        if b.requires_grad
    ]
    top = max(b.abs().max() for _, b in grads)
    assert all((a - b).abs().max() <= 1e-12 * top for a, b in grads)
    buffers = dict(each.named_buffers())
    assert buffers, "the methods' BatchNorm layers keep running statistics"
    for name, value in one.named_buffers():
        if name.endswith("num_batches_tracked"):  # k in the encoder, 1 in a pooled head
            assert value == buffers[name] == (k if name.startswith("model.") else value), name
        else:
            assert torch.allclose(value, buffers[name], rtol=1e-12, atol=1e-12), name


def test_views_share_a_call_but_not_their_batch_statistics():
    model = get_method("vicreg")(small(Config(method="vicreg", emb=8)), 16)
    a, b = torch.randn(8, 3, 16, 16), 5 + 3 * torch.randn(8, 3, 16, 16)
    z = model.project([a, b])
    assert torch.allclose(z[0], model.project([a, a])[0])  # pooled statistics would see b
    assert torch.allclose(z[1], model.project([b, a])[0])


def test_the_paper_table_groups_the_whitening_family_by_its_settings():
    def row(acc, method="whitened_mse", **config):
        cells = {f"config/{k}": v for k, v in config.items()}
        metrics = {"val_acc": acc, "test_acc": acc, "test_acc_knn": acc}
        return {"method": method, "dataset": "cifar10"} | metrics | cells

    zca = dict(w_matrix="zca", w_axis="channel", groups=4, w_random_groups=True)
    table = pa.Table.from_pylist(
        [
            row(0.50, **zca, w_size=64),
            row(0.60, **zca, w_size=32),  # one setting, best is kept
            row(0.40, **zca | dict(w_random_groups=False), w_size=64),
            row(0.30, w_matrix="pca", w_axis="batch", groups=2, w_size=128),
            row(0.20, w_size=128),  # flags left unset: W-MSE's whitening
            row(0.55, method="w_mse", w_size=128),
        ]
    )
    rows = {r["method"]: r["cifar10"] for r in paper_table(table)}
    assert rows == {
        "Whitened MSE (ZCA channel, 4 random groups) 2": "60.00 / 60.00",
        "Whitened MSE (ZCA channel, 4 groups) 2": "40.00 / 40.00",
        "Whitened MSE (PCA batch, 2 groups) 2": "30.00 / 30.00",
        "Whitened MSE (Cholesky batch) 2": "20.00 / 20.00",
        "W-MSE 2": "55.00 / 55.00",
    }


def test_the_family_names_match_the_whitening_operators():
    assert (family.MATRICES, family.AXES) == (whitening.MATRICES, whitening.AXES)


# --- INTL --------------------------------------------------------------------------------------


def test_intl_projector_defaults_and_trade_off_follow_the_reference():
    cfg = small(Config(method="intl", head_layers=3))
    model = get_method("intl")(cfg, 16)
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Linear", "ViewBatchNorm1d", "ReLU"] * 2 + ["Float32Linear"]  # no last BN
    assert model.head[0].bias is None and model.head[3].bias is None
    assert model.head[-1].bias is not None and model.head_per_view
    assert Config(method="intl").emb == 2048 and Config(method="intl").intl_iters == 4
    assert model.trade_off == pytest.approx((math.log2(cfg.bs) - 3) * 0.01)
    cfg.intl_axis = "batch"
    assert get_method("intl")(cfg, 16).trade_off == pytest.approx((math.log2(cfg.emb) - 3) / 100)
    cfg.intl_tl_w = 0.5
    assert get_method("intl")(cfg, 16).trade_off == 0.5


def test_intl_loss_is_its_formula_on_the_projections():
    torch.manual_seed(0)
    model = get_method("intl")(small(Config(method="intl", emb=16)), 16)
    batch = [torch.randn(8, 3, 16, 16) for _ in range(3)]
    torch.manual_seed(1)
    loss = model(batch)
    torch.manual_seed(1)
    expected = intl_loss(model.project(batch), model.trade_off, 4, "channel")
    assert torch.allclose(loss, expected)


def test_intl_m_target_embeds_view_0_and_follows_the_online_network_by_ema():
    torch.manual_seed(0)
    model = get_method("intl")(small(Config(method="intl", emb=16, intl_m=0.9)), 16)
    online, target = next(model.model.parameters()), next(model.model_t.parameters())
    assert torch.equal(online, target) and not target.requires_grad
    batch = [torch.randn(8, 3, 16, 16) for _ in range(3)]
    with torch.no_grad():
        t = model.head_t(model.model_t(batch[0]))
        expected = intl_loss(model.project(batch[1:]), model.trade_off, 4, "channel", t)
    assert torch.allclose(model(batch), expected)  # BN in train mode: the same statistics
    with torch.no_grad():
        online.add_(1.0)
    before = target.clone()
    model.step(0.0)  # m = intl_m at the start
    assert torch.allclose(target, 0.9 * before + 0.1 * online)
    before = target.clone()
    model.step(1.0)  # m = 1 at the end: the target stays
    assert torch.equal(target, before)
    assert not hasattr(get_method("intl")(small(Config(method="intl", emb=16)), 16), "model_t")


# --- LeJEPA ------------------------------------------------------------------------------------


def test_lejepa_loss_is_its_formula_with_fresh_directions_from_the_seeded_generator():
    """Each step draws new directions from the method's own generator, seeded with --seed
    (not the global RNG): the same config gives the same losses, step after step."""
    cfg = small(Config(method="lejepa", emb=16, seed=7, lejepa_lambda=0.2, sigreg_slices=32))
    torch.manual_seed(0)
    model = get_method("lejepa")(cfg, 16)
    batch = [torch.randn(8, 3, 16, 16) for _ in range(3)]
    directions = torch.Generator().manual_seed(7)
    losses = []
    for _ in range(2):
        torch.manual_seed(3)  # the global RNG plays no part
        loss = model(batch)
        with torch.no_grad():
            a = sigreg_directions(16, 32, directions)
            expected = lejepa_loss(model.project(batch), 0.2, a, 3.0, 17)
        assert torch.allclose(loss, expected)
        losses.append(loss.item())
    assert losses[0] != losses[1]  # new directions at the second step
    again = get_method("lejepa")(cfg, 16)
    again.load_state_dict(model.state_dict())
    assert [again(batch).item() for _ in range(2)] == losses
    assert set(model.generators()) == {"sigreg"}  # checkpointed with the run's generators
    assert model.graph_blocker() is None and not model.head_per_view
