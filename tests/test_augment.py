"""Batched augmentation against torchvision's own transforms."""

import math
from collections import Counter
from dataclasses import fields

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF

from wsl_ray.config import Config
from wsl_ray.data.augment import (
    Augment,
    AugmentParams,
    adjust_hue,
    color_jitter,
    gaussian_blur,
    resized_crop_flip,
    solarize,
)
from wsl_ray.data.sources import on_canvas

N = 20_000


@pytest.fixture(scope="module")
def params():
    aug = Augment(32, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(0))
    return aug, aug.sample(N, 32, 32)


def torchvision_crops(n, height=32, width=32):
    """(area fraction, aspect ratio) of n RandomResizedCrop draws by torchvision."""
    torch.manual_seed(1)
    rrc = T.RandomResizedCrop(32, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    boxes = torch.tensor(
        [rrc.get_params(torch.empty(3, height, width), rrc.scale, rrc.ratio) for _ in range(n)],
        dtype=torch.float32,
    )
    return boxes[:, 2] * boxes[:, 3] / (height * width), boxes[:, 3] / boxes[:, 2]


def test_crop_area_and_ratio_distributions_match_torchvision(params):
    _, p = params
    area = p.crop[:, 2] * p.crop[:, 3] / 32**2
    ratio = p.crop[:, 3] / p.crop[:, 2]
    ref_area, ref_ratio = torchvision_crops(N)
    for ours, ref in ((area, ref_area), (ratio, ref_ratio)):
        for q in (0.1, 0.25, 0.5, 0.75, 0.9):
            assert ours.quantile(q).item() == pytest.approx(ref.quantile(q).item(), abs=0.03)
    top, left, h, w = p.crop.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()


def test_crop_positions_are_uniform(params):
    _, p = params
    top, left, h, w = p.crop.unbind(1)
    for start, side in ((top, h), (left, w)):
        full = side == 32
        assert (start[full] == 0).all()
        rel = start[~full] / (32 - side[~full])  # uniform on {0, ..., 32 - side}: mean 1/2
        assert rel.mean().item() == pytest.approx(0.5, abs=0.02)


def test_crop_falls_back_to_the_central_crop_like_torchvision():
    aug = Augment(32, (0.5,) * 3, (0.25,) * 3, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))
    p = aug.sample(5, 32, 32)
    ref = T.RandomResizedCrop.get_params(torch.empty(3, 32, 32), (1.0, 1.0), (2.0, 3.0))
    assert p.crop.tolist() == [list(map(float, ref))] * 5


def test_jitter_factor_ranges_and_rates(params):
    _, p = params
    applied = (p.jitter != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(1)
    assert applied.float().mean().item() == pytest.approx(0.8, abs=0.015)
    j = p.jitter[applied]
    for col, (lo, hi) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        assert j[:, col].min() >= lo and j[:, col].max() <= hi
        assert j[:, col].min() < lo + 0.01 and j[:, col].max() > hi - 0.01
        assert j[:, col].mean().item() == pytest.approx((lo + hi) / 2, abs=0.01)
    assert p.gray.float().mean().item() == pytest.approx(0.1, abs=0.01)
    assert p.flip.float().mean().item() == pytest.approx(0.5, abs=0.015)
    orders = {tuple(o) for o in p.jitter_order[:2000].tolist()}
    assert len(orders) == 24  # every order of the four ops occurs
    counts = Counter(tuple(o) for o in p.jitter_order.tolist())  # ... equally often
    assert max(abs(c / N - 1 / 24) for c in counts.values()) < 0.006  # sd 0.0014


def test_blur_rate_and_sigma_range():
    aug = Augment(
        32, (0.5,) * 3, (0.25,) * 3, blur_p=0.3, generator=torch.Generator().manual_seed(5)
    )
    sigma = aug.sample(N, 32, 32).blur_sigma
    blurred = sigma[sigma > 0]
    assert len(blurred) / N == pytest.approx(0.3, abs=0.015)
    assert blurred.min() >= 0.1 and blurred.max() <= 2.0
    for q in (0.1, 0.5, 0.9):  # uniform on [0.1, 2]
        assert blurred.quantile(q).item() == pytest.approx(0.1 + 1.9 * q, abs=0.04)


def test_the_parameters_of_an_image_are_independent():
    """No two parameters share a random number: the correlation of every pair is within
    noise (sd 1 / sqrt(rows) = 0.008). The crop's area and aspect ratio are dependent in
    torchvision too (a try fits or not by both), so only the area enters, with the crop's
    relative position (uniform whatever the box)."""
    aug = Augment(
        32,
        (0.5,) * 3,
        (0.25,) * 3,
        cj_p=1.0,
        blur_p=0.5,
        solarize_p=0.5,
        generator=torch.Generator().manual_seed(6),
    )
    p = aug.sample(N, 32, 32)
    top, left, h, w = p.crop.unbind(1)
    moves = (h < 32) & (w < 32)
    columns = [
        *p.jitter.unbind(1),
        p.jitter_order[:, 0],  # (two places of a permutation correlate: -1/3)
        p.blur_sigma,
        p.flip,
        p.gray,
        p.solarize,
        h * w,
        top / (32 - h),
        left / (32 - w),
    ]
    corr = torch.corrcoef(torch.stack([c[moves].float() for c in columns]))
    off_diagonal = corr - torch.diag(corr.diag())
    assert moves.sum() > N / 2 and off_diagonal.abs().max() < 0.05, off_diagonal


@pytest.fixture
def images():
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("shift", [-0.5, -0.2, 0.0, 0.05, 0.5])
def test_hue_equals_torchvision(images, shift):
    ref = torch.stack([TF.adjust_hue(im, shift) for im in images])
    assert torch.allclose(adjust_hue(images, torch.full((6,), shift)), ref, atol=1e-5)


def test_color_jitter_in_a_fixed_order_equals_torchvision(images):
    jitter = torch.tensor([[1.3, 0.7, 1.5, 0.1]] * 6)
    order = torch.tensor([[2, 3, 0, 1]] * 6)  # saturation, hue, brightness, contrast
    ref = TF.adjust_saturation(images, 1.5)
    ref = TF.adjust_contrast(TF.adjust_brightness(TF.adjust_hue(ref, 0.1), 1.3), 0.7)
    assert torch.allclose(color_jitter(images, jitter, order), ref, atol=1e-5)


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_color_jitter_uses_each_images_own_order(images, dtype, atol):
    """Every order of the ops, per image, as torchvision's ops in that order. In float64 to
    rounding, so the one-pass blends are torchvision's blends (there the hue is our own
    `adjust_hue`: torchvision's float64 hue is off by 1e-7; test_hue_equals_torchvision)."""
    images = images.to(dtype)
    jitter = torch.tensor([[1.4, 0.6, 0.0, -0.1]] * 6, dtype=dtype)
    order = torch.stack(
        [torch.randperm(4, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    )
    ops = [
        lambda im: TF.adjust_brightness(im, 1.4),
        lambda im: TF.adjust_contrast(im, 0.6),
        lambda im: TF.adjust_saturation(im, 0.0),
        lambda im: TF.adjust_hue(im, -0.1),
    ]
    if dtype == torch.float64:
        ops[3] = lambda im: adjust_hue(im[None], jitter[:1, 3])[0]
    got = color_jitter(images, jitter, order)
    for i, im in enumerate(images):
        for op in order[i].tolist():
            im = ops[op](im)
        assert torch.allclose(got[i], im, rtol=0, atol=atol)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    "box, size", [((0, 0, 32, 32), 32), ((4, 6, 20, 16), 32), ((2, 1, 28, 30), 16)]
)
@pytest.mark.parametrize("flip", [False, True])
def test_resized_crop_and_flip_equal_torchvision(images, mode, box, size, flip):
    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}
    ref = TF.resized_crop(images, *box, [size, size], interpolation=interp[mode], antialias=True)
    ref = TF.horizontal_flip(ref) if flip else ref
    crop = torch.tensor([box] * 6, dtype=torch.float32)
    got = resized_crop_flip(images, crop, torch.full((6,), flip), size, mode)
    assert torch.allclose(got, ref.clamp(0, 1), atol=1e-5)


def test_blur_matches_a_gaussian_and_zero_sigma_is_identity(images):
    sigma = torch.tensor([0.0, 1.0, 2.0, 0.0, 0.5, 1.5])
    got = gaussian_blur(images, sigma, radius=6)
    assert torch.equal(got[0], images[0])
    ref = TF.gaussian_blur(images[1], kernel_size=[13, 13], sigma=[1.0, 1.0])
    assert torch.allclose(got[1], ref, atol=1e-5)


def test_views_have_the_right_dtype_shape_range_and_differ():
    x = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    views = Augment(32, mean, std, num_samples=4, generator=torch.Generator().manual_seed(0))(x)
    assert len(views) == 4
    for v in views:
        assert v.dtype == torch.float32 and v.shape == (16, 3, 32, 32)
        lo = (0 - torch.tensor(mean)) / torch.tensor(std)
        hi = (1 - torch.tensor(mean)) / torch.tensor(std)
        assert (v >= lo[:, None, None] - 1e-5).all() and (v <= hi[:, None, None] + 1e-5).all()
    assert not torch.allclose(views[0], views[1])


@pytest.mark.parametrize("preset", ["wmse", "cw_rgp", "intl"])
def test_views_in_bf16_channels_last_are_the_float32_views_cast(preset):
    """The same draws give the same views, cast to bf16 and laid out channels-last as they
    are written; autocast around the augmentation changes nothing (it computes in float32)."""
    x = torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8)
    cfg = Config(aug=preset, solarize_p=[0.0, 0.5] if preset == "intl" else [0.0])

    def views(**kwargs):
        gen = torch.Generator().manual_seed(4)
        return Augment.from_config(
            cfg, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), generator=gen, **kwargs
        )(x)

    ref = views()
    got = views(out_dtype=torch.bfloat16, channels_last=True)
    for r, g in zip(ref, got, strict=True):
        assert r.dtype == torch.float32 and r.is_contiguous()
        assert g.dtype == torch.bfloat16 and g.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(g, r.to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert aug_equal(views(), ref)


def test_augment_is_seedable_and_built_from_the_reference_flags():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    cfg = Config(num_samples=3, cj0=0.8, gs_p=0.2)

    def run(seed):
        aug = Augment.from_config(
            cfg, 32, (0.5,) * 3, (0.5,) * 3, generator=torch.Generator().manual_seed(seed)
        )
        return aug(x)

    assert aug_equal(run(0), run(0)) and not aug_equal(run(0), run(1))
    aug = Augment.from_config(cfg, 32, (0.5,) * 3, (0.5,) * 3)
    assert (aug.num_samples, aug.cj[0], aug.gs_p, aug.blur_p) == (3, 0.8, 0.2, 0.0)
    assert aug.crop_ratio == (0.75, pytest.approx(4 / 3)) and not math.isnan(aug.hf_p)


def aug_equal(a, b):
    return all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_crops_of_an_image_on_a_canvas_stay_inside_it_and_follow_torchvision():
    """20 x 37 images alternate with images filling a 64 x 64 canvas: each one's crops lie
    inside it and have torchvision's law for its own size."""
    height, width = 20, 37
    aug = Augment(32, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[height, width], [64, 64]]).repeat(N // 2, 1)
    p = aug.sample(N, 64, 64, sizes)
    for crops, (hi, wi) in ((p.crop[0::2], (height, width)), (p.crop[1::2], (64, 64))):
        top, left, h, w = crops.unbind(1)
        assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
        assert (top + h <= hi).all() and (left + w <= wi).all()
    top, left, h, w = p.crop[0::2].unbind(1)
    torch.manual_seed(1)
    ref = [
        T.RandomResizedCrop.get_params(torch.empty(3, height, width), (0.2, 1.0), (3 / 4, 4 / 3))
        for _ in range(N // 2)
    ]
    # the law of the integer box sides (h, w): total variation between the two samples
    # (two samples of torchvision's, seeds 1 and 2, differ by 0.057)
    ours = Counter(zip(h.int().tolist(), w.int().tolist(), strict=True))
    theirs = Counter(box[2:] for box in ref)
    assert sum(abs(ours[k] - theirs[k]) for k in ours | theirs) / N < 0.08
    moves = h < height
    assert (top[moves] / (height - h[moves])).mean().item() == pytest.approx(0.5, abs=0.02)


def test_each_image_falls_back_to_its_own_central_crop_like_torchvision():
    aug = Augment(32, (0.5,) * 3, (0.25,) * 3, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))
    sizes = [[32, 32], [20, 37], [45, 12], [10, 60]]  # 37 / 2 = 18.5 rounds half to even
    p = aug.sample(4, 64, 64, torch.tensor(sizes))
    ref = [
        T.RandomResizedCrop.get_params(torch.empty(3, h, w), (1.0, 1.0), (2.0, 3.0))
        for h, w in sizes
    ]
    assert p.crop.tolist() == [list(map(float, box)) for box in ref]


def params_row(p: AugmentParams, i: int) -> AugmentParams:
    rows = {f.name: getattr(p, f.name) for f in fields(p)}
    return AugmentParams(**{k: v if v is None else v[i : i + 1] for k, v in rows.items()})


@pytest.mark.parametrize("crop_first", [False, True])
def test_a_view_from_the_canvas_equals_the_view_from_the_image_alone(crop_first):
    """The zero padding of a canvas never reaches a view: not through the crop, nor the
    contrast's mean grey (taken before the crop unless crop_first), nor the blur (nor the
    solarization, which is per pixel)."""
    gen = torch.Generator().manual_seed(3)
    sizes = torch.tensor([[20, 37], [45, 12], [48, 48], [7, 40]])
    alone = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
        for h, w in sizes.tolist()
    ]
    canvas = torch.stack([on_canvas(image, 48) for image in alone])
    aug = Augment(
        16,
        (0.5, 0.4, 0.3),
        (0.2, 0.25, 0.3),
        cj_p=1.0,
        blur_p=0.5,
        crop_first=crop_first,
        generator=gen,
        solarize_p=0.5,
    )
    p = aug.sample(4, 48, 48, sizes)
    got = aug.apply(canvas, p)
    for i, image in enumerate(alone):
        assert torch.allclose(got[i], aug.apply(image[None], params_row(p, i))[0], atol=1e-5)


def test_solarize_equals_pil_on_whole_levels_and_only_where_asked():
    from PIL import Image, ImageOps

    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    x[0, 0, 0, :4] = torch.tensor([126, 127, 128, 129], dtype=torch.uint8)  # the threshold
    got = solarize(x.float() / 255, torch.tensor([True, False, True]))
    for i, on in enumerate((True, False, True)):
        image = Image.fromarray(x[i].permute(1, 2, 0).numpy())
        ref = torch.from_numpy(np.array(ImageOps.solarize(image) if on else image))
        assert torch.equal((got[i] * 255).round().byte(), ref.permute(2, 0, 1)), i


def test_solarize_and_blur_take_one_probability_per_view():
    aug = Augment(
        32,
        (0.5,) * 3,
        (0.25,) * 3,
        num_samples=2,
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        generator=torch.Generator().manual_seed(0),
    )
    p = aug.sample(2 * 10_000, 32, 32)  # view 0's images, then view 1's
    solar, blur = p.solarize.view(2, -1).float().mean(1), (p.blur_sigma > 0).view(2, -1)
    assert solar[0] == 0 and abs(solar[1] - 0.2) < 0.015
    assert blur[0].all() and abs(blur[1].float().mean() - 0.1) < 0.01
    with pytest.raises(ValueError, match="one per view"):
        Augment(32, (0.5,) * 3, (0.25,) * 3, num_samples=4, solarize_p=(0.0, 0.2))


def test_the_other_ops_draw_the_same_numbers_with_solarization_on_or_off():
    def params(**kwargs):
        gen = torch.Generator().manual_seed(3)
        return Augment(32, (0.5,) * 3, (0.25,) * 3, generator=gen, **kwargs).sample(64, 32, 32)

    off, on = params(), params(solarize_p=(0.0, 0.5))
    assert not off.solarize.any() and on.solarize.any()
    for f in fields(AugmentParams):
        if f.name != "solarize":
            assert torch.equal(getattr(off, f.name), getattr(on, f.name)), f.name


def test_the_intl_preset_and_per_view_flags_reach_the_augmentation():
    cfg = Config(aug="intl", solarize_p=[0.0, 0.2], blur_p=[1.0, 0.1])
    aug = Augment.from_config(cfg, 32, (0.5,) * 3, (0.5,) * 3)
    assert (aug.crop_first, aug.interpolation, aug.gs_p) == (True, "bicubic", 0.2)
    assert (aug.solarize_p, aug.blur_p) == ((0.0, 0.2), (1.0, 0.1))
    plain = Augment.from_config(Config(solarize_p=[0.3]), 32, (0.5,) * 3, (0.5,) * 3, blur=True)
    assert (plain.solarize_p, plain.blur_p) == (0.3, 0.5)  # one for all; ImageNet-100's blur
    views = Augment.from_config(
        cfg, 32, (0.5,) * 3, (0.5,) * 3, generator=torch.Generator().manual_seed(0)
    )(torch.randint(0, 256, (8, 3, 40, 40), dtype=torch.uint8))
    assert len(views) == 2 and views[1].shape == (8, 3, 32, 32)
