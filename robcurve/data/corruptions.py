"""Common corruptions in torch, and corrupted views of any dataset (METHOD.md §5).

Every corruption maps images (N, C, H, W) in [0, 1] (C = 1 grey or 3 colour, any size) to
images of the same shape and dtype in [0, 1]. Severities are 1..5. Randomness comes from
per-sample ``torch.Generator`` objects: sample i of ``corrupt(x, name, s, seed)`` depends only
on (seed, i, name), its severity and its own pixels, never on the other samples of the batch;
the random draws are the same at every severity (only the strength changes). A corrupted
dataset view seeds each sample by its index in the official split.

Severity parameters are the values of CIFAR-10-C (Hendrycks & Dietterich, *Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations*, ICLR 2019; the 32 px
CIFAR set, not the 224 px ImageNet-C set), re-implemented here from the values::

    ================== ============================================== ===========================================
    corruption         parameter (severity 1, 2, 3, 4, 5)             meaning
    ================== ============================================== ===========================================
    gaussian_noise     σ = .04, .06, .08, .09, .10                    x + N(0, σ²)
    shot_noise         λ = 500, 250, 100, 75, 50                      Poisson(λ x) / λ
    impulse_noise      a = .01, .02, .03, .05, .07                    share of values set to 0 or 1 (half each)
    speckle_noise*     σ = .06, .10, .12, .16, .20                    x + x · N(0, σ²)
    gaussian_blur*     σ = .4, .6, .7, .8, 1.0 px                     Gaussian blur
    glass_blur         (σ, δ, it) = (.05,1,1) (.25,1,1) (.4,1,1)      blur σ, `it` passes of swapping each pixel
                       (.25,1,2) (.4,1,2)                             with a random one within δ px, blur σ
    defocus_blur       (r, a) = (.3,.4) (.4,.5) (.5,.6) (1,.2)        disk kernel of radius r px smoothed by a
                       (1.5,.1)                                       Gaussian of σ = a px
    motion_blur        (r, σ) = (6,1) (6,1.5) (6,2) (8,2) (9,2.5)     one-sided line kernel: taps 0..2r px along a
                                                                      random angle in [−45°, 45°], weights
                                                                      exp(−t²/2σ²)
    zoom_blur          z_max = 1.05, 1.10, 1.15, 1.20, 1.25           mean of x and x zoomed about the centre by
                                                                      1.00, 1.01, …, z_max
    snow               (μ, s, zoom, thr, r, σ, b) = (.1,.2,1,.6,8,3,.95) (.1,.2,1,.5,10,4,.9) (.15,.3,1.75,.55,10,4,.9)
                       (.25,.3,2.25,.6,12,6,.85) (.3,.3,1.25,.65,14,12,.8): flakes N(μ, s²) zoomed, kept above thr,
                       motion-blurred (r, σ, angle in [−135°, −45°]); image b·x + (1−b)·max(x, 1.5·grey(x)+.5);
                       output x + flakes + flakes rotated 180°
    fog                (c, d) = (.2,3) (.5,3) (.75,2.5) (1,2) (1.5,1.75)  x + c · plasma fractal (roughness d), then
                                                                      · max(x) / (max(x) + c)
    brightness         c = .05, .10, .15, .20, .30                    V += c in HSV (colour); x + c (grey)
    contrast           c = .75, .50, .40, .30, .15                    (x − mean) · c + mean, per image and channel
    elastic_transform  (α, σ, β) · size = (0,0,.08) (.05,.2,.07)      random affine (3 points moved ≤ β px), then
                       (.08,.06,.06) (.10,.04,.05) (.10,.03,.03)      displacement field N·α, smoothed by σ px
    pixelate           f = .95, .90, .85, .75, .65                    box-downsample to ⌊f·size⌋ px, upsample back
    jpeg_compression   q = 80, 65, 58, 50, 40                         JPEG quality (Pillow, 4:2:0 for colour)
    ================== ============================================== ===========================================

(* = one of CIFAR-10-C's four extra corruptions, not among the 15 of the benchmark.)

Adaptations (our choices, each stated where it is made):

* **Image size.** Lengths in pixels (blur σ and radii, motion lengths, snow streaks) are the
  CIFAR-10-C values times ``min(H, W) / 32``: ×0.875 on 28 px Fashion-MNIST, ×1 on 32 px.
  Lengths CIFAR-10-C defines as fractions of the image (elastic, pixelate, zoom) stay
  fractions. Glass blur's swap distance δ = 1 px stays 1 px (it cannot shrink). For large
  images this is CIFAR-10-C scaled, not ImageNet-C.
* **Grey images.** brightness is additive (the V channel of a grey pixel is the pixel, so it
  is the same operation); contrast, fog and snow use the single channel as grey; JPEG uses
  Pillow's "L" mode.
* **Defocus** uses an area-weighted (anti-aliased) disk, so a radius scaled to 0.875 px still
  blurs more than radius 0.5 px; CIFAR-10-C's disk takes whole pixels within the radius.
* **Glass blur** keeps CIFAR-10-C's scan (bottom-right to top-left) and its offsets, uniform
  in {−δ, …, δ−1} (so pixels drift up and left), and does not round to 8 bits between passes.
* **Motion blur** (and snow's streaks) replaces ImageMagick's kernel with the same one-sided
  Gaussian-weighted line (2r + 1 taps at distances 0, 1, …, 2r px), splatted bilinearly at
  sub-pixel positions, edges replicated; taps beyond 4σ (weight < e⁻⁸) are dropped. With
  CIFAR-10-C's values severities 3 and 4, (6, 2) and (8, 2), differ only in such taps, so
  they are equal here and practically equal in CIFAR-10-C.
* **Fog**: diamond-square fractal on a periodic grid of side the next power of two ≥ the
  image; the noise amplitude shrinks by d² per octave (CIFAR-10-C's "wibble" is divided by d
  per octave and enters squared); normalised to [0, 1]; one fractal per image.
* **Elastic**: the affine map and the displacement are composed into one bilinear resampling
  (CIFAR-10-C resamples twice), with reflected borders.
* **Pixelate** resamples with a box filter written here in torch that samples pixel centres
  as Pillow's BOX filter does (equal to Pillow's result within 1/255, Pillow rounding to 8 bits).
* **Outputs** stay floating point (CIFAR-10-C stores 8-bit images); only JPEG quantises.

Not implemented: ``frost`` (needs the frost photographs shipped with CIFAR-10-C), ``spatter``
and ``saturate`` (extras; saturate does nothing to grey images). Real CIFAR-10-C files hold
all 19; :func:`load_cifar10c` reads any of them.
"""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robcurve.data.base import VIEWS, SampleSet, load_dataset, select
from robcurve.errors import RobcurveError
from robcurve.registry import Registry

__all__ = ["CORRUPTIONS", "CIFAR10C_CORRUPTIONS", "CIFAR10C_EXTRA", "NOT_IMPLEMENTED", "SEVERITIES",
           "corrupt", "corruption_suite", "load_corrupted", "load_cifar10c", "parse_corrupted_name",
           "robustbench_corruptions_view", "sample_seed"]

SEVERITIES = (1, 2, 3, 4, 5)
#: The 15 corruptions of the CIFAR-10-C benchmark (and of RobustBench's `corruptions` threat model).
CIFAR10C_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                        "elastic_transform", "pixelate", "jpeg_compression")
#: CIFAR-10-C's four extra corruptions (files exist, not part of the benchmark mean).
CIFAR10C_EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
NOT_IMPLEMENTED = {"frost": "needs the frost photographs distributed with CIFAR-10-C",
                   "spatter": "extra corruption, not part of the 15",
                   "saturate": "extra corruption; does nothing to grey images"}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CorruptionFn = Callable[[Tensor, Any, "_Rng"], Tensor]


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: ``fn(x, param, rng) -> x'`` and its five severity parameters."""

    name: str
    fn: CorruptionFn
    params: tuple[Any, ...]
    family: str  # noise | blur | weather | digital
    random: bool  # whether the result depends on the seed
    benchmark: bool  # one of the 15 CIFAR-10-C benchmark corruptions


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def _register(name: str, params: tuple[Any, ...], family: str, random: bool, benchmark: bool = True):
    def deco(fn: CorruptionFn) -> CorruptionFn:
        assert len(params) == 5
        CORRUPTIONS.add(name, Corruption(name, fn, params, family, random, benchmark),
                        family=family, random=random, benchmark=benchmark, params=params)
        return fn

    return deco


# ---------------------------------------------------------------------------------------------
# seeding

_MASK64 = (1 << 64) - 1


def _splitmix(h: int) -> int:
    h = (h + 0x9E3779B97F4A7C15) & _MASK64
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
    return h ^ (h >> 31)


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample ``index`` (a position or a split index) under ``seed``."""
    return _splitmix(_splitmix(int(seed) & _MASK64) ^ (int(index) & _MASK64)) >> 1


class _Rng:
    """One torch.Generator per sample; every draw returns a (N, *shape) float32 CPU tensor."""

    def __init__(self, seeds: Sequence[int], salt: int):
        self.gens = [torch.Generator().manual_seed(_splitmix(int(s) ^ salt) >> 1) for s in seeds]

    def __len__(self) -> int:
        return len(self.gens)

    def rand(self, *shape: int) -> Tensor:
        return torch.stack([torch.rand(shape, generator=g) for g in self.gens])

    def randn(self, *shape: int) -> Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.gens])

    def uniform(self, lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * self.rand(*shape)

    def randint(self, lo: int, hi: int, *shape: int) -> Tensor:
        """Integers in [lo, hi] (inclusive)."""
        return torch.stack([torch.randint(lo, hi + 1, shape, generator=g) for g in self.gens])

    def poisson(self, rate: Tensor) -> Tensor:
        r = rate.detach().to("cpu", torch.float32)
        return torch.stack([torch.poisson(r[i], generator=g) for i, g in enumerate(self.gens)])


# ---------------------------------------------------------------------------------------------
# helpers


def _scale(x: Tensor) -> float:
    """Pixel lengths are CIFAR-10-C's (32 px) times this."""
    return min(x.shape[-2:]) / 32.0


def _gauss1d(sigma: float, truncate: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    r = max(1, int(math.ceil(truncate * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def _pad_mode(x: Tensor, pad: int) -> str:
    return "reflect" if pad < min(x.shape[-2:]) else "replicate"


def gaussian_filter(x: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur of (N, C, H, W) with σ in pixels, reflected borders (σ ≤ 0: copy)."""
    if sigma <= 0:
        return x.clone()
    n, c, h, w = x.shape
    k = _gauss1d(sigma, truncate, x.dtype, x.device)
    r = (k.numel() - 1) // 2
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=_pad_mode(x, r)), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=_pad_mode(x, r)), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def _conv_per_sample(x: Tensor, kernels: Tensor, mode: str = "replicate") -> Tensor:
    """Correlate each image (all channels) with its own odd-sized kernel (N, k, k)."""
    n, c, h, w = x.shape
    k = kernels.shape[-1]
    r = k // 2
    weight = kernels.to(x).repeat_interleave(c, dim=0).unsqueeze(1)  # (N*C, 1, k, k)
    if mode == "reflect" and r >= min(h, w):
        mode = "replicate"
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode=mode)
    return F.conv2d(y, weight, groups=n * c).reshape(n, c, h, w)


def _motion_kernels(length: float, sigma: float, angles_deg: Tensor) -> Tensor:
    """One-sided line kernels (N, k, k): taps t = 0..length px along each angle, weight exp(−t²/2σ²).

    Each tap is splatted bilinearly onto the pixel grid; the kernel sums to 1. A correlation
    with it averages the pixels x(p + t·(cos θ, sin θ)) (x right, y down).
    """
    # taps beyond 4σ (weight < exp(-8)) are dropped
    n_taps = max(1, int(math.floor(min(length, 4 * sigma))) + 1)
    t = torch.arange(n_taps, dtype=torch.float64)
    wt = torch.exp(-0.5 * (t / max(sigma, 1e-6)) ** 2)
    r = n_taps
    k = 2 * r + 1
    th = torch.deg2rad(angles_deg.to(torch.float64))
    out = torch.zeros(len(th), k * k, dtype=torch.float64)
    px = r + t.unsqueeze(0) * torch.cos(th).unsqueeze(1)  # (N, T) column
    py = r + t.unsqueeze(0) * torch.sin(th).unsqueeze(1)  # row
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi = (x0 + dx).clamp(0, k - 1).long()
        yi = (y0 + dy).clamp(0, k - 1).long()
        out.scatter_add_(1, yi * k + xi, wgt * wt)
    out = out / out.sum(1, keepdim=True)
    return out.view(-1, k, k).float()


def _base_grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates (rows, cols), each (H, W)."""
    ys = torch.arange(h, dtype=dtype, device=device)
    xs = torch.arange(w, dtype=dtype, device=device)
    return torch.meshgrid(ys, xs, indexing="ij")


def _sample_at(x: Tensor, rows: Tensor, cols: Tensor, padding: str = "reflection") -> Tensor:
    """Bilinear samples of x (N, C, H, W) at pixel coordinates rows/cols (N, H, W)."""
    h, w = x.shape[-2:]
    gx = (2 * cols + 1) / w - 1  # align_corners=False convention
    gy = (2 * rows + 1) / h - 1
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _zoom(x: Tensor, factor: float | Tensor) -> Tensor:
    """Zoom in about the image centre by ``factor`` (≥ 1), keeping the size (bilinear)."""
    n, _, h, w = x.shape
    rr, cc = _base_grid(h, w, torch.float64, x.device)
    f = torch.as_tensor(factor, dtype=torch.float64, device=x.device).reshape(-1, 1, 1).expand(n, 1, 1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    return _sample_at(x, cy + (rr - cy) / f, cx + (cc - cx) / f, padding="border")


def _grey(x: Tensor) -> Tensor:
    """Luma (N, 1, H, W): the channel itself for grey, ITU-R 601 weights for RGB."""
    if x.shape[1] == 3:
        wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * wts).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def plasma_fractal(rng: _Rng, size: int, decay: float) -> Tensor:
    """Seeded diamond-square fractals (N, S, S) in [0, 1], S = next power of two ≥ size.

    Periodic grid; each octave adds uniform noise whose amplitude is the previous one / decay².
    """
    s = 1 << max(1, int(math.ceil(math.log2(max(size, 2)))))
    n = len(rng)
    m = torch.zeros(n, s, s, dtype=torch.float64)
    step, amp = s, 1.0
    while step >= 2:
        half = step // 2
        corners = m[:, ::step, ::step]
        sq = corners + corners.roll(-1, dims=1)
        sq = sq + sq.roll(-1, dims=2)
        k = corners.shape[1]
        m[:, half::step, half::step] = sq / 4 + amp * rng.uniform(-1, 1, k, k).double()
        centres = m[:, half::step, half::step]
        top = corners + corners.roll(-1, dims=2) + centres + centres.roll(1, dims=1)
        m[:, ::step, half::step] = top / 4 + amp * rng.uniform(-1, 1, k, k).double()
        left = corners + corners.roll(-1, dims=1) + centres + centres.roll(1, dims=2)
        m[:, half::step, ::step] = left / 4 + amp * rng.uniform(-1, 1, k, k).double()
        step = half
        amp /= decay**2
    lo = m.amin(dim=(1, 2), keepdim=True)
    hi = m.amax(dim=(1, 2), keepdim=True)
    return ((m - lo) / (hi - lo).clamp_min(1e-12)).float()


# ---------------------------------------------------------------------------------------------
# noise


@_register("gaussian_noise", (0.04, 0.06, 0.08, 0.09, 0.10), "noise", True)
def _gaussian_noise(x: Tensor, sigma: float, rng: _Rng) -> Tensor:
    return x + sigma * rng.randn(*x.shape[1:]).to(x)


@_register("shot_noise", (500, 250, 100, 75, 50), "noise", True)
def _shot_noise(x: Tensor, lam: float, rng: _Rng) -> Tensor:
    return rng.poisson(x.clamp(0, 1) * lam).to(x) / lam


@_register("impulse_noise", (0.01, 0.02, 0.03, 0.05, 0.07), "noise", True)
def _impulse_noise(x: Tensor, amount: float, rng: _Rng) -> Tensor:
    u = rng.rand(*x.shape[1:]).to(x.device)
    out = x.clone()
    out[u < amount / 2] = 0.0
    out[(u >= amount / 2) & (u < amount)] = 1.0
    return out


@_register("speckle_noise", (0.06, 0.10, 0.12, 0.16, 0.20), "noise", True, benchmark=False)
def _speckle_noise(x: Tensor, sigma: float, rng: _Rng) -> Tensor:
    return x + x * sigma * rng.randn(*x.shape[1:]).to(x)


# ---------------------------------------------------------------------------------------------
# blur


@_register("gaussian_blur", (0.4, 0.6, 0.7, 0.8, 1.0), "blur", False, benchmark=False)
def _gaussian_blur(x: Tensor, sigma: float, rng: _Rng) -> Tensor:
    return gaussian_filter(x, sigma * _scale(x))


@_register("glass_blur", ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)), "blur", True)
def _glass_blur(x: Tensor, p: tuple[float, int, int], rng: _Rng) -> Tensor:
    sigma, delta, iters = p[0] * _scale(x), int(p[1]), int(p[2])
    n, c, h, w = x.shape
    y = gaussian_filter(x, sigma)
    # scan from the bottom-right corner; offsets in {-delta, ..., delta - 1} as CIFAR-10-C draws them,
    # so a pixel moved up or left can be moved again later in the same pass
    hs = list(range(h - delta, delta, -1))
    ws = list(range(w - delta, delta, -1))
    if hs and ws:
        offs = rng.randint(-delta, delta - 1, iters, len(hs), len(ws), 2).to(x.device)
        ar = torch.arange(n, device=x.device)
        for it in range(iters):
            for i, hh in enumerate(hs):
                for j, ww in enumerate(ws):
                    hp = hh + offs[:, it, i, j, 0]
                    wp = ww + offs[:, it, i, j, 1]
                    a = y[:, :, hh, ww].clone()
                    y[:, :, hh, ww] = y[ar, :, hp, wp]
                    y[ar, :, hp, wp] = a
    return gaussian_filter(y, sigma)


def _disk_kernel(radius: float, alias_sigma: float) -> Tensor:
    """Area-weighted disk of ``radius`` px (8x8 supersampling per pixel), smoothed by a 3x3 Gaussian."""
    r = int(math.ceil(radius + 0.5)) + 1
    ss = 8
    t = (torch.arange(-r * ss, (r + 1) * ss, dtype=torch.float64) + 0.5) / ss - 0.5  # sub-pixel centres
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    inside = ((xx**2 + yy**2) <= radius**2).double()
    k = inside.view(2 * r + 1, ss, 2 * r + 1, ss).mean(dim=(1, 3))
    if k.sum() == 0:  # radius below the centre sub-sample: identity
        k[r, r] = 1.0
    k = k / k.sum()
    if alias_sigma > 0:
        g = torch.exp(-0.5 * (torch.arange(-1, 2, dtype=torch.float64) / alias_sigma) ** 2)
        g2 = torch.outer(g, g)
        k = F.conv2d(F.pad(k.view(1, 1, *k.shape), (2, 2, 2, 2)), (g2 / g2.sum()).view(1, 1, 3, 3)).view(2 * r + 3, 2 * r + 3)
    return (k / k.sum()).float()


@_register("defocus_blur", ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)), "blur", False)
def _defocus_blur(x: Tensor, p: tuple[float, float], rng: _Rng) -> Tensor:
    s = _scale(x)
    k = _disk_kernel(p[0] * s, p[1] * s)
    return _conv_per_sample(x, k.unsqueeze(0).expand(x.shape[0], -1, -1), mode="reflect")


@_register("motion_blur", ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)), "blur", True)
def _motion_blur(x: Tensor, p: tuple[float, float], rng: _Rng) -> Tensor:
    s = _scale(x)
    angles = rng.uniform(-45.0, 45.0, 1).view(-1)
    return _conv_per_sample(x, _motion_kernels(2 * p[0] * s, p[1] * s, angles))


@_register("zoom_blur", (1.05, 1.10, 1.15, 1.20, 1.25), "blur", False)
def _zoom_blur(x: Tensor, zmax: float, rng: _Rng) -> Tensor:
    factors = [1 + 0.01 * i for i in range(int(round((zmax - 1) / 0.01)) + 1)]
    acc = x.clone()
    for f in factors:
        acc = acc + _zoom(x, f)
    return acc / (len(factors) + 1)


# ---------------------------------------------------------------------------------------------
# weather


@_register("snow", ((0.1, 0.2, 1.0, 0.6, 8, 3, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
                    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)), "weather", True)
def _snow(x: Tensor, p: tuple[float, ...], rng: _Rng) -> Tensor:
    mu, sd, zoom, thr, radius, sigma, blend = p
    n, _, h, w = x.shape
    s = _scale(x)
    flakes = (mu + sd * rng.randn(1, h, w)).to(x)
    flakes = _zoom(flakes, zoom)
    flakes = torch.where(flakes < thr, torch.zeros_like(flakes), flakes).clamp(0, 1)
    angles = rng.uniform(-135.0, -45.0, 1).view(-1)
    flakes = _conv_per_sample(flakes, _motion_kernels(2 * radius * s, sigma * s, angles))
    base = blend * x + (1 - blend) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return base + flakes + flakes.flip(-1, -2)


@_register("fog", ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)), "weather", True)
def _fog(x: Tensor, p: tuple[float, float], rng: _Rng) -> Tensor:
    c, decay = p
    h, w = x.shape[-2:]
    frac = plasma_fractal(rng, max(h, w), decay)[:, :h, :w].unsqueeze(1).to(x)
    mx = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + c * frac) * mx / (mx + c)


@_register("brightness", (0.05, 0.10, 0.15, 0.20, 0.30), "weather", False)
def _brightness(x: Tensor, c: float, rng: _Rng) -> Tensor:
    if x.shape[1] == 1:
        return x + c
    # HSV with hue and saturation fixed: RGB scales with V = max channel
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp(0, 1)
    scaled = x * (v2 / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v2.expand_as(x))


# ---------------------------------------------------------------------------------------------
# digital


@_register("contrast", (0.75, 0.5, 0.4, 0.3, 0.15), "digital", False)
def _contrast(x: Tensor, c: float, rng: _Rng) -> Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


@_register("elastic_transform", ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.10, 0.04, 0.05),
                                 (0.10, 0.03, 0.03)), "digital", True)
def _elastic(x: Tensor, p: tuple[float, float, float], rng: _Rng) -> Tensor:
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, beta = p[0] * size, p[1] * size, p[2] * size
    dev = x.device
    # random affine: three points (c+d, c+d), (c+d, c-d), (c-d, c-d) each moved by U(-beta, beta)
    cy, cx, d = h // 2, w // 2, size // 3
    src = torch.tensor([[cx + d, cy + d], [cx + d, cy - d], [cx - d, cy - d]], dtype=torch.float64)  # (x, y)
    dst = src.unsqueeze(0) + rng.uniform(-beta, beta, 3, 2).double()  # (N, 3, 2)
    # affine A (N, 2, 3) with dst = A [src; 1]; the output at q samples the input at A^-1 q
    src_h = torch.cat([src, torch.ones(3, 1, dtype=torch.float64)], 1)  # (3, 3)
    a = torch.linalg.solve(src_h.unsqueeze(0).expand(n, 3, 3), dst).transpose(1, 2)  # (N, 2, 3)
    full = torch.cat([a, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(n, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # (N, 2, 3)
    # elastic displacement, smoothed uniform noise times alpha (pixels)
    disp = rng.uniform(-1, 1, 2, h, w).double()
    disp = gaussian_filter(disp, sigma, truncate=3.0) * alpha if sigma > 0 else disp * 0.0
    rr, cc = _base_grid(h, w, torch.float64, torch.device("cpu"))
    qx = cc.unsqueeze(0) + disp[:, 0]
    qy = rr.unsqueeze(0) + disp[:, 1]
    sx = inv[:, 0, 0, None, None] * qx + inv[:, 0, 1, None, None] * qy + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * qx + inv[:, 1, 1, None, None] * qy + inv[:, 1, 2, None, None]
    return _sample_at(x, sy.to(dev), sx.to(dev), padding="reflection")


def _box_weights(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) box-filter resampling matrix, sampling pixel centres (as PIL's BOX filter).

    Output pixel i has centre c = (i + ½)·n_in/n_out in input coordinates; input pixel j
    enters with weight 1 when −½ < (j + ½ − c)/s ≤ ½, s = max(n_in/n_out, 1); rows are
    normalised. Downsampling averages the input pixels whose centres fall in the output
    pixel's box; upsampling copies the nearest input pixel (centre-aligned).
    """
    scale = n_in / n_out
    fs = max(scale, 1.0)
    c = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale
    u = ((torch.arange(n_in, dtype=torch.float64) + 0.5).unsqueeze(0) - c.unsqueeze(1)) / fs
    w = ((u > -0.5) & (u <= 0.5)).double()
    empty = w.sum(1) == 0
    if empty.any():  # cannot happen for fs >= 1, kept as a guard: nearest centre
        w[empty, (c[empty] - 0.5).round().clamp(0, n_in - 1).long()] = 1.0
    return w / w.sum(1, keepdim=True)


def box_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (N, C, H, W) to ``size`` with the box filter of :func:`_box_weights`."""
    wh = _box_weights(x.shape[-2], size[0]).to(x)
    ww = _box_weights(x.shape[-1], size[1]).to(x)
    return torch.einsum("ih,nchw,jw->ncij", wh, x, ww)


@_register("pixelate", (0.95, 0.90, 0.85, 0.75, 0.65), "digital", False)
def _pixelate(x: Tensor, f: float, rng: _Rng) -> Tensor:
    h, w = x.shape[-2:]
    return box_resize(box_resize(x, (max(1, int(h * f)), max(1, int(w * f)))), (h, w))


@_register("jpeg_compression", (80, 65, 58, 50, 40), "digital", False)
def _jpeg(x: Tensor, quality: int, rng: _Rng) -> Tensor:
    from PIL import Image

    n, c, h, w = x.shape
    if c not in (1, 3):
        raise RobcurveError(f"jpeg_compression needs 1 or 3 channels, got {c}", fix="pass grey or RGB images")
    arr = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i in range(n):
        img = Image.fromarray(arr[i, :, :, 0] if c == 1 else arr[i])  # uint8 2-d -> "L", (H, W, 3) -> "RGB"
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if c == 1 else "RGB"))
        out[i] = dec.reshape(h, w, c)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


# ---------------------------------------------------------------------------------------------
# public API


def _check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or int(severity) not in SEVERITIES:
        raise RobcurveError(f"severity must be one of {list(SEVERITIES)}, got {severity!r}", fix="use an integer 1..5")
    return int(severity)


def _check(name: str, severity: Any) -> Corruption:
    """The registered corruption ``name``; RobcurveError naming the allowed values otherwise."""
    if name in NOT_IMPLEMENTED and name not in CORRUPTIONS:
        raise RobcurveError(f"corruption {name!r} is not implemented ({NOT_IMPLEMENTED[name]})",
                            fix=f"choose one of: {', '.join(CORRUPTIONS.names())}; or read the real CIFAR-10-C files with load_cifar10c")
    spec = CORRUPTIONS.get(name)
    _check_severity(severity)
    return spec


def corrupt(x: Tensor, name: str, severity: int, seed: int = 0, sample_seeds: Sequence[int] | Tensor | None = None) -> Tensor:
    """Corrupt images x (N, C, H, W) or (C, H, W) in [0, 1] with ``name`` at ``severity`` (1..5).

    Sample i is drawn from a generator seeded by ``sample_seed(seed, i)``, or by
    ``sample_seeds[i]`` when given (the corrupted dataset view passes the split indices), so a
    sample's corruption does not depend on the rest of the batch. Returns a tensor of the same
    shape, dtype and device, clipped to [0, 1].
    """
    spec = _check(name, severity)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise RobcurveError("corrupt() needs a floating-point tensor of images in [0, 1]",
                            fix="convert with x.float() / 255 first")
    single = x.ndim == 3
    xb = x.unsqueeze(0) if single else x
    if xb.ndim != 4:
        raise RobcurveError(f"expected images (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}", fix="reshape the images")
    n = xb.shape[0]
    if sample_seeds is None:
        seeds = [sample_seed(seed, i) for i in range(n)]
    else:
        seeds = [int(s) for s in (sample_seeds.tolist() if isinstance(sample_seeds, Tensor) else sample_seeds)]
        if len(seeds) != n:
            raise RobcurveError(f"sample_seeds has {len(seeds)} entries for {n} images", fix="pass one seed per image")
    if n == 0:
        return x.clone()
    # the same draws at every severity of a corruption (only the strength changes)
    salt = _splitmix(zlib.crc32(name.encode()))
    rng = _Rng(seeds, salt)
    with torch.no_grad():
        work = xb.detach().to(torch.float32) if xb.dtype in (torch.float16, torch.bfloat16) else xb.detach()
        out = spec.fn(work.clone(), spec.params[int(severity) - 1], rng).clamp_(0.0, 1.0).to(x.dtype)
    return out[0] if single else out


def corruption_suite(names: Iterable[str] | None = None, severities: Iterable[int] = SEVERITIES) -> list[tuple[str, int]]:
    """(name, severity) pairs, corruption-major; ``names=None`` = the 14 implemented CIFAR-10-C benchmark corruptions."""
    if names is None:
        chosen = [c for c in CIFAR10C_CORRUPTIONS if c in CORRUPTIONS]
    elif isinstance(names, str):
        chosen = [names]
    else:
        chosen = list(names)
    sev = [_check_severity(s) for s in severities]
    for c in chosen:
        _check(c, 1)
    return [(c, s) for c in chosen for s in sev]


def parse_corrupted_name(name: str) -> tuple[str, str, int]:
    """``"<dataset>-c:<corruption>:<severity>"`` -> (dataset, corruption, severity).

    The corruption must be implemented here or be a CIFAR-10-C file name (for real files).
    """
    base, sep, rest = name.partition("-c:")
    parts = rest.split(":")
    if not sep or not base or len(parts) != 2 or not parts[1].strip().isdigit():
        raise RobcurveError(f"malformed corrupted dataset name {name!r}",
                            fix="write <dataset>-c:<corruption>:<severity>, e.g. fashion-mnist-embedded-c:gaussian_noise:3")
    corruption, severity = parts[0], _check_severity(int(parts[1]))
    if corruption not in CORRUPTIONS and corruption not in NOT_IMPLEMENTED:
        CORRUPTIONS.get(corruption)  # raises, naming close and allowed names
    return base, corruption, severity


def load_corrupted(name: str, split: str = "test", n: int | None = None, seed: int = 0, data_dir: str | os.PathLike | None = None,
                   corruption_seed: int = 0, batch_size: int = 256, cifar10c_dir: str | os.PathLike | None = None,
                   **kwargs: Any):
    """A corrupted view ``"<dataset>-c:<corruption>:<severity>"`` of a registered dataset.

    Loads the same ``n`` samples as ``load_dataset(<dataset>, split, n, seed, data_dir)`` and
    corrupts each, seeding sample k by ``sample_seed(corruption_seed, split_index_k)``, so a
    sample's corruption depends on its index in the official split only (not on ``n``,
    ``seed`` or the other samples). With ``cifar10c_dir`` and dataset ``cifar10``, the real
    CIFAR-10-C files are read instead (:func:`load_cifar10c`).
    """
    base, corruption, severity = parse_corrupted_name(name)
    if cifar10c_dir is not None:
        if base != "cifar10":
            raise RobcurveError(f"cifar10c_dir was given for dataset {base!r}", fix="use it with cifar10-c:<corruption>:<severity> only")
        ss = load_cifar10c(cifar10c_dir, corruption, severity, n=n, seed=seed)
        ss.name = name
        return ss
    _check(corruption, severity)
    clean = load_dataset(base, split=split, n=n, seed=seed, data_dir=data_dir, **kwargs)
    seeds = [sample_seed(corruption_seed, int(i)) for i in clean.indices.tolist()]
    parts = [corrupt(clean.images[s:s + batch_size], corruption, severity, sample_seeds=seeds[s:s + batch_size])
             for s in range(0, len(clean), batch_size)]
    images = torch.cat(parts) if parts else clean.images.clone()
    meta = dict(clean.meta)
    meta.update({"base_dataset": base, "corruption": corruption, "severity": severity,
                 "corruption_seed": corruption_seed, "corruption_source": "robcurve.data.corruptions"})
    return SampleSet(images, clean.labels, clean.indices, clean.classes, name, clean.split, clean.source, meta)


def load_cifar10c(data_dir: str | os.PathLike, corruption: str, severity: int, n: int | None = None, seed: int = 0):
    """Read real CIFAR-10-C files: ``<data_dir>/<corruption>.npy`` and ``<data_dir>/labels.npy``.

    The corruption file holds 5 × M uint8 images (N, H, W, 3), severity s in rows
    [(s−1)M, sM) (M = 10000 for CIFAR-10-C); labels.npy holds 5M labels (or M). Samples are
    chosen as in every robcurve dataset (``n`` of a permutation seeded by ``seed``); indices
    are positions in the CIFAR-10 test split. Returns a SampleSet of images in [0, 1].
    """
    known = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA
    if corruption not in known:
        raise RobcurveError(f"unknown CIFAR-10-C corruption {corruption!r}", fix=f"choose one of: {', '.join(known)}")
    _check_severity(severity)
    d = Path(data_dir)
    if not d.is_dir():
        raise RobcurveError(f"CIFAR-10-C folder not found: {d}", where=str(d),
                            fix="pass the folder holding <corruption>.npy and labels.npy (the extracted CIFAR-10-C.tar)")
    fimg, flab = d / f"{corruption}.npy", d / "labels.npy"
    for f in (fimg, flab):
        if not f.is_file():
            present = sorted(p.name for p in d.glob("*.npy"))
            raise RobcurveError(f"{f.name} not found in {d}", where=str(d),
                                fix=f"the folder holds {present or 'no .npy files'}; extract CIFAR-10-C.tar there")
    images = _load_npy(fimg, mmap=True)
    labels = _load_npy(flab, mmap=False)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] % 5:
        raise RobcurveError(f"{fimg.name} has dtype {images.dtype} and shape {images.shape}; expected uint8 (5*M, H, W, 3)",
                            where=str(fimg), fix="replace it with the original CIFAR-10-C file")
    m = images.shape[0] // 5
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or labels.shape[0] not in (m, 5 * m):
        raise RobcurveError(f"labels.npy has dtype {labels.dtype} and shape {labels.shape}; expected integers of length {5 * m} or {m}",
                            where=str(flab), fix="replace it with the original CIFAR-10-C labels.npy")
    lab = labels[(int(severity) - 1) * m: int(severity) * m] if labels.shape[0] == 5 * m else labels
    idx = select(m, n, seed).numpy()
    block = np.asarray(images[(int(severity) - 1) * m + idx])
    x = torch.from_numpy(np.ascontiguousarray(block)).permute(0, 3, 1, 2).float().div_(255.0)
    y = torch.from_numpy(np.asarray(lab[idx]).astype(np.int64))
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 9):
        raise RobcurveError(f"labels.npy holds labels outside 0..9 ({int(y.min())}..{int(y.max())})", where=str(flab),
                            fix="replace it with the original CIFAR-10-C labels.npy")
    return SampleSet(x, y, torch.from_numpy(idx.astype(np.int64)), list(CIFAR10_CLASSES),
                     f"cifar10-c:{corruption}:{int(severity)}", "test", str(d),
                     {"base_dataset": "cifar10", "corruption": corruption, "severity": int(severity),
                      "corruption_source": "CIFAR-10-C files"})


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise RobcurveError(f"cannot read {path.name} as a numpy array: {e}", where=str(path),
                            fix="the file is damaged or not a .npy file; replace it with the original") from None


def robustbench_corruptions_view(dataset: str = "cifar10") -> dict[str, Any]:
    """How RobustBench's ``corruptions`` threat model maps onto robcurve's corrupted views.

    RobustBench (``ThreatModel.corruptions``) evaluates on CIFAR-10-C / CIFAR-100-C files:
    the 15 benchmark corruptions at severities 1..5 (its ``load_cifar10c`` takes the first
    images of each file at one severity), and the leaderboard number is the accuracy averaged
    over the 15 × 5 (corruption, severity) pairs. robcurve's view of a dataset is
    ``<dataset>-c:<corruption>:<severity>``: with ``cifar10c_dir`` the real files are read
    (all 15 available), otherwise the corruption is generated here, where 14 of the 15 exist
    (``frost`` needs the frost photographs). A mean over generated views is therefore over
    14 corruptions and is not RobustBench's number.

    Returns a dict with the dataset names per (corruption, severity), the implemented and
    missing corruptions, the severities and the aggregation rule.
    """
    implemented = [c for c in CIFAR10C_CORRUPTIONS if c in CORRUPTIONS]
    missing = {c: NOT_IMPLEMENTED.get(c, "") for c in CIFAR10C_CORRUPTIONS if c not in CORRUPTIONS}
    return {
        "threat_model": "corruptions",
        "dataset": dataset,
        "robustbench_corruptions": list(CIFAR10C_CORRUPTIONS),
        "severities": list(SEVERITIES),
        "aggregate": "mean accuracy over the 15 corruptions x 5 severities (RobustBench); robcurve also reports ECE/sECE per view",
        "implemented": implemented,
        "not_implemented": missing,
        "views": {(c, s): f"{dataset}-c:{c}:{s}" for c in implemented for s in SEVERITIES},
        "real_files": "load_corrupted(..., cifar10c_dir=DIR) or load_cifar10c(DIR, corruption, severity) read all 15 (and the 4 extras)",
    }


VIEWS["-c:"] = load_corrupted
