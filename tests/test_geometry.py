"""Geometry module: known answers on toy models, agreement checks on a small random ViT."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from robcurve.errors import RobcurveError
from robcurve.geometry import (
    curvature,
    directions,
    get_direction,
    jump_out,
    layer_profile,
    local_turning_angle,
    trajectory,
    travel_distance,
)
from robcurve.models.wrapper import RobcurveModel
from robcurve.zoo.archs import build

F64 = torch.float64


# -- toy models: features are a known function of s = mean over the moving pixels ------------
class Toy(nn.Module):
    """s = mean of the first ``n_move`` pixels; features = feat(s, x); logits = logit(s, z, x)."""

    def __init__(self, feat, logit, n_move: int | None = None):
        super().__init__()
        self.feat, self.logit, self.n_move = feat, logit, n_move
        self.register_buffer("dummy", torch.zeros(1, dtype=F64))

    def both(self, x):
        flat = x.flatten(1)
        s = flat[:, : self.n_move].mean(1) if self.n_move else flat.mean(1)
        z = self.feat(s, flat)
        return self.logit(s, z, flat), z

    def forward(self, x):
        return self.both(x)[0]


def toy_model(feat, logit, n_move=None) -> RobcurveModel:
    return RobcurveModel(Toy(feat, logit, n_move), features_fn=lambda net, x: net.both(x))


def line_model() -> RobcurveModel:
    a = torch.tensor([0.3, -1.0, 2.0, 0.5, 0.0, 1.0], dtype=F64)
    b = torch.tensor([1.0, 2.0, -0.5, 0.0, 3.0, 1.0], dtype=F64)
    W = torch.tensor([[1.0, 0, 0, 1, 0, 0], [0, 1.0, 0, 0, -1, 0], [0.5, 0, 1.0, 0, 0, 2]], dtype=F64)
    return toy_model(lambda s, f: a + s[:, None] * b, lambda s, z, f: z @ W.T)


def circle_model(omega: float, r: float = 2.0) -> RobcurveModel:
    def feat(s, f):
        return torch.stack([r * torch.cos(omega * s), r * torch.sin(omega * s), torch.ones_like(s)], 1)

    return toy_model(feat, lambda s, z, f: z[:, :2])


def vit_model(dtype=torch.float32) -> RobcurveModel:
    torch.manual_seed(0)
    return RobcurveModel(build("vit").to(dtype), (0.286,), (0.353,)).eval()


@pytest.fixture(scope="module")
def vit():
    return vit_model()


@pytest.fixture(scope="module")
def vit_batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 1, 28, 28, generator=g), torch.tensor([0, 3, 5, 9])


# -- known answers ------------------------------------------------------------------------------
def test_straight_line_has_zero_turning_and_unit_straightness():
    m = line_model()
    x = torch.rand(3, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    tr = trajectory(m, x, torch.ones_like(x), T=41, E=0.1)
    assert tr.features.shape == (3, 41, 6) and tr.logits.shape == (3, 41, 3)
    c = curvature(tr, region="full", ladder=(1, 2, 5))
    for sp in (c.features, c.logits):
        assert sp.ladder_angle.abs().max() < 1e-5
        assert sp.local_angle.abs().max() < 1e-5
        assert sp.total_turning.abs().max() < 1e-3
        assert torch.allclose(sp.straightness, torch.ones_like(sp.straightness), atol=1e-12)
        assert torch.allclose(sp.r2, torch.ones_like(sp.r2), atol=1e-12)
        assert sp.curvedness.abs().max() < 1e-12
        assert (sp.ladder_zero == 0).all()


def test_circle_turns_by_its_angular_step_at_every_point_and_ladder():
    omega, T, E = 20.0, 41, 0.1
    h0 = 2 * E / (T - 1)
    phi = math.degrees(omega * h0)  # 5.73° per grid step
    x = torch.full((2, 1, 3, 3), 0.4, dtype=F64)
    x[1] += 0.05
    c = curvature(trajectory(circle_model(omega), x, torch.ones_like(x), T=T, E=E), region="full", ladder=(1, 2, 5))
    for sp in (c.features, c.logits):
        inner = sp.angles[:, 1:-1]
        assert torch.allclose(inner, torch.full_like(inner, phi), atol=1e-8)
        assert sp.angles[:, 0].isnan().all() and sp.angles[:, -1].isnan().all()
        assert torch.allclose(sp.ladder_angle, torch.tensor([phi, 2 * phi, 5 * phi], dtype=F64).expand(2, 3), atol=1e-8)
        assert torch.allclose(sp.total_turning, torch.full((2,), (T - 2) * phi / (2 * E), dtype=F64), atol=1e-6)
        assert torch.allclose(sp.local_angle, torch.full((2,), phi, dtype=F64), atol=1e-8)
        # straightness over n grid steps of a circle: sin(nφ/2) / (n sin(φ/2))
        for j, Ei in enumerate(c.intervals):
            n = 2 * math.floor(Ei / h0 + 1e-9)  # grid steps inside [−Eᵢ, Eᵢ]
            want = math.sin(n * math.radians(phi) / 2) / (n * math.sin(math.radians(phi) / 2))
            assert sp.straightness[:, j] == pytest.approx([want, want], abs=1e-9)
    # Δ = 2 grid steps from the grid doubles the local angle
    assert c.delta == pytest.approx(h0)
    c2 = curvature(trajectory(circle_model(omega), x, torch.ones_like(x), T=T, E=E), region="full", delta=2 * h0)
    assert torch.allclose(c2.features.local_angle, torch.full((2,), 2 * phi, dtype=F64), atol=1e-8)


def region_model() -> RobcurveModel:
    """5 pixels: s = mean of the first 3 (they move), w_hi = pixel 3, w_lo = pixel 4 (fixed).
    Class 0 for −w_lo <= s − 0.5 <= w_hi, class 1 above, class 2 below; features a parabola."""

    def feat(s, f):
        u = s - 0.5
        return torch.stack([u, 10 * u * u], 1)

    def logit(s, z, f):
        u = s - 0.5
        return torch.stack([torch.zeros_like(u), u - f[:, 3], -f[:, 4] - u], 1)

    return toy_model(feat, logit, n_move=3)


def test_in_class_region_flips_unresolved_and_interval_measures():
    x = torch.tensor([[0.5, 0.5, 0.5, 0.0305, 0.0205],  # region [−0.020, 0.030]
                      [0.5, 0.5, 0.5, 0.0015, 0.0015],  # region [−0.001, 0.001]: 3 points, unresolved
                      [0.5, 0.5, 0.5, 0.5, 0.5]], dtype=F64).view(3, 1, 1, 5)  # no flip on the grid
    d = torch.tensor([1.0, 1, 1, 0, 0], dtype=F64).view(1, 1, 1, 5).expand(3, 1, 1, 5)
    tr = trajectory(region_model(), x, d, T=201, E=0.1, y=torch.zeros(3, dtype=torch.long))
    c = curvature(tr)  # in-class
    eps = tr.eps
    assert c.region_points.tolist() == [51, 3, 201]
    assert eps[c.region_lo[0]].item() == pytest.approx(-0.020) and eps[c.region_hi[0]].item() == pytest.approx(0.030)
    assert c.flip_lo_eps[0].item() == pytest.approx(-0.021) and c.flip_hi_eps[0].item() == pytest.approx(0.031)
    assert c.flip_lo_eps[2].isnan() and c.flip_hi_eps[2].isnan()
    assert c.unresolved.tolist() == [False, True, False] and c.n_unresolved == 1
    assert c.features.r2[1].isnan().all() and c.features.ladder_angle[1].isnan().all()
    df = c.to_dataframe()
    assert len(df) == 3 and df["unresolved"].sum() == 1 and df.attrs["region"] == "in-class"
    assert "feat_angle_h0.005" in df.columns and "feat_r2_E0.01" in df.columns
    # R² and straightness over region ∩ [−Eᵢ, Eᵢ], recomputed independently with numpy
    e = eps.numpy()
    for j, Ei in enumerate(c.intervals):
        sel = (e >= -0.020 - 1e-12) & (e <= 0.030 + 1e-12) & (np.abs(e) <= Ei + 1e-12)
        z = tr.features[0].numpy()[sel]
        A = np.stack([np.ones(sel.sum()), e[sel]], 1)
        res = z - A @ np.linalg.lstsq(A, z, rcond=None)[0]
        r2 = 1 - (res**2).sum() / ((z - z.mean(0)) ** 2).sum()
        st = np.linalg.norm(z[-1] - z[0]) / np.linalg.norm(np.diff(z, axis=0), axis=1).sum()
        assert c.n_points[0, j].item() == sel.sum()
        assert c.features.r2[0, j].item() == pytest.approx(r2, abs=1e-10)
        assert c.features.straightness[0, j].item() == pytest.approx(st, abs=1e-10)
    full = curvature(tr, region="full")
    assert full.features.r2[0, -1] < c.features.r2[0, -1] < 1  # the parabola bends more over the full grid


def test_zero_length_steps_are_excluded_and_counted():
    m = toy_model(lambda s, f: torch.stack([torch.clamp(s - 0.5, max=0.0505), 2 * torch.clamp(s - 0.5, max=0.0505)], 1),
                  lambda s, z, f: z)
    x = torch.full((1, 1, 2, 2), 0.5, dtype=F64)
    c = curvature(trajectory(m, x, torch.ones_like(x)), region="full", ladder=(1,))
    assert c.features.ladder_zero[0, 0].item() == 49  # ε = 0.051 … 0.100 all map to one point
    assert c.features.angles[0, 152:].isnan().all()  # next to a zero step
    assert c.features.angle_fine[0].item() == pytest.approx(0.0, abs=1e-5)
    assert c.features.total_turning[0].item() == pytest.approx(0.0, abs=1e-3)  # NaN angles left out of Σθ


def test_kink_at_zero_and_ladder_through_the_centre():
    """z = (u, |u|): one 90° turn at ε = 0; the ladder's subgrid passes through ε = 0."""
    m = toy_model(lambda s, f: torch.stack([s - 0.5, (s - 0.5).abs()], 1), lambda s, z, f: z)
    x = torch.full((1, 1, 2, 2), 0.5, dtype=F64)
    T, E = 41, 0.1
    c = curvature(trajectory(m, x, torch.ones_like(x), T=T, E=E), region="full", ladder=(1, 3, 4))
    ang = c.features.angles[0]
    assert ang[20].item() == pytest.approx(90.0, abs=1e-9) and ang[1:20].abs().max() < 1e-6 and ang[21:-1].abs().max() < 1e-6
    assert c.features.total_turning[0].item() == pytest.approx(90.0 / (2 * E), abs=1e-6)
    # step 3: subgrid 2, 5, …, 38 (13 points, 11 angles); step 4: 0, 4, …, 40 (11 points, 9 angles)
    assert c.features.ladder_angle[0].tolist() == pytest.approx([90 / 39, 90 / 11, 90 / 9], abs=1e-6)
    assert c.features.local_angle[0].item() == pytest.approx(90.0, abs=1e-9)


def test_clamp_bends_only_when_asked():
    m = line_model()
    x = torch.full((1, 1, 2, 2), 0.95, dtype=F64)
    free = curvature(trajectory(m, x, torch.ones_like(x), T=21, E=0.1), region="full")
    clamped = curvature(trajectory(m, x, torch.ones_like(x), T=21, E=0.1, clamp=True), region="full")
    assert free.features.ladder_zero[0, 0] == 0 and clamped.features.ladder_zero[0, 0] == 5  # ε = 0.05 … 0.10 all clamp to 1
    assert clamped.features.straightness[0, -1] == pytest.approx(1.0)  # still on the line, but shorter
    assert clamped.features.r2[0, -1] < 0.99


def linear_classifier(seed: int = 0, K: int = 3) -> tuple[RobcurveModel, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(K, 16, generator=g, dtype=F64)
    b = torch.randn(K, generator=g, dtype=F64) * 0.1
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, K)).to(F64)
    with torch.no_grad():
        net[1].weight.copy_(W)
        net[1].bias.copy_(b)
    return RobcurveModel(net), W, b


def analytic_distance(W, b, x, y, d):
    """Smallest ε > 0 where some margin (w_y − w_j)·(x + εd) + b_y − b_j turns negative."""
    xf, df = x.flatten(1), d.flatten(1)
    out = []
    for i in range(x.shape[0]):
        best = math.inf
        for j in range(W.shape[0]):
            if j == y[i]:
                continue
            dw = W[y[i]] - W[j]
            m0 = float(dw @ xf[i] + b[y[i]] - b[j])
            rate = float(dw @ df[i])
            if rate < 0:
                best = min(best, m0 / -rate)
        out.append(best)
    return torch.tensor(out, dtype=F64)


def test_travel_distance_of_a_linear_classifier_is_the_distance_to_its_hyperplane():
    m, W, b = linear_classifier()
    x = torch.rand(12, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(3))
    y = m(x).argmax(1)
    d = get_direction(m, x, kind="random", seed=5)
    truth = analytic_distance(W, b, x, y, d)
    fin_sorted = truth[truth.isfinite()].sort().values
    k = fin_sorted.numel() // 2
    eps_max = float(fin_sorted[k - 1] + fin_sorted[k]) / 2  # about half the samples censored
    y_bad = y.clone()
    y_bad[0] = (y[0] + 1) % 3  # misclassified: distance 0
    td = travel_distance(m, x, y_bad, d, h=1e-3, tol=1e-6, eps_max=eps_max)
    ok = torch.arange(12) > 0
    fin = ok & (truth <= eps_max)
    cen = ok & (truth > eps_max)
    assert fin.sum() >= 3 and cen.sum() >= 3
    assert ((td.eps[fin] - truth[fin]).abs() <= 1e-6 + 1e-12).all()
    assert (td.eps[fin] >= truth[fin] - 1e-12).all()  # the reported point has flipped
    assert td.censored[cen].all() and not td.censored[fin].any() and td.eps[cen].isnan().all()
    assert td.l2[fin] == pytest.approx((td.eps[fin] * d.flatten(1)[fin].norm(dim=1)).tolist())
    assert torch.equal(td.linf[fin], td.eps[fin])  # random signs: ‖d‖∞ = 1
    assert not td.correct[0] and td.eps[0] == 0 and not td.censored[0]
    assert td.n_censored == int(cen.sum())
    s = td.summary()
    assert s["n_correct"] == 11 and s["n_censored"] == int(cen.sum())
    df = td.to_dataframe()
    assert df["censored"].sum() == int(cen.sum()) and df.attrs["censored_value"] == "NaN"
    # the median counts censored samples above every finite one
    vals = torch.where(cen, torch.tensor(math.inf, dtype=F64), td.eps)[ok].sort().values
    assert td.median() == pytest.approx(float((vals[4] + vals[5]) / 2) if len(vals) % 2 == 0 else float(vals[len(vals) // 2]))


# -- agreement and reproducibility on a small random ViT --------------------------------------
def test_grid_and_finite_difference_local_turning_angles_agree():
    m = vit_model(F64)
    x = torch.rand(3, 1, 28, 28, dtype=F64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 2, 3])
    d = get_direction(m, x, y)
    tr = trajectory(m, x, d, T=11, E=0.005)  # grid step 1e-3
    c = curvature(tr, region="full", ladder=(1,))
    for space, sp in (("features", c.features), ("logits", c.logits)):
        fd = local_turning_angle(m, x, d, delta=1e-3, space=space)
        assert (fd > 1e-3).all()  # a real, non-zero angle
        assert torch.allclose(sp.local_angle, fd, atol=1e-7)
    c2 = curvature(tr, region="full", ladder=(1,), delta=2e-3)
    assert torch.allclose(c2.features.local_angle, local_turning_angle(m, x, d, delta=2e-3), atol=1e-7)
    with pytest.raises(RobcurveError, match="multiple of the grid step"):
        curvature(tr, delta=1.5e-3)


def test_batch_whole_equals_pieces_and_tiny_chunks(vit, vit_batch):
    x, y = vit_batch
    d = get_direction(vit, x, y)
    whole = trajectory(vit, x, d, T=21, E=0.05, y=y)
    pieces = [trajectory(vit, x[a:b], d[a:b], T=21, E=0.05) for a, b in ((0, 1), (1, 4))]
    tiny = trajectory(vit, x, d, T=21, E=0.05, chunk_size=5)
    for other in (torch.cat([p.features for p in pieces]), tiny.features):
        assert torch.allclose(whole.features, other, rtol=1e-4, atol=1e-5)
    assert torch.allclose(whole.logits, tiny.logits, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # one grid point recomputed directly
        lg, ft = vit.logits_and_features(x[2:3] + float(whole.eps[7]) * d[2:3])
    assert torch.allclose(whole.features[2, 7], ft[0], rtol=1e-4, atol=1e-5)
    assert whole.eps[7].item() == pytest.approx(-0.05 + 7 * 0.005)
    cw, ct = curvature(whole, region="full"), curvature(tiny, region="full")
    assert torch.allclose(cw.features.r2, ct.features.r2, atol=1e-5, equal_nan=True)
    assert torch.allclose(cw.features.straightness, ct.features.straightness, atol=1e-5, equal_nan=True)
    assert torch.allclose(cw.features.ladder_angle, ct.features.ladder_angle, atol=1e-2, equal_nan=True)
    # travel distance: whole, pieces and a tiny chunk agree to the bisection tolerance
    kw = dict(h=5e-3, tol=1e-5, eps_max=0.25)
    tw = travel_distance(vit, x, y, d, **kw)
    tp = [travel_distance(vit, x[a:b], y[a:b], d[a:b], **kw) for a, b in ((0, 1), (1, 4))]
    tc = travel_distance(vit, x, y, d, chunk=7, **kw)
    for other in (torch.cat([t.eps for t in tp]), tc.eps):
        assert torch.allclose(tw.eps, other, atol=2e-5, equal_nan=True)
    assert torch.equal(tw.censored, tc.censored)


def test_same_seed_same_directions_and_results(vit, vit_batch):
    x, y = vit_batch
    r0, r0b, r1 = (get_direction(vit, x, y, "random", seed=s) for s in (0, 0, 1))
    assert torch.equal(r0, r0b) and not torch.equal(r0, r1)
    assert set(r0.unique().tolist()) == {-1.0, 1.0}
    o0, o0b = (get_direction(vit, x, y, "orthogonal", seed=0) for _ in range(2))
    g = get_direction(vit, x, y, "fgsm")
    assert torch.equal(o0, o0b)
    assert torch.allclose(o0.flatten(1).abs().amax(1), torch.ones(4))
    cos = (o0.flatten(1) * g.flatten(1)).sum(1) / (o0.flatten(1).norm(dim=1) * g.flatten(1).norm(dim=1))
    assert cos.abs().max() < 1e-5
    # fgsm: sign of the CE gradient at the true label
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(vit(xg), y, reduction="sum").backward()
    assert torch.equal(g, xg.grad.sign())
    t1 = trajectory(vit, x[:2], r0[:2], T=9, E=0.02)
    t2 = trajectory(vit, x[:2], r0b[:2], T=9, E=0.02)
    assert torch.equal(t1.features, t2.features) and torch.equal(t1.logits, t2.logits)


def test_directions_registry_and_errors(vit, vit_batch):
    x, y = vit_batch
    assert {"fgsm", "random", "orthogonal", "pgd", "deepfool", "custom"} <= set(directions.names())
    with pytest.raises(RobcurveError, match="did you mean 'fgsm'"):
        get_direction(vit, x, y, "fgms")
    with pytest.raises(RobcurveError, match="needs a tensor"):
        get_direction(vit, x, y, "custom")
    with pytest.raises(RobcurveError, match="needs the true labels"):
        get_direction(vit, x, None, "fgsm")
    c = torch.randn(1, 28, 28)
    assert torch.equal(get_direction(vit, x, y, "custom", custom=c), c.expand_as(x))
    with pytest.raises(RobcurveError, match="does not match"):
        trajectory(vit, x, torch.ones(4, 1, 27, 27), T=5)
    with pytest.raises(RobcurveError, match="chunk size"):
        trajectory(vit, x, c, T=5, chunk_size=0)
    tr = trajectory(vit, x[:1], c, eps=[-0.02, -0.01, 0.0, 0.03])
    with pytest.raises(RobcurveError, match="uniform"):
        curvature(tr)


def test_even_grid_without_zero_uses_a_clean_forward():
    m = line_model()
    x = torch.rand(2, 1, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    tr = trajectory(m, x, torch.ones_like(x), T=20, E=0.1)
    assert torch.equal(tr.clean_pred, m(x).argmax(1))
    c = curvature(tr, region="full")
    assert c.features.local_angle.isnan().all() and c.features.r2[:, -1].sub(1).abs().max() < 1e-12


@pytest.mark.skipif(not all(hasattr(__import__("robcurve.attacks", fromlist=["x"]), a) for a in ("pgd", "deepfool")),
                    reason="robcurve.attacks does not expose pgd and deepfool yet")
def test_attack_directions_are_normalised(vit, vit_batch):  # pragma: no cover - depends on attacks
    from robcurve.attacks import deepfool, pgd

    x = vit_batch[0][:2]
    y = vit(x).argmax(1)  # correctly classified, so the attacks move them
    for kind, res in (("pgd", pgd(vit, x, y, 8 / 255, steps=3, seed=4)), ("deepfool", deepfool(vit, x, y, steps=3))):
        d = get_direction(vit, x, y, kind, seed=4, steps=3)
        disp = (res.x_adv - x).flatten(1)
        n = disp.abs().amax(1)
        assert (n > 0).all()
        assert torch.allclose(d.flatten(1), disp / n[:, None], atol=1e-6)
        assert torch.allclose(d.flatten(1).abs().amax(1), torch.ones(2))


# -- jump-out ----------------------------------------------------------------------------------
def test_jump_out_on_a_linear_classifier_matches_the_analytic_distances():
    m, W, b = linear_classifier(seed=1, K=2)
    x = torch.rand(6, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    y = m(x).argmax(1)
    eta = 0.01
    jo = jump_out(m, x, y, eta=eta, jump="random", direction="fgsm", keep_direction=True, T=21, E=0.05,
                  eps_max=5.0, seed=3)
    d = get_direction(m, x, y, "fgsm")
    u = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(3 + 1_000_003)).to(F64) * 2 - 1
    before = analytic_distance(W, b, x, y, d)
    after = analytic_distance(W, b, x + eta * u, y, d)
    assert ((jo.travel_before.eps - before).abs() <= 1e-6 + 1e-12).all()
    assert ((jo.travel_after.eps - after).abs() <= 1e-6 + 1e-12).all()
    df = jo.to_dataframe()
    want = (eta + df["linf_after"]) / df["linf_before"]
    assert np.allclose(df["shortcut_ratio"], want)
    want_l2 = (eta * u.flatten(1).norm(dim=1).numpy() + df["l2_after"]) / df["l2_before"]
    assert np.allclose(df["shortcut_ratio_l2"], want_l2)
    assert (df["shortcut_ratio"] >= 1 - 1e-6).all()  # a flat boundary hides no shortcut
    assert np.allclose(df["jump_linf"], eta) and not df["jump_flipped"].any()
    assert np.allclose(df["curvedness_before"], 0, atol=1e-9)
    assert df.attrs["jump_seed"] == 3 + 1_000_003


def test_jump_out_flip_and_refusal():
    m, W, b = linear_classifier(seed=1, K=2)
    x = torch.rand(6, 1, 4, 4, dtype=F64, generator=torch.Generator().manual_seed(4))
    y = m(x).argmax(1)
    d = get_direction(m, x, y, "fgsm")
    before = analytic_distance(W, b, x, y, d)
    # eta halfway between the two middle distances: torch's median of an even count is one of
    # the samples' own distances, which puts that sample exactly on the boundary after the jump
    s = before.sort().values
    eta = float((s[2] + s[3]) / 2)
    # recomputed FGSM after an FGSM jump: allowed; for a linear model d' = u, which is flagged
    jo = jump_out(m, x, y, eta=eta, jump="fgsm", direction="fgsm", T=11, E=0.02, eps_max=5.0)
    flipped = before < eta
    assert torch.equal(jo.jump_flipped, flipped) and flipped.any() and (~flipped).any()
    assert jo.jump_parallel.all()
    assert (jo.travel_after.eps[flipped] == 0).all() and not jo.travel_after.correct[flipped].any()  # already across
    assert torch.allclose(jo.shortcut_ratio[flipped], eta / before[flipped], rtol=1e-4)
    assert torch.allclose(jo.shortcut_ratio[~flipped], torch.ones(int((~flipped).sum()), dtype=F64), rtol=1e-4)
    with pytest.raises(RobcurveError, match="same line"):
        jump_out(m, x, y, jump="fgsm", direction="fgsm", keep_direction=True)
    with pytest.raises(RobcurveError, match="parallel"):
        jump_out(m, x, y, jump="fgsm", direction="custom", custom=d, T=5)
    with pytest.raises(RobcurveError, match="unknown jump"):
        jump_out(m, x, y, jump="sideways")


def test_jump_out_on_vit_fields(vit, vit_batch):
    x, y = vit_batch
    jo = jump_out(vit, x[:2], y[:2], jump="orthogonal", T=11, E=0.02, h=1e-2, eps_max=0.1, tol=1e-4)
    df = jo.to_dataframe()
    assert len(df) == 2 and {"curvedness_before", "curvedness_after", "shortcut_ratio", "censored_after"} <= set(df)
    assert df.attrs["jump"] == "orthogonal" and df.attrs["curvature_scale"]["E"] == pytest.approx(0.02)


# -- layer profile -------------------------------------------------------------------------------
def test_layer_profile_vit_one_entry_per_block_and_branch(vit, vit_batch):
    x, y = vit_batch
    d = get_direction(vit, x[:2], y[:2])
    lp = layer_profile(vit, x[:2], d, 0.02, T=9, region="full")
    kinds = [s.kind for s in lp.layers]
    for k in ("attn", "attn_res", "mlp", "block"):
        assert kinds.count(k) == 6
    assert lp.names[:4] == ["blocks.0.attn", "blocks.0.attn_res", "blocks.0.mlp", "blocks.0"]
    assert lp.names[-2:] == ["features", "logits"]
    df = lp.to_dataframe()
    assert len(df) == len(lp.layers) * 2 and df["angle_h0.005"].notna().all()
    assert len(lp.summary()) == len(lp.layers)
    # the profile's penultimate row is curvature() of the same trajectories
    c = curvature(trajectory(vit, x[:2], d, T=9, E=0.02), region="full", ladder=(1,))
    assert torch.allclose(lp.angle[-2], c.features.angle_fine, atol=1e-3)
    assert torch.allclose(lp.straightness[-1], c.logits.straightness[:, -1], atol=1e-5)
    # user-chosen modules, and a typo
    lp2 = layer_profile(vit, x[:1], d[:1], [-0.01, 0.0, 0.01], modules=["blocks.2.mlp.fc1", "net.norm"])
    assert lp2.names[:2] == ["blocks.2.mlp.fc1", "net.norm"]
    with pytest.raises(RobcurveError, match="did you mean"):
        layer_profile(vit, x[:1], d[:1], 0.01, T=3, modules=["blocks.2.mlpp"])


def test_layer_profile_swin_and_resnet():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    d = get_direction(RobcurveModel(build("swin")), x, kind="random")
    sw = layer_profile(RobcurveModel(build("swin"), (0.286,), (0.353,)), x, d, 0.01, T=5, region="full")
    kinds = [s.kind for s in sw.layers]
    assert kinds.count("attn") == 4 and kinds.count("mlp") == 4 and kinds.count("block") == 4
    assert "layers.1.blocks.1.mlp" in sw.names
    assert sw.angle.isfinite().all()
    rn = layer_profile(RobcurveModel(build("resnet"), (0.286,), (0.353,)), x, d, 0.01, T=5, region="full")
    assert [s.name for s in rn.layers][:2] == ["layer1.0", "layer1.1"] and len(rn.layers) == 8 + 2


# -- plots ------------------------------------------------------------------------------------------
def test_plots_make_figures():
    from robcurve.plots import plot_curvature_hist, plot_trajectory_pca, plot_turning_angle

    x = torch.full((2, 1, 2, 2), 0.4, dtype=F64)
    tr = trajectory(circle_model(20.0), x, torch.ones_like(x), T=21, E=0.1)
    c = curvature(tr, region="full")
    figs = [plot_trajectory_pca(tr, 1), plot_turning_angle(tr, 0), plot_turning_angle(c, 1, space="logits"),
            plot_curvature_hist({"vit": torch.tensor([0.1, 0.2, float("nan")]), "resnet": np.array([0.3, 0.05])},
                                threshold=0.15)]
    for f in figs:
        buf = io.BytesIO()
        f.savefig(buf, format="png")
        assert buf.tell() > 1000 and f.axes
    ax = figs[0].axes[0]
    assert any(line.get_label() == "chord" for line in ax.get_lines())
    assert "NaN=1" in figs[3].axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(RobcurveError):
        plot_trajectory_pca(tr, 5)
