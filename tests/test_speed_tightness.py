"""Issue #16, speed and tightness: what the faster code paths must keep exactly.

* trajectories with the measured batch size equal raw forwards of the same inputs in the same
  batches, bit for bit, and the batch size honours the memory budget and is cached;
* DeepFool with candidate restriction gives the per-sample distances of the all-candidate run
  and of foolbox (1e-5 relative) with fewer gradients; the clean forward is its first step's;
* PGD with the caller's clean logits or predictions gives the same images with one forward
  fewer, and still torchattacks' images without early stop;
* the margin loss makes the PGD distance tight on a linear model (exact value known);
* the travel search finds exactly the first flip of the fine grid (islands included) with
  forwards close to the rule's minimum.

Models: the shipped zoo models and the embedded Fashion-MNIST images (no training).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import robcurve
from robcurve.attacks import deepfool, pgd, pgd_distance, run_attack
from robcurve.geometry import get_direction, travel_distance
from robcurve.geometry.trajectory import grid_inputs, trajectory
from robcurve.memory import CHUNK_CACHE, cached_chunk_size, clear_chunk_cache, memory_per_image

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return robcurve.load_dataset("fashion-mnist-embedded", n=32)


@pytest.fixture(scope="module")
def vit():
    return robcurve.load_model("zoo:vit-fmnist")


@pytest.fixture(scope="module")
def resnet():
    return robcurve.load_model("zoo:resnet-fmnist")


def raw_forwards(model, x, d, eps, sizes, clamp=False):
    """Logits and features of the trajectory inputs, forwarded in batches of ``sizes``."""
    lg, ft, a = [], [], 0
    with torch.no_grad():
        for b in sizes:
            out_l, out_f = model.logits_and_features(grid_inputs(x, d, eps, a, a + b, clamp))
            lg.append(out_l)
            ft.append(out_f.reshape(b, -1))
            a += b
    return torch.cat(lg), torch.cat(ft)


# -- trajectory batch size -----------------------------------------------------------------------
def test_trajectory_auto_batch_size_equals_raw_forwards_and_is_cached(vit, data):
    x = data.images[:6]
    d = get_direction(vit, x, data.labels[:6])
    clear_chunk_cache()
    per_image = memory_per_image(vit, x)
    budget = 120 * per_image  # cap 40 images (a third of the budget): candidates 16 and 32, then the re-check
    first = trajectory(vit, x, d, T=41, E=0.05, memory_budget=budget)
    choice = first.meta["chunk_choice"]
    assert first.meta["chunk_mode"] == "auto" and choice["measured"] and choice["cap"] == 40
    assert set(choice["rates"]) == {16, 32} and first.chunk_size in (16, 32)
    assert 3 * first.chunk_size * per_image <= budget
    assert sum(first.meta["chunks"]) == 6 * 41 and max(first.meta["chunks"]) <= 40
    # every output is exactly the model's forward of its input in the batch it ran in
    lg, ft = raw_forwards(vit, x, d, first.eps, first.meta["chunks"])
    assert torch.equal(first.logits.reshape(-1, lg.shape[1]), lg)
    assert torch.equal(first.features.reshape(-1, ft.shape[1]), ft)
    # cached: the next call uses the choice without timing, in equal batches
    again = trajectory(vit, x, d, T=41, E=0.05, memory_budget=budget)
    assert again.chunk_size == first.chunk_size and again.meta["chunk_choice"] == choice
    assert set(again.meta["chunks"][:-1]) == {first.chunk_size}
    assert cached_chunk_size(vit, x, budget) == first.chunk_size
    # an explicit chunk size still works and is the same computation
    exp = trajectory(vit, x, d, T=41, E=0.05, chunk_size=50)
    assert exp.meta["chunk_mode"] == "explicit" and exp.meta["chunks"] == [50] * 4 + [46]
    lg, ft = raw_forwards(vit, x, d, exp.eps, exp.meta["chunks"])
    assert torch.equal(exp.features.reshape(-1, ft.shape[1]), ft)
    assert torch.allclose(exp.features, first.features, rtol=1e-5, atol=1e-6)
    clear_chunk_cache()
    assert not len(CHUNK_CACHE)


def test_trajectory_too_little_work_measures_without_caching(vit, data):
    x = data.images[:2]
    d = get_direction(vit, x, data.labels[:2])
    clear_chunk_cache()
    tr = trajectory(vit, x, d, T=21, E=0.05, chunk_size="auto")  # 42 images: 16 and 32 do not both fit after 16
    assert not tr.meta["chunk_choice"]["measured"] and not len(CHUNK_CACHE)
    lg, ft = raw_forwards(vit, x, d, tr.eps, tr.meta["chunks"])
    assert torch.equal(tr.features.reshape(-1, ft.shape[1]), ft)
    with pytest.raises(robcurve.RobcurveError):
        trajectory(vit, x, d, T=21, memory_budget=0)


# -- DeepFool ----------------------------------------------------------------------------------
def test_deepfool_restricted_candidates_equal_all_candidates(vit, resnet, data):
    """Trained zoo models, where DeepFool takes up to ~30 steps: the restriction saves most gradients.

    15 steps keep the test short; the restricted run must equal the all-candidate run at every
    step anyway, so the comparison holds for the samples not finished by then too.
    """
    x, y = data.images[:8], data.labels[:8]
    for model in (vit, resnet):
        full = deepfool(model, x, y, steps=15, restrict=None)
        fast = deepfool(model, x, y, steps=15)
        assert fast.params["restrict"] == 3.0 and full.params["restrict"] is None
        ok = fast.clean_correct
        assert ok.sum() >= 6 and fast.success[ok].sum() >= 5 and torch.equal(fast.success, full.success)
        rel = ((fast.l2 - full.l2).abs() / full.l2.clamp_min(1e-12))[ok]
        assert rel.max() <= 1e-5, rel.max()
        assert fast.backwards.sum() < 0.6 * full.backwards.sum()  # all candidates at the first step only
        assert (fast.backwards[ok] >= 9).all()
        # no separate clean forward: the first step's forward is the clean one, so a sample
        # takes one forward per step plus the one that finds it adversarial
        assert (fast.forwards[ok] >= 2).all() and (fast.forwards[~ok] == 1).all()
        with torch.no_grad():
            logits = model(x)
        given = deepfool(model, x, y, steps=15, clean_logits=logits)  # the caller's clean logits: no clean forward
        assert torch.allclose(given.l2, fast.l2, rtol=1e-5, atol=1e-7)
        assert torch.equal(given.forwards[ok], fast.forwards[ok]) and (given.forwards[~ok] == 0).all()


def test_deepfool_equals_foolbox_per_sample_on_a_cnn():
    """A random-init zoo ResNet labelled by its own predictions (test_attacks.py does the ViT)."""
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.zoo.archs import build

    torch.manual_seed(0)
    model = RobcurveModel(build("resnet"), (0.286,), (0.353,))
    x = robcurve.load_dataset("fashion-mnist-embedded", n=8).images
    with torch.no_grad():
        y = model(x).argmax(1)
    ours = deepfool(model, x, y)
    fb = run_attack("deepfool", model, x, y, backend="foolbox", steps=50, overshoot=0.02)
    assert ours.success.all() and fb.success.all()
    rel = (ours.l2 - fb.l2).abs() / fb.l2
    assert rel.max() <= 1e-5, rel.max()


def test_deepfool_batches_and_grad_modes_agree_with_restriction():
    """Restricted steps, several batches, loop vs vmap: the same distances (random-init ViT, 5 steps)."""
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.zoo.archs import build

    torch.manual_seed(1)
    model = RobcurveModel(build("vit"), (0.286,), (0.353,))
    x = robcurve.load_dataset("fashion-mnist-embedded", n=6).images
    with torch.no_grad():
        y = model(x).argmax(1)
    a = deepfool(model, x, y, steps=5)
    assert (a.backwards > 9).all()  # every sample took restricted steps after the first
    b = deepfool(model, x, y, steps=5, batch_size=4)
    c = deepfool(model, x, y, steps=5, grad_mode="vmap")
    for other in (b, c):
        assert torch.allclose(a.l2, other.l2, rtol=1e-5, atol=1e-7)
        assert torch.equal(a.backwards, other.backwards)


def test_attacks_restore_requires_grad(vit, data):
    x, y = data.images[:4], data.labels[:4]
    net = vit.net
    net.head.weight.requires_grad_(True)
    before = [p.requires_grad for p in vit.parameters()]
    deepfool(vit, x, y, steps=2)
    pgd(vit, x, y, eps=0.01, steps=2)
    assert [p.requires_grad for p in vit.parameters()] == before


# -- PGD with the run's clean outputs ----------------------------------------------------------
@pytest.mark.parametrize("early_stop", [False, True])
def test_pgd_with_callers_clean_outputs_same_images_one_forward_fewer(vit, data, early_stop):
    x, y = data.images[:16], data.labels[:16]
    base = pgd(vit, x, y, eps=0.03, steps=10, seed=2, early_stop=early_stop)
    with torch.no_grad():
        logits = vit(x)
    for kw in ({"clean_logits": logits}, {"clean_logits": logits.softmax(1)}, {"clean_pred": logits.argmax(1)}):
        res = pgd(vit, x, y, eps=0.03, steps=10, seed=2, early_stop=early_stop, **kw)
        assert torch.equal(res.x_adv, base.x_adv) and torch.equal(res.success, base.success)
        assert torch.equal(res.clean_correct, base.clean_correct)
        assert (res.forwards == base.forwards - 1).all() and res.params["clean_from_caller"]
    if not early_stop:
        ta = run_attack("pgd", vit, x, y, backend="torchattacks", eps=0.03, steps=10, seed=2, clean_pred=logits.argmax(1))
        assert (ta.x_adv - base.x_adv).abs().max() < 1e-5
    rd = pgd_distance(vit, x[:8], y[:8], bisection_steps=3)
    rd2 = pgd_distance(vit, x[:8], y[:8], bisection_steps=3, clean_pred=logits[:8].argmax(1))
    assert torch.equal(rd.budget, rd2.budget)
    with pytest.raises(robcurve.RobcurveError, match="clean_logits"):
        pgd(vit, x, y, eps=0.03, clean_logits=logits[:3])


# -- margin loss: the PGD distance is tight on a linear model ---------------------------------
def linear_10class(seed: int = 0):
    """A low-confidence linear classifier over 784 pixels (logit gaps ~0.5, where CE is loose)."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(10, 784, generator=g) / 280
    b = torch.randn(10, generator=g) * 0.6
    lin = nn.Linear(784, 10)
    with torch.no_grad():
        lin.weight.copy_(W)
        lin.bias.copy_(b - W @ torch.full((784,), 0.5))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.3 + 0.4 * torch.rand(24, 1, 28, 28, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, lin, x, y


def exact_linf(lin: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """min over j != y of (f_y - f_j) / ||w_y - w_j||_1: the exact minimal L∞ distance, unclamped."""
    W, b = lin.weight.double(), lin.bias.double()
    f = x.flatten(1).double() @ W.T + b
    out = torch.full((len(x),), math.inf, dtype=torch.float64)
    for j in range(10):
        c = (W[y] - W[j]).abs().sum(1)
        d = (f.gather(1, y[:, None]).squeeze(1) - f[:, j]) / c
        out = torch.minimum(out, torch.where(y == j, math.inf, d))
    return out


def test_pgd_distance_with_margin_loss_is_within_2_percent_of_the_exact_linf_distance():
    model, lin, x, y = linear_10class()
    exact = exact_linf(lin, x, y)
    # the optimal perturbation stays inside [0, 1]: clamping cannot interfere
    assert float(x.min()) - float(exact.max()) > 0 and float(x.max()) + float(exact.max()) < 1
    res = pgd_distance(model, x, y, hi=0.25, bisection_steps=12)  # bracket 6e-5, ~0.3% of the distances
    assert res.params["loss"] == "margin" and not res.censored.any()
    ratio = res.budget / exact
    assert (ratio >= 1 - 1e-6).all()  # PGD cannot beat the exact distance
    assert float(ratio.max()) <= 1.02 and float(ratio.median()) <= 1.01, ratio
    ce = pgd_distance(model, x, y, hi=0.25, bisection_steps=12, loss="ce")
    assert float((ce.budget / exact).median()) > 1.1  # cross-entropy: loose at low confidence


# -- travel search ----------------------------------------------------------------------------------
def fine_rule(model, x, y, d, h, tol, eps_max):
    """The rule itself, plainly: every grid point in order until the first flip, then bisection."""
    n_steps = max(1, math.ceil(eps_max / h - 1e-9))
    eps = torch.full((len(x),), math.nan, dtype=torch.float64)
    kstar = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        pred0 = model(x).argmax(1)
        for i in range(len(x)):
            if pred0[i] != y[i]:
                eps[i] = 0.0
                continue
            for start in range(1, n_steps + 1, 32):  # blocks of grid points, in order
                ks = torch.arange(start, min(start + 32, n_steps + 1))
                e = torch.clamp(ks.double() * h, max=eps_max)
                p = model(x[i:i + 1] + e.to(x.dtype).view(-1, 1, 1, 1) * d[i:i + 1]).argmax(1)
                fl = (p != y[i]).nonzero()
                if len(fl):
                    kstar[i] = int(ks[fl[0, 0]])
                    break
    fl = kstar > 0
    lo = torch.clamp((kstar - 1).double() * h, max=eps_max)
    hi = torch.clamp(kstar.double() * h, max=eps_max)
    if fl.any():
        width = float((hi[fl] - lo[fl]).max())
        for _ in range(max(0, math.ceil(math.log2(width / tol))) if width > tol else 0):
            mid = (lo + hi) / 2
            with torch.no_grad():
                p = model(x + mid.to(x.dtype).view(-1, 1, 1, 1) * d).argmax(1)
            f = p != y
            hi = torch.where(fl & f, mid, hi)
            lo = torch.where(fl & ~f, mid, lo)
        eps[fl] = hi[fl]
    return eps, kstar


@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_travel_search_equals_the_fine_rule_with_near_minimal_forwards(name, vit, resnet, data):
    model = {"vit": vit, "resnet": resnet}[name]
    x, y = data.images[:12], data.labels[:12]
    d = get_direction(model, x, y)
    kw = dict(h=2e-3, tol=1e-5, eps_max=0.3)
    td = travel_distance(model, x, y, d, **kw)
    ref, kstar = fine_rule(model, x, y, d, **kw)
    assert torch.allclose(td.eps, ref, atol=1e-12, equal_nan=True), (td.eps - ref).abs().nan_to_num().max()
    assert torch.equal(td.censored, td.correct & ref.isnan())
    iters = math.ceil(math.log2(2e-3 / 1e-5))
    n_steps = 150
    minimum = torch.where(~td.correct, 1, torch.where(td.censored, 1 + n_steps, 1 + kstar + iters))
    assert td.forwards is not None and int(td.forwards.sum()) == td.n_forward
    assert (td.forwards >= minimum).all()
    assert td.forwards.sum() <= 1.15 * minimum.sum(), (td.forwards.sum(), minimum.sum())
    # the coarse stride changes the forwards, never the result
    fine = travel_distance(model, x, y, d, coarse=1, **kw)
    assert torch.equal(fine.eps.nan_to_num(-1), td.eps.nan_to_num(-1))
    assert torch.equal(fine.flipped_to, td.flipped_to)


class Islands(nn.Module):
    """Class 1 on the narrow bands s in (0.0105, 0.0115) and s > 0.031, else class 0 (s = mean pixel)."""

    def forward(self, x):
        s = x.flatten(1).mean(1) - 0.5
        one = ((s > 0.0105) & (s < 0.0115)) | (s > 0.031)
        return torch.stack([(~one).double(), one.double()], 1)


def test_travel_search_finds_an_island_between_coarse_points():
    m = Islands()  # logits only: the travel search needs no penultimate features
    x = torch.full((3, 1, 4, 4), 0.5, dtype=torch.float64)
    d = torch.ones_like(x)
    d[2] = -1  # never flips
    y = torch.zeros(3, dtype=torch.long)
    for coarse in (1, 4, 8):
        td = travel_distance(m, x, y, d, h=1e-3, tol=1e-6, eps_max=0.05, coarse=coarse)
        # grid point 11 (ε = 0.011) lies in the island; the coarse points 8 and 16 do not
        assert td.eps[0] == pytest.approx(0.0105, abs=1.5e-6) and td.eps[0] > 0.0105
        assert td.eps[1] == pytest.approx(0.0105, abs=1.5e-6)
        assert td.censored[2] and not td.censored[:2].any()
        assert int(td.forwards[2]) == 1 + 50  # censored: every grid point, no more
