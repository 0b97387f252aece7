"""Corruption suite (robcurve.data.corruptions): determinism, range, strength per severity, views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import robcurve.data.fashion_mnist  # noqa: F401  (registers the dataset)
from robcurve.data.base import load_dataset
from robcurve.data.corruptions import (
    CIFAR10C_CORRUPTIONS,
    CORRUPTIONS,
    corrupt,
    corruption_suite,
    load_cifar10c,
    load_corrupted,
    robustbench_corruptions_view,
)
from robcurve.errors import RobcurveError

NAMES = CORRUPTIONS.names()


@pytest.fixture(scope="module")
def images() -> dict[str, torch.Tensor]:
    """12 real Fashion-MNIST images: grey 28 px, and colour 32 px (padded, tinted, coloured background)."""
    grey = load_dataset("fashion-mnist-embedded", n=12, seed=0).images
    g = torch.Generator().manual_seed(1)
    tint = 0.3 + 0.7 * torch.rand(12, 3, 1, 1, generator=g)
    bg = 0.5 * torch.rand(12, 3, 1, 1, generator=g)
    m = F.pad(grey, (2, 2, 2, 2))
    colour = m * tint + (1 - m) * bg
    return {"grey28": grey, "colour32": colour}


@pytest.fixture(scope="module")
def strengths(images) -> dict[tuple[str, str], list[float]]:
    """Mean L2 distance from the clean image at severities 1..5, per (corruption, image kind)."""
    out = {}
    for kind, x in images.items():
        for name in NAMES:
            out[name, kind] = [float((corrupt(x, name, s, seed=0) - x).flatten(1).norm(dim=1).mean()) for s in range(1, 6)]
    return out


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str, images) -> None:
    spec = CORRUPTIONS.get(name)
    for x in images.values():
        a = corrupt(x, name, 3, seed=0)
        assert a.shape == x.shape and a.dtype == x.dtype
        assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        assert torch.equal(a, corrupt(x, name, 3, seed=0))  # deterministic for a seed
        assert not torch.equal(a, x)
        b = corrupt(x, name, 3, seed=1)
        if spec.random:
            assert (a - b).abs().max() > 0.05  # another seed, another corruption
        else:
            assert torch.equal(a, b)  # nothing random: the seed does not matter
    x64 = images["grey28"][:2].double()
    assert corrupt(x64, name, 2).dtype == torch.float64


@pytest.mark.parametrize("name", NAMES)
def test_strength_grows_with_severity(name: str, strengths) -> None:
    for kind in ("grey28", "colour32"):
        d = strengths[name, kind]
        assert min(d) > 0.1, (kind, d)
        if name == "elastic_transform":
            # Not monotone by construction: CIFAR-10-C's random affine part (points moved up to
            # .08, .07, .06, .05, .03 of the image size) shrinks with severity while the smooth
            # elastic field grows, and the whole-image shift of the affine part dominates L2.
            # Measured here: L2 falls with severity; we check that it follows the affine size.
            assert d[0] > d[2] > d[4], (kind, d)
        elif name == "glass_blur":
            # Severities 1-3 swap pixels once and differ only in the blur σ (.05, .25, .4), which
            # smooths the swapped pixels back toward the clean image; 4-5 swap twice. So compare
            # the same σ: two passes are stronger than one.
            assert d[3] > d[1] and d[4] > d[2], (kind, d)
        elif name == "motion_blur":
            # Severities 3 and 4 are (r, σ) = (6, 2) and (8, 2): the longer kernel only adds taps
            # beyond 6σ (weight < e^-18), so the two are equal by construction in CIFAR-10-C too.
            assert d[2] == pytest.approx(d[3], rel=1e-6), (kind, d)
            assert d[0] < d[1] < d[2] < d[4], (kind, d)
        elif name == "snow":
            # The snow parameters are not monotone one by one (flake zoom 1, 1, 1.75, 2.25, 1.25;
            # threshold .6, .5, .55, .6, .65): at severity 3 the flakes are zoomed (bilinear
            # interpolation thins the values above the threshold) and the flake share can fall.
            # Measured: severities 2 and 3 are within 2% on grey 28 px (2.81 vs 2.79).
            assert d[0] < d[1] < d[3] < d[4] and d[2] < d[3], (kind, d)
            assert d[2] > 0.95 * d[1], (kind, d)
        elif name == "pixelate" and kind == "colour32":
            # Box resampling at 32 px to 30, 28, 27, 24, 20 px: 24 px is an exact 3:4 grid, 20 px
            # is not, and L2 depends on how the box grid falls on the edges of the content, so
            # severities 4 and 5 are not ordered by construction (as in CIFAR-10-C, same sizes).
            # Measured here: 2.15 vs 2.11. The grey 28 px sizes (26, 25, 23, 21, 18) are ordered.
            assert d[0] < d[1] < d[2] < d[3] and d[4] > d[2], (kind, d)
        else:
            assert all(b > a for a, b in zip(d, d[1:], strict=False)), (kind, d)


def test_batch_independent_and_single_image(images) -> None:
    x = images["grey28"][:6]
    seeds = [10, 11, 12, 13, 14, 15]
    for name in ("gaussian_noise", "fog", "motion_blur", "elastic_transform"):
        full = corrupt(x, name, 4, sample_seeds=seeds)
        part = corrupt(x[2:4], name, 4, sample_seeds=seeds[2:4])
        assert torch.allclose(full[2:4], part, atol=1e-6)
        one = corrupt(x[0], name, 4, seed=0)  # (C, H, W)
        assert one.shape == x[0].shape and torch.allclose(one, corrupt(x[:1], name, 4, seed=0)[0], atol=1e-6)


def test_reference_operations(images) -> None:
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
    from PIL import Image

    x = images["colour32"][:4]
    # brightness on colour = V += c in HSV (c = .15 at severity 3)
    hsv = rgb_to_hsv(x.permute(0, 2, 3, 1).double().numpy())
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.15, 0, 1)
    ref = torch.from_numpy(hsv_to_rgb(hsv)).permute(0, 3, 1, 2).float()
    assert torch.allclose(corrupt(x, "brightness", 3), ref, atol=1e-5)
    g = images["grey28"][:4]
    assert torch.allclose(corrupt(g, "brightness", 3), (g + 0.15).clamp(0, 1))  # grey: additive
    # pixelate = Pillow BOX down to int(28·.65) = 18 px and back (severity 5), within 8-bit rounding
    out = []
    for im in g:
        p = Image.fromarray((im[0].numpy() * 255).round().astype(np.uint8))
        out.append(np.asarray(p.resize((18, 18), Image.BOX).resize((28, 28), Image.BOX), dtype=np.float32) / 255)
    ref = torch.from_numpy(np.stack(out)).unsqueeze(1)
    assert (corrupt((g * 255).round() / 255, "pixelate", 5) - ref).abs().max() <= 1.01 / 255
    # contrast: (x - mean) * .15 + mean per image and channel (severity 5)
    mean = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(corrupt(x, "contrast", 5), ((x - mean) * 0.15 + mean).clamp(0, 1), atol=1e-6)


def test_load_corrupted_same_sample_same_corruption() -> None:
    name = "fashion-mnist-embedded-c:gaussian_noise:3"
    small = load_dataset(name, n=20, seed=0)  # through load_dataset's "-c:" dispatch
    big = load_corrupted(name, n=60, seed=0)
    assert small.name == name and small.meta["severity"] == 3 and small.meta["corruption"] == "gaussian_noise"
    assert torch.equal(small.indices, big.indices[:20]) and torch.equal(small.images, big.images[:20])
    other = load_corrupted(name, n=200, seed=5)  # another selection: shared samples match
    pos = {int(i): k for k, i in enumerate(other.indices)}
    shared = [(k, pos[int(i)]) for k, i in enumerate(big.indices) if int(i) in pos]
    assert len(shared) >= 3
    for k, j in shared:
        assert torch.equal(big.images[k], other.images[j])
    clean = load_dataset("fashion-mnist-embedded", n=20, seed=0)
    assert torch.equal(clean.labels, small.labels)
    diff = (small.images - clean.images).flatten(1).norm(dim=1)
    assert (diff > 0.5).all()  # every image corrupted, σ = .08 over 784 pixels
    assert not torch.equal(load_corrupted(name, n=20, seed=0, corruption_seed=1).images, small.images)


def _write_cifar10c(d, m: int = 6, h: int = 8) -> None:
    imgs = np.zeros((5 * m, h, h, 3), dtype=np.uint8)
    for s in range(5):
        for i in range(m):
            imgs[s * m + i] = 10 * (s + 1) + i  # value encodes (severity, index)
    np.save(d / "fog.npy", imgs)
    np.save(d / "labels.npy", np.tile(np.arange(m) % 10, 5).astype(np.uint8))


def test_cifar10c_reader(tmp_path) -> None:
    _write_cifar10c(tmp_path)
    ss = load_cifar10c(tmp_path, "fog", 3, n=4, seed=0)
    assert ss.images.shape == (4, 3, 8, 8) and ss.images.dtype == torch.float32
    idx = ss.indices.tolist()
    for k, i in enumerate(idx):
        assert torch.allclose(ss.images[k], torch.full((3, 8, 8), (30 + i) / 255))
        assert int(ss.labels[k]) == i % 10
    assert ss.name == "cifar10-c:fog:3"
    assert load_cifar10c(tmp_path, "fog", 3, n=None).images.shape[0] == 6
    np.save(tmp_path / "labels.npy", np.arange(6).astype(np.int64))  # labels of one severity block
    assert load_cifar10c(tmp_path, "fog", 5, n=2, seed=0).labels.tolist() == load_cifar10c(tmp_path, "fog", 5, n=2, seed=0).indices.tolist()
    via = load_corrupted("cifar10-c:fog:3", n=4, seed=0, cifar10c_dir=tmp_path)
    assert torch.equal(via.images, ss.images) and via.name == "cifar10-c:fog:3"


def test_cifar10c_reader_errors(tmp_path) -> None:
    with pytest.raises(RobcurveError, match="folder not found"):
        load_cifar10c(tmp_path / "nope", "fog", 1)
    with pytest.raises(RobcurveError, match="fog.npy not found"):
        load_cifar10c(tmp_path, "fog", 1)
    _write_cifar10c(tmp_path)
    with pytest.raises(RobcurveError, match="unknown CIFAR-10-C corruption"):
        load_cifar10c(tmp_path, "fogg", 1)
    with pytest.raises(RobcurveError, match="severity"):
        load_cifar10c(tmp_path, "fog", 6)
    np.save(tmp_path / "snow.npy", np.zeros((10, 8, 8, 3), dtype=np.float32))
    with pytest.raises(RobcurveError, match="expected uint8"):
        load_cifar10c(tmp_path, "snow", 1)
    (tmp_path / "frost.npy").write_bytes(b"not a numpy file")
    with pytest.raises(RobcurveError, match="cannot read frost.npy"):
        load_cifar10c(tmp_path, "frost", 1)
    np.save(tmp_path / "labels.npy", np.zeros(7, dtype=np.uint8))
    with pytest.raises(RobcurveError, match="labels.npy"):
        load_cifar10c(tmp_path, "fog", 1)


def test_bad_names_and_severities(images) -> None:
    x = images["grey28"][:2]
    with pytest.raises(RobcurveError, match="did you mean 'gaussian_noise'") as e:
        corrupt(x, "gausian_noise", 1)
    assert "choose one of" in str(e.value) and "zoom_blur" in str(e.value)
    with pytest.raises(RobcurveError, match=r"severity must be one of \[1, 2, 3, 4, 5\]"):
        corrupt(x, "fog", 0)
    with pytest.raises(RobcurveError, match="severity"):
        corrupt(x, "fog", 2.0)
    with pytest.raises(RobcurveError, match="not implemented"):
        corrupt(x, "frost", 1)
    with pytest.raises(RobcurveError, match="malformed"):
        load_dataset("fashion-mnist-embedded-c:fog", n=2)
    with pytest.raises(RobcurveError, match="severity"):
        load_dataset("fashion-mnist-embedded-c:fog:9", n=2)
    with pytest.raises(RobcurveError, match="unknown corruption"):
        load_dataset("fashion-mnist-embedded-c:fgo:1", n=2)
    with pytest.raises(RobcurveError, match="unknown dataset"):
        load_dataset("fashion-mnist-embeded-c:fog:1", n=2)
    with pytest.raises(RobcurveError, match="floating-point"):
        corrupt((x * 255).to(torch.uint8), "fog", 1)


def test_suite_and_robustbench_view() -> None:
    suite = corruption_suite()
    assert len(suite) == 14 * 5 and ("frost", 1) not in suite and suite[0] == ("gaussian_noise", 1)
    assert corruption_suite(["fog", "snow"], severities=(3,)) == [("fog", 3), ("snow", 3)]
    with pytest.raises(RobcurveError):
        corruption_suite(["fog"], severities=(0,))
    with pytest.raises(RobcurveError):
        corruption_suite(["fogg"])
    view = robustbench_corruptions_view("cifar10")
    from robustbench.data import CORRUPTIONS as RB

    assert set(view["robustbench_corruptions"]) == set(RB) == set(CIFAR10C_CORRUPTIONS)
    assert set(view["implemented"]) | set(view["not_implemented"]) == set(RB)
    assert list(view["not_implemented"]) == ["frost"]
    assert view["views"]["fog", 3] == "cifar10-c:fog:3"
