"""Batched augmentation on uint8 image tensors, with per-sample random parameters.

It reproduces the reference pipeline, per view and image:
    RandomApply(ColorJitter(cj0, cj1, cj2, cj3), p=cj_p)   (the four in random order)
    RandomGrayscale(gs_p)
    RandomResizedCrop(size, scale=(crop_s0, crop_s1), ratio=(crop_r0, crop_r1))
    RandomHorizontalFlip(hf_p)
    RandomApply(GaussianBlur(sigma in [0.1, 2]), p=blur_p)   (ImageNet-100 only)
    RandomApply(Solarization(), p=solarize_p)              (INTL; PIL's threshold 128)
    Normalize(mean, std)
with torchvision's semantics, as whole-batch tensor code on the data's device. Sampling
(`sample`) and applying (`apply`) are separate, so each can be checked on its own. Crop,
resize and flip are two batched matrix products with PIL's antialiased resampling weights.
Blur and solarization take one probability for all views or one per view (INTL's
solarization p 0.0 for view 0 and 0.2 for view 1).

Images of several sizes travel as one batch on a canvas: `augment(x, sizes)` takes each
image's valid (height, width) in the top-left of x, and each crop is drawn inside it, as
RandomResizedCrop draws it from that image alone; the canvas' padding never reaches a view.

On a GPU nothing here waits for the device: the random parameters are drawn there (with the
augmentation's generator, outside any compiled region), in one draw of DRAWS uniform numbers
per image, the constants are made there once, and every shape (including the blur's kernel)
is fixed by the settings, not by the data. The views can be written in the dtype and memory
format the encoder takes (bf16 channels-last under CUDA autocast), so that it does not
convert them; the arithmetic is float32 whatever autocast is around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from .sources import full_sizes

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
# --aug presets. wmse: the W-MSE code's order (colour, grey, then a bicubic crop and flip;
# blur only for ImageNet-100). cw_rgp: CW-RGP's ImageNet transform.py (a bilinear crop
# first, then colour, grey, blur p 0.5 and flip; flip and this blur commute); its
# grayscale p 0.2 is the preset's default for --gs_p (config.py).
# intl: INTL's CifarTransform and ImageNetTransform (a bicubic crop first, then colour, grey,
# blur, solarization and flip; its grayscale p 0.2 is the preset's --gs_p default).
PRESETS = {
    "wmse": {"crop_first": False, "interpolation": "bicubic", "blur": False},
    "cw_rgp": {"crop_first": True, "interpolation": "bilinear", "blur": True},
    "intl": {"crop_first": True, "interpolation": "bicubic", "blur": False},
}
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
# PIL's ImageOps.solarize inverts the levels v >= 128 of uint8 images; on [0, 1] floats that
# are not whole levels, the ones that would round to 128 or more.
SOLARIZE_THRESHOLD = 127.5 / 255
Chance = float | tuple[float, ...]  # one probability for all views, or one per view
TRIES = 10  # RandomResizedCrop's tries at a crop box before its central fallback
# The columns of the one uniform draw per image (`Augment.sample`), each mapped onto its
# range by one affine map: the four colour-jitter factors (brightness, contrast, saturation,
# hue), the blur's sigma, the crop's TRIES area fractions and TRIES log aspect ratios, the
# crop's top and left, four keys whose ranks give the colour-jitter order, and the coins.
JITTER, SIGMA = slice(0, 4), 4
SCALE, LOG_RATIO = slice(5, 5 + TRIES), slice(5 + TRIES, 5 + 2 * TRIES)
POSITION = slice(5 + 2 * TRIES, 7 + 2 * TRIES)
ORDER = slice(7 + 2 * TRIES, 11 + 2 * TRIES)
COINS = slice(11 + 2 * TRIES, 16 + 2 * TRIES)  # jitter applied, blur, flip, grey, solarize
DRAWS = COINS.stop


class AugmentFlags(Protocol):
    """The training flags the augmentation reads (`wsl_ray.config.Config` has them; the
    config sits above the data, so it is named by this protocol)."""

    aug: str
    num_samples: int
    cj0: float
    cj1: float
    cj2: float
    cj3: float
    cj_p: float
    gs_p: float
    crop_s0: float
    crop_s1: float
    crop_r0: float
    crop_r1: float
    hf_p: float
    blur_p: list[float] | None
    solarize_p: list[float] | None
    compile: bool


@dataclass
class AugmentParams:
    """Random parameters for B images; every field has B rows."""

    crop: torch.Tensor  # [B, 4] float: top, left, height, width in pixels
    flip: torch.Tensor  # [B] bool
    jitter: torch.Tensor  # [B, 4] float: brightness, contrast, saturation, hue factors
    jitter_order: torch.Tensor  # [B, 4] long: a permutation of the four ops
    gray: torch.Tensor  # [B] bool
    blur_sigma: torch.Tensor  # [B] float, 0 where no blur
    size: torch.Tensor  # [B, 2] float: each image's height, width (top-left of the canvas)
    solarize: torch.Tensor  # [B] bool (drawn, and all False, also while solarization is off)


class Augment:
    """Draws views of a uint8 batch: `augment(x)` -> list of num_samples [B, C, size, size]
    in `out_dtype`, channels-last where `channels_last`."""

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_samples: int = 2,
        cj: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        cj_p: float = 0.8,
        gs_p: float = 0.1,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hf_p: float = 0.5,
        blur_p: Chance = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        interpolation: str = "bicubic",
        generator: torch.Generator | None = None,
        compile: bool = False,
        crop_first: bool = False,
        device: torch.device | str | None = None,
        solarize_p: Chance = 0.0,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ):
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be bicubic or bilinear, got {interpolation!r}")
        for name, p in (("blur_p", blur_p), ("solarize_p", solarize_p)):
            if isinstance(p, tuple) and len(p) != num_samples:
                raise ValueError(
                    f"{name} {p}: give one probability, or one per view ({num_samples})"
                )
        self.size, self.num_samples = size, num_samples
        # constants live where the images are: the generator's device unless told otherwise
        self.device = torch.device(device or (generator.device if generator else "cpu"))
        self.mean = torch.tensor(mean, device=self.device)
        self.std = torch.tensor(std, device=self.device)
        scale = (1 / self.std)[:, None, None]  # Normalize as x scale + shift, made once
        self._normalize = (-self.mean[:, None, None] * scale, scale)
        self._no_jitter = torch.tensor([1.0, 1.0, 1.0, 0.0], device=self.device)
        self.cj, self.cj_p, self.gs_p, self.hf_p = cj, cj_p, gs_p, hf_p
        self.crop_scale, self.crop_ratio = crop_scale, crop_ratio
        self.blur_p, self.blur_sigma, self.solarize_p = blur_p, blur_sigma, solarize_p
        self._blur_on = max(_views(blur_p)) > 0
        self._solarize_on = max(_views(solarize_p)) > 0
        self._low, self._span = self._draw_ranges()
        self._chances = self._coin_chances()
        self._hw_sign = torch.tensor([-1.0, 1.0], device=self.device)  # h ~ 1 / ratio, w ~ ratio
        self.interpolation = interpolation
        self.crop_first = crop_first  # crop before the colour ops (the CW-RGP preset)
        self.generator = generator
        self.out_dtype, self.channels_last = out_dtype, channels_last
        # torch.compile fuses the ~30 elementwise passes: 3x faster on 2 CPU cores
        self._apply = torch.compile(self.apply, dynamic=False) if compile else self.apply

    def _draw_ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """low [DRAWS], span [DRAWS]: column j of a draw is low_j + span_j u, u ~ U[0, 1); the
        jitter factors on [max(0, 1 - v), 1 + v] (hue [-v, v]), sigma on blur_sigma, the crop's
        area fractions on crop_scale and log ratios on log(crop_ratio); the rest stay U[0, 1)."""
        low, high = [0.0] * DRAWS, [1.0] * DRAWS
        ranges = [(max(0.0, 1 - v), 1 + v) for v in self.cj[:3]] + [(-self.cj[3], self.cj[3])]
        ranges.append(self.blur_sigma)
        ranges += [self.crop_scale] * TRIES + [tuple(map(math.log, self.crop_ratio))] * TRIES
        for j, (lo, hi) in enumerate(ranges):
            low[j], high[j] = lo, hi
        span = [hi - lo for lo, hi in zip(low, high, strict=True)]
        return torch.tensor(low, device=self.device), torch.tensor(span, device=self.device)

    def _coin_chances(self) -> torch.Tensor:
        """[V, 1, 5]: the probability of each coin (COINS' order) for the images of view v,
        V = num_samples where blur or solarization has one probability per view, else 1."""
        per_view = any(isinstance(p, tuple) for p in (self.blur_p, self.solarize_p))
        views = self.num_samples if per_view else 1
        rows = [
            [
                [
                    self.cj_p,
                    _of_view(self.blur_p, v),
                    self.hf_p,
                    self.gs_p,
                    _of_view(self.solarize_p, v),
                ]
            ]
            for v in range(views)
        ]
        return torch.tensor(rows, device=self.device)

    @classmethod
    def from_config(
        cls,
        cfg: AugmentFlags,
        size: int,
        mean,
        std,
        blur: bool = False,
        generator=None,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> Augment:
        """The reference pipeline from the training flags (blur_p 0.5 when `blur` unless
        --blur_p says otherwise); compiled with --compile. --aug picks the preset (PRESETS)."""
        preset = PRESETS[cfg.aug]
        blur_p = 0.5 if blur or preset["blur"] else 0.0
        return cls(
            size,
            mean,
            std,
            num_samples=cfg.num_samples,
            cj=(cfg.cj0, cfg.cj1, cfg.cj2, cfg.cj3),
            cj_p=cfg.cj_p,
            gs_p=cfg.gs_p,
            crop_scale=(cfg.crop_s0, cfg.crop_s1),
            crop_ratio=(cfg.crop_r0, cfg.crop_r1),
            hf_p=cfg.hf_p,
            blur_p=blur_p if cfg.blur_p is None else _chance(cfg.blur_p),
            interpolation=preset["interpolation"],
            generator=generator,
            compile=cfg.compile,
            crop_first=preset["crop_first"],
            solarize_p=_chance(cfg.solarize_p),
            out_dtype=out_dtype,
            channels_last=channels_last,
        )

    def __call__(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> list[torch.Tensor]:
        """x: uint8 [B, C, H, W] -> num_samples normalised views [B, C, size, size].

        sizes: int [B, 2], each image's (height, width) in the top-left of x, the rest
        being zero padding (None: every image fills x).
        """
        for what, t in (("images", x), ("sizes", sizes)):
            if t is not None and t.device != self.device:
                raise ValueError(
                    f"Augment was built for {self.device} but got {what} on {t.device}: pass "
                    "device= (or a generator on the images' device) when building it"
                )
        k = self.num_samples
        xk = x.repeat(k, 1, 1, 1)
        sizes = None if sizes is None else sizes.repeat(k, 1)
        views = self._apply(xk, self.sample(len(xk), x.shape[-2], x.shape[-1], sizes))
        return list(views.chunk(k))

    def draw(self, n: int) -> torch.Tensor:
        """n rows of DRAWS uniform numbers, each column on its range (`_draw_ranges`): all the
        random numbers of n images, in one draw from the generator (wherever it lives)."""
        draw_on = self.generator.device if self.generator is not None else self.device
        u = torch.rand(n, DRAWS, generator=self.generator, device=draw_on).to(self.device)
        return torch.addcmul(self._low, u, self._span)

    def sample(
        self, n: int, height: int, width: int, sizes: torch.Tensor | None = None
    ) -> AugmentParams:
        """Draws each image's parameters as torchvision's transforms would, for n images
        on a height x width canvas, each of size sizes[i] (int [n, 2]; None: the canvas).
        With per-view probabilities the n images are num_samples views, one after another
        (as `__call__` stacks them)."""
        if sizes is None:  # one size for all: the broadcast case of the same code
            sizes = full_sizes(1, height, width, self.device)
        return self.params(self.draw(n), sizes.float().expand(n, 2))

    def params(self, u: torch.Tensor, size: torch.Tensor) -> AugmentParams:
        """The parameters of n images from their draws u [n, DRAWS] (`draw`) and sizes
        [n, 2] (float): each coin is u < its probability, the jitter order the ranks of four
        uniform keys (a uniform permutation), the crops `crops`."""
        views = len(self._chances)
        if len(u) % views:
            raise ValueError(f"{len(u)} images are not {views} views of equally many")
        coins = u[:, COINS].view(views, len(u) // views, -1) < self._chances
        applied, blur, flip, gray, solarize = coins.view(len(u), -1).unbind(dim=1)
        return AugmentParams(
            crop=self.crops(u, size),
            flip=flip,
            jitter=torch.where(applied[:, None], u[:, JITTER], self._no_jitter),
            jitter_order=u[:, ORDER].argsort(dim=1),
            gray=gray,
            blur_sigma=u[:, SIGMA] * blur,
            size=size,
            solarize=solarize,
        )

    def crops(self, u: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop.get_params for n images at once, image i of size[i] = (height,
        width) (float [n, 2]), from their draws u [n, DRAWS]: TRIES tries of area fraction
        s ~ U(scale), log ratio r ~ U(log ratio), h = round(sqrt(s hw / e^r)),
        w = round(sqrt(s hw e^r)); the first that fits, at a uniform position, else the
        central crop. Returns [n, 4]: top, left, h, w."""
        area = u[:, SCALE] * size.prod(dim=1, keepdim=True)  # [n, TRIES]
        ratio = torch.exp(u[:, LOG_RATIO, None] * self._hw_sign)  # [n, TRIES, 2]: 1/r, r
        hw = torch.round(torch.sqrt(area[..., None] * ratio))
        ok = ((hw > 0) & (hw <= size[:, None])).all(dim=2)  # [n, TRIES]
        first = ok.float().argmax(dim=1)  # the first try that fits
        hw = hw.gather(1, first[:, None, None].expand(-1, 1, 2))[:, 0]  # [n, 2]
        top_left = torch.floor(u[:, POSITION] * (size + 1 - hw))  # uniform in 0..size - hw
        crops = torch.cat([top_left, hw], dim=1)
        return torch.where(ok.any(dim=1, keepdim=True), crops, self._central_crop(size))

    def _central_crop(self, size: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop's fallback box [n, 4] for images of size [n, 2]: the whole
        image, its aspect ratio clamped into crop_ratio, centred. In float64, as Python's
        floats give torchvision's."""
        size = size.double()
        height, width = size.unbind(dim=1)
        in_ratio = width / height
        low, high = self.crop_ratio
        h = torch.where(in_ratio < low, torch.round(width / low), height)
        w = torch.where(in_ratio > high, torch.round(height * high), width)
        hw = torch.stack([h, w], dim=1)
        top_left = torch.div(size - hw, 2, rounding_mode="floor")
        return torch.cat([top_left, hw], dim=1).float()

    def apply(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Deterministic part: uint8 [B, C, H, W] and parameters -> views in out_dtype
        (channels-last where asked), computed in float32 (autocast off)."""
        with torch.autocast(x.device.type, enabled=False):
            x = x * (1 / 255)  # float32
            if self.crop_first:
                x = resized_crop_flip(x, p.crop, p.flip, self.size, self.interpolation)
            # before the crop the contrast's mean grey is over each image, not its canvas
            area = None if self.crop_first else p.size.prod(dim=1)
            x = color_jitter(x, p.jitter, p.jitter_order, area)
            x = torch.where(p.gray[:, None, None, None], grayscale(x).expand_as(x), x)
            if not self.crop_first:
                x = resized_crop_flip(x, p.crop, p.flip, self.size, self.interpolation)
            if self._blur_on:
                x = gaussian_blur(x, p.blur_sigma, math.ceil(3 * self.blur_sigma[1]))
            if self._solarize_on:
                x = solarize(x, p.solarize)
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            out = torch.empty(x.shape, dtype=self.out_dtype, device=x.device, memory_format=layout)
            shift, scale = self._normalize
            return torch.addcmul(shift, x, scale, out=out)  # cast and laid out as it is written


def _views(p: Chance) -> tuple[float, ...]:
    return p if isinstance(p, tuple) else (p,)


def _of_view(p: Chance, view: int) -> float:
    return p[view] if isinstance(p, tuple) else p


def _chance(values: list[float]) -> Chance:
    """A flag's list of probabilities: one value for all views, else one per view."""
    return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)


def solarize(x: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.solarize (threshold 128) of the images `where` [B] (bool) is set:
    each level v of float RGB [B, C, H, W] in [0, 1] becomes 1 - v where v >= 127.5 / 255,
    i.e. where the uint8 level it rounds to is 128 or more."""
    flip = where[:, None, None, None] & (x >= SOLARIZE_THRESHOLD)
    return torch.where(flip, 1 - x, x)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float RGB [B, 3, H, W] -> [B, 1, H, W] (grey input passes through)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[:, None]


def _blend_coefficients(
    jitter: torch.Tensor, order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image coefficients f, a, b [B, 6] of the six blend rounds of `color_jitter`.

    Round r < 3 is position r of each image's order, run before the hue (active where the
    hue comes later); round r >= 3 is position r - 2, run after it (active where the hue
    came earlier). An active round's op o gets f = jitter[o], a = 1 - f for saturation,
    b = 1 - f for contrast; an inactive one (or the hue's own position) f = 1, a = b = 0.
    """
    hue_seen = (order == HUE).cumsum(dim=1)[:, :3]  # [B, 3]: 1 from the hue's position on
    before = hue_seen == 0
    active = torch.cat([before, ~before], dim=1)
    ops = torch.cat([order[:, :3], order[:, 1:]], dim=1)  # [B, 6]
    f = torch.where(active, jitter.gather(1, ops), 1.0)
    a = (1 - f) * (ops == SATURATION)
    b = (1 - f) * (ops == CONTRAST)
    return f, a, b


def _blend(
    x: torch.Tensor,
    f: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    area: torch.Tensor | None,
) -> torch.Tensor:
    """Torchvision's blend clamp(f x + (1 - f) other, 0, 1) of each image with other = 0
    (brightness), its mean grey level (contrast) or its grey image (saturation), written as
    clamp(f x + a gray + b mean(gray), 0, 1) with per-image coefficients [B] in one pass;
    f = 1, a = b = 0 is the identity. The mean grey level is sum(gray) / area (area [B];
    None: H W)."""
    gray = grayscale(x)
    pixels = gray.shape[-2] * gray.shape[-1] if area is None else area[:, None, None, None]
    b_mean = b[:, None, None, None] * (gray.sum(dim=(-2, -1), keepdim=True) / pixels)
    other = torch.addcmul(b_mean, a[:, None, None, None], gray)
    return torch.addcmul(other, f[:, None, None, None], x).clamp_(0, 1)


def color_jitter(
    x: torch.Tensor,
    jitter: torch.Tensor,
    order: torch.Tensor,
    area: torch.Tensor | None = None,
) -> torch.Tensor:
    """ColorJitter with per-image factors [B, 4] and op order [B, 4], for float RGB in [0, 1].

    The blend ops before hue in each image's order run first (rounds 0-2), then hue (one
    HSV round trip for the whole batch), then the blend ops after it (rounds 3-5, positions
    1-3); `_blend_coefficients` gives every round's coefficients at once.

    area [B]: each image's pixel count when it fills only part of x, the rest being zero
    padding (None: all of x). Brightness, saturation and hue map black to black, and each
    image's contrast op runs once, so its padding is still zero when the contrast sums the
    grey levels: sum / area is the mean over the image alone. (Contrast makes the padding
    grey; the crops never read it.)
    """
    f, a, b = _blend_coefficients(jitter, order)
    for r in range(6):
        if r == 3 and x.shape[1] == 3:
            x = adjust_hue(x, jitter[:, HUE])
        x = _blend(x, f[:, r], a[:, r], b[:, r], area)
    return x


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotates the hue of float RGB [B, 3, H, W] by shift [B] (in turns, [-0.5, 0.5]).

    In HSV terms: value v = max, chroma c = max - min; hue h in sixths of a turn is decided
    by the largest channel. A hue rotation keeps v and c, and channel n of the result is
    v - c clamp(min(k, 4 - k), 0, 1) with k = (n + 6 h') mod 6, n = 5, 3, 1 for R, G, B.
    """
    vmax, argmax = x.max(dim=1)
    chroma = vmax - x.min(dim=1).values
    r, g, b = x.unbind(dim=1)
    h6 = torch.where(
        argmax == 0, g - b, torch.where(argmax == 1, b - r + 2 * chroma, r - g + 4 * chroma)
    )
    h6 = h6 / torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h6 = (h6 + 6 * shift[:, None, None]) % 6
    n = torch.arange(5, 0, -2, device=x.device, dtype=x.dtype)[None, :, None, None]  # 5, 3, 1
    k = (n + h6[:, None]) % 6
    ramp = torch.minimum(k, 4 - k).clamp_(0, 1)
    return (vmax[:, None] - chroma[:, None] * ramp).clamp_(0, 1)


def _cubic(d: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with PIL's a = -0.5."""
    d = d.abs()
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return torch.where(d <= 1, near, torch.where(d < 2, far, torch.zeros_like(d)))


def _triangle(d: torch.Tensor) -> torch.Tensor:
    return (1 - d.abs()).clamp(min=0)


KERNELS = {"bicubic": _cubic, "bilinear": _triangle}


def resample_matrix(
    start: torch.Tensor,
    length: torch.Tensor,
    out_size: int,
    in_size: int,
    flip: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """Weights [B, out_size, in_size] that resize the window [start, start + length) of
    each row to out_size samples, reversed where `flip`.

    Output j samples at c_j = start + (j + 0.5) length / out_size. Its weights are
    kernel((i + 0.5 - c_j) / s) over the pixels i inside the window, renormalised, with
    s = max(length / out_size, 1): the kernel widens when shrinking (antialiasing), as
    PIL and torchvision's antialiased resize do.
    """
    scale = length / out_size
    stretch = scale.clamp(min=1)[:, None, None]
    t = torch.arange(out_size, device=start.device, dtype=start.dtype) + 0.5
    t = torch.where(flip[:, None], out_size - t, t)
    centres = start[:, None] + t * scale[:, None]  # [B, out]
    pixels = torch.arange(in_size, device=start.device, dtype=start.dtype) + 0.5
    weights = KERNELS[mode]((pixels - centres[:, :, None]) / stretch)
    inside = (pixels >= start[:, None]) & (pixels < (start + length)[:, None])
    weights = weights * inside[:, None, :]
    return weights / weights.sum(dim=-1, keepdim=True)


def resized_crop_flip(
    x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, size: int, mode: str = "bicubic"
) -> torch.Tensor:
    """Crops box (top, left, h, w) of each image of x [B, C, H, W], resizes it to
    size x size and flips it where asked: out = Ry x Rx^T, two batched matrix products
    with the separable weights of `resample_matrix`.
    """
    top, left, h, w = crop.unbind(dim=1)
    no_flip = torch.zeros_like(flip)
    rows = resample_matrix(top, h, size, x.shape[-2], no_flip, mode)  # [B, size, H]
    cols = resample_matrix(left, w, size, x.shape[-1], flip, mode)  # [B, size, W]
    out = rows[:, None] @ x @ cols.transpose(-1, -2)[:, None]
    return out.clamp_(0, 1) if mode == "bicubic" else out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-image sigma [B] (0: unchanged), reflect padding.

    The kernel has 2 radius + 1 taps for every image (3 x the largest sigma the settings
    allow), so its shape never depends on the data.
    """
    b, c, height, width = x.shape
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.clamp_min(1e-3)[:, None]
    kernel = torch.exp(-0.5 * (taps[None] / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, K]; sigma ~ 0 gives a delta
    kernel = kernel.repeat_interleave(c, dim=0)  # one kernel per (image, channel)
    y = F.pad(x.reshape(1, b * c, height, width), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)
    return y.reshape(b, c, height, width)
