"""Known answers for the tests of the paper's claims (issue 24): boundary-relative windows, exact
tests across models, multiplicity corrections, the censored median, the consistency p-value."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from robcurve import acrossmodels as A
from robcurve import stats
from robcurve.geometry.window import affine_r2, window_curvature, window_grid


# -- boundary-relative windows -----------------------------------------------------------------------
def _lstsq_curvedness(z: np.ndarray, e: np.ndarray) -> float:
    X = np.column_stack([np.ones_like(e), e])
    coef, *_ = np.linalg.lstsq(X, z, rcond=None)
    resid = z - X @ coef
    return float((resid**2).sum() / ((z - z.mean(0)) ** 2).sum())


def test_r2_does_not_depend_on_how_eps_is_scaled():
    """The same path sampled on [0, t] with ε in other units (t vs 1): the same curvedness, equal to lstsq's."""
    u = window_grid(torch.tensor([1.0], dtype=torch.float64), 41, 1.0, "boundary")
    z = torch.stack([u, u**2, torch.sin(3 * u)], -1)
    for scale in (0.01, 0.3, 7.0):
        c = float((1 - affine_r2(z, u * scale))[0])
        assert c == pytest.approx(_lstsq_curvedness(z[0].numpy(), (u[0] * scale).numpy()), rel=1e-9)
        assert c == pytest.approx(float((1 - affine_r2(z, u))[0]), rel=1e-12)


class _Kinked(torch.nn.Module):
    """Features (p, relu(p - c)) of the pixel mean p: affine in the class-0 region p < c, a kink at
    the boundary p = c (class 1 when p > c). Along d = +1 the travel distance is t = c - p."""

    def __init__(self, c: float = 0.6):
        super().__init__()
        self.c = c
        self.head = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, -c]))

    def forward(self, x):
        p = x.flatten(1).mean(1, keepdim=True)
        return self.head(torch.cat([p, torch.relu(p - self.c)], 1))


def test_affine_region_gives_the_same_boundary_relative_curvedness_for_every_sample():
    """Samples at different distances from the kink: every boundary-relative window lies in the affine
    region (curvedness 0 for all), while one fixed window [-E, E] crosses the kink for the near ones."""
    from robcurve.geometry import travel_distance

    p0 = torch.tensor([0.1, 0.3, 0.45, 0.55], dtype=torch.float64)
    x = p0.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).float().contiguous()
    d = torch.ones_like(x)
    model = _Kinked()
    y = torch.zeros(4, dtype=torch.long)
    tr = travel_distance(model, x, y, d, h=1e-3, tol=1e-7, eps_max=1.0)
    t = torch.as_tensor(tr.eps)
    assert np.allclose(t.numpy(), 0.6 - p0.numpy(), atol=1e-5)
    w = window_curvature(model, x, d, t, torch.zeros(4, dtype=torch.bool), points=41)
    assert torch.all(w.feat_side.abs() < 1e-6) and torch.all(w.feat_sym.abs() < 1e-6)
    fixed = window_curvature(model, x, d, torch.full((4,), 0.2), torch.zeros(4, dtype=torch.bool), points=41)
    crosses = (0.6 - p0) < 0.2
    assert torch.all(fixed.feat_sym[crosses] > 1e-3) and torch.all(fixed.feat_sym[~crosses].abs() < 1e-6)


class _Affine(torch.nn.Module):
    """An affine classifier: its features (the flattened input) move exactly on a line."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_affine_model_has_zero_window_curvedness_for_every_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 28, 28, generator=g)
    d = torch.sign(torch.randn(x.shape, generator=g))
    t = torch.tensor([0.02, 0.05, 0.1, 0.2, 1.0])
    w = window_curvature(_Affine(), x, d, t, torch.zeros(5, dtype=torch.bool), points=21)
    for v in (w.feat_side, w.feat_sym, w.logit_side, w.logit_sym):
        assert torch.all(v.abs() < 1e-6), v  # float32 rounding of x + eps d only


def test_window_grid_positions():
    g = window_grid(torch.tensor([0.2], dtype=torch.float64), 5, 0.5, "boundary")
    assert np.allclose(g.numpy(), [[0.0, 0.025, 0.05, 0.075, 0.1]], atol=1e-15)
    s = window_grid(torch.tensor([0.2], dtype=torch.float64), 5, 1.0, "symmetric")
    assert np.allclose(s.numpy(), [[-0.2, -0.1, 0.0, 0.1, 0.2]], atol=1e-15)


# -- exact tests across models ---------------------------------------------------------------------
@pytest.mark.parametrize("n,seed", [(5, 0), (6, 1), (7, 2), (8, 3)])
def test_permutation_p_equals_scipy_exact(n, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.random(n), rng.random(n)
    ref = sps.permutation_test((y,), lambda a: sps.spearmanr(x, a).statistic, permutation_type="pairings",
                               n_resamples=np.inf, alternative="two-sided").pvalue
    t = A.spearman_test(x, y)
    assert t.p == pytest.approx(ref, abs=1e-12) and t.rho == pytest.approx(sps.spearmanr(x, y).statistic)


def test_power_line_and_ties_make_a_relation_untestable():
    assert A.critical_rho(6) == pytest.approx(0.8857, abs=1e-4)  # |rho| >= 0.886 needed with 6 models
    t = A.spearman_test([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0, 0, 0, 0, 0.1, 0.3])  # 4 of 6 tied at 0
    assert t.p_min == pytest.approx(48 / 720) and not t.testable  # smallest achievable p 0.067 > 0.05


def test_many_models_use_seeded_draws_and_p_is_never_zero():
    x = np.arange(12.0)
    t = A.spearman_test(x, x, seed=0)
    assert "seeded draws" in t.method and 0 < t.p < 1e-4


def test_partial_spearman_removes_a_shared_cause():
    rng = np.random.default_rng(0)
    z = rng.random(9)
    x = z + 0.3 * rng.random(9)
    y = z + 0.3 * rng.random(9)
    assert A.spearman_test(x, y).rho > 0.5
    r, p = A.partial_spearman(x, y, z)
    assert abs(r) < 0.8 and p > 0.05


def test_family_contrast_exact_over_labels():
    v = [1, 2, 3, 4, 5, 6]
    out = A.family_contrast(v, ["t", "t", "t", "c", "c", "c"], "t", "c")
    brute = [abs(np.median([v[i] for i in a]) - np.median([v[i] for i in range(6) if i not in a])) >= 3
             for a in itertools.combinations(range(6), 3)]
    assert out["diff"] == -3 and out["p"] == pytest.approx(sum(brute) / 20) and "20 labellings" in out["method"]


def test_holm_and_bh_equal_statsmodels_and_a_hand_holm():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.5, float("nan")]
    holm = A.adjust(p, "holm")
    assert np.allclose(holm[:4], multipletests(p[:4], method="holm")[1]) and math.isnan(holm[4])
    order = np.argsort(p[:4])
    hand = np.minimum(1, np.maximum.accumulate([(4 - k) * p[i] for k, i in enumerate(order)]))
    assert np.allclose(np.asarray(holm)[order], hand)
    assert np.allclose(A.adjust(p, "fdr_bh")[:4], multipletests(p[:4], method="fdr_bh")[1])


def test_mixed_model_recovers_a_known_within_model_slope():
    rng = np.random.default_rng(0)
    rows = []
    for m in range(8):
        off = rng.normal(0, 2)
        x = rng.normal(size=60)
        rows += [{"model": f"m{m}", "x": xi, "y": off + 0.5 * xi + rng.normal(0, 0.5), "fam": "a" if m % 2 else "b"}
                 for xi in x]
    res = A.mixed_model(pd.DataFrame(rows), "y", "x", fixed=("fam",))
    assert res["n_models"] == 8 and res["n_samples"] == 480
    assert res["lo"] < res["coef"] < res["hi"] and res["lo"] > 0 and res["p"] < 1e-6


# -- small defects ---------------------------------------------------------------------------------------
def test_censored_median_of_even_count_is_a_finite_bound():
    v = np.array([0.1, 0.2, np.inf, np.inf])
    assert stats.median_censored(v, cap=1.0) == pytest.approx(0.6)  # at least (0.2 + 1) / 2
    assert stats.median_censored(v) == math.inf  # without the cap only "above the range" is known
    assert stats.median_censored(np.array([0.1, np.inf, np.inf])) == math.inf
    assert stats.median_censored(np.array([0.1, 0.3, 0.5, np.inf])) == pytest.approx(0.4)


def test_consistency_p_value_is_never_zero():
    conf = np.full(200, 0.99)
    correct = np.zeros(200)  # far from calibrated: no draw reaches the observed ECE
    mean, lo, hi, p = stats.ece_perfect(conf, correct, 15, draws=99, seed=0)
    assert p == pytest.approx(1 / 100)


def test_exact_enumeration_sizes():
    assert len(list(itertools.permutations(range(A.MAX_EXACT)))) == 362_880


# -- attention ablation (METHOD §8) ---------------------------------------------------------------------
class _OneBlockAttention(torch.nn.Module):
    """Patch embedding, one softmax attention (no norm, no MLP), mean pool, linear head."""

    def __init__(self):
        super().__init__()
        from timm.models.vision_transformer import Attention

        torch.manual_seed(0)
        self.embed = torch.nn.Linear(16, 24)
        self.attn = Attention(24, num_heads=2, qkv_bias=True)
        self.head = torch.nn.Linear(24, 10)

    def forward(self, x):
        tok = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(x.shape[0], -1, 16)  # 49 patches of 4x4
        return self.head(self.attn(self.embed(tok)).mean(1))


def _path(n=3, seed=0, t=0.15):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    d = torch.sign(torch.randn(x.shape, generator=g))
    return x, d, torch.full((n,), t), torch.zeros(n, dtype=torch.bool)


def test_frozen_attention_makes_a_one_block_attention_toy_affine():
    from robcurve.geometry.ablation import ablation_curvature

    model = _OneBlockAttention().eval()
    x, d, t, cens = _path(t=1.0)
    free = window_curvature(model, x, d, t, cens, points=41)
    fz = ablation_curvature(model, x, d, t, cens, "attention", points=41)
    assert torch.all(free.feat_sym > 1e-3)  # the attention map's response bends the path ...
    assert torch.all(fz.feat_sym.abs() < 1e-6) and torch.all(fz.feat_side.abs() < 1e-6)  # ... frozen, it is affine
    # the model is unchanged after the context
    assert torch.allclose(window_curvature(model, x, d, t, cens, points=41).feat_sym, free.feat_sym)


def test_frozen_relu_makes_a_resnet_affine():
    from robcurve.geometry.ablation import ablation_curvature
    from robcurve.models import load_model

    model = load_model("zoo:resnet-fmnist")
    x, d, t, cens = _path(2)
    free = window_curvature(model, x, d, t, cens, points=21)
    fz = ablation_curvature(model, x, d, t, cens, "gates", points=21)
    assert torch.all(free.feat_sym > 1e-3)
    assert torch.all(fz.feat_sym.abs() < 1e-5) and torch.all(fz.logit_sym.abs() < 1e-5), fz.feat_sym


def test_frozen_attention_replays_the_clean_forward_at_eps_zero():
    from robcurve.geometry.ablation import frozen
    from robcurve.models import load_model

    for spec in ("zoo:vit-fmnist", "zoo:swin-fmnist"):
        model = load_model(spec)
        x, _, _, _ = _path(2)
        with torch.no_grad():
            ref = model(x)
            with frozen(model, "attention") as fz:
                rec = fz.record(model, x)
                fz.rows = torch.tensor([1, 0, 1])
                rep = model(x[[1, 0, 1]])
        assert torch.allclose(rec, ref, atol=1e-5) and torch.allclose(rep, ref[[1, 0, 1]], atol=1e-5), spec


# -- adaptive jump-out (METHOD §4) ---------------------------------------------------------------------
class _CurvedRegion(torch.nn.Module):
    """Features (p, s(q) sin(30 p)) where p is the mean of the left half of the image and q the maximum
    of its right half; s(q) = 1 inside the curved region q < q0. The label flips at p = 0.6, so the
    FGSM direction moves p only (it is 0 on the right half) and travel stays inside the region; a jump
    that raises any right-half pixel to q0 leaves it. The smallest such jump is known: η* = q0."""

    def __init__(self, q0: float = 0.03):
        super().__init__()
        self.q0 = q0
        self.head = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [20.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, -20.0 * 0.6]))

    def forward(self, x):
        left, right = x[..., :14], x[..., 14:]
        p = left.flatten(1).mean(1, keepdim=True)
        s = (right.flatten(1).amax(1, keepdim=True) < self.q0).to(x.dtype)
        return self.head(torch.cat([p, s * torch.sin(30 * p)], 1))


def test_adaptive_jump_finds_the_known_smallest_jump_out_of_a_curved_region():
    from robcurve.geometry import get_direction, travel_distance
    from robcurve.geometry.adaptive_jump import adaptive_jump

    model = _CurvedRegion(q0=0.03)
    x = torch.zeros(3, 1, 28, 28)
    x[..., :14] = torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1, 1)
    x[2, :, :, 14:] = 0.5  # the third sample starts outside the curved region: a straight control
    y = torch.zeros(3, dtype=torch.long)

    def direction_fn(xx, yy):
        return get_direction(model, xx, yy, kind="fgsm")

    def travel_fn(xx, yy, dd):
        r = travel_distance(model, xx, yy, dd, h=1e-3, tol=1e-7, eps_max=1.0)
        return torch.as_tensor(r.eps, dtype=torch.float64), torch.as_tensor(r.censored)

    d = direction_fn(x, y)
    assert torch.all(d[..., 14:] == 0)
    t0, cens = travel_fn(x, y, d)
    c0 = window_curvature(model, x, d, t0, cens, points=41).feat_side
    assert bool(c0[0] > 0.05) and bool(c0[1] > 0.05) and bool(c0[2].abs() < 1e-9)
    res = adaptive_jump(model, x, y, d, t0, c0, direction_fn=direction_fn, travel_fn=travel_fn, threshold=0.05,
                        etas=[0.01, 0.02, 0.04, 0.08], seed=0, points=41)
    assert res.curved.tolist() == [True, True, False]
    assert res.jumped[:2].all() and res.eta[:2].tolist() == [0.04, 0.04]  # the known eta* = q0 rounded up the ladder
    assert all(k == "random" for k in res.kind[:2]) and torch.all(res.c_after[:2].abs() < 1e-9)
    # after the jump the boundary is where the straight path says: t' = 0.6 - p' (p' within a jump of p)
    assert np.allclose(res.t_after[:2].numpy(), (0.6 - torch.tensor([0.1, 0.2])).numpy(), atol=0.05)
    assert res.eta[2] == 0.01 and res.kind[2] == "random"  # the straight control gets the first jump
    # no random jump of size eta* keeps these samples in the region (every right-half pixel goes up or stays 0
    # and the max is eta*), so the null control finds no non-straightening jump: it stays NaN, never invented
    assert torch.isnan(res.null_ratio[:2]).all()


def test_gates_cover_timm_gelu_and_freezing_them_replays_the_clean_forward():
    from robcurve.geometry.ablation import frozen, has_gates
    from robcurve.models import load_model

    model = load_model("zoo:convnext-fmnist")  # timm's own GELU class in the MLPs
    assert has_gates(model)
    x, _, _, _ = _path(2)
    with torch.no_grad():
        ref = model(x)
        with frozen(model, "gates") as fz:
            rec = fz.record(model, x)
            fz.rows = torch.tensor([0, 1])
            rep = model(x)
    assert torch.allclose(rec, ref, atol=1e-5) and torch.allclose(rep, ref, atol=1e-5)


def test_jumpout_reusing_the_trajectory_pass_gives_identical_rows(tmp_path):
    """The jump-out's 'before' side is the trajectory measurement's (shared pass): the rows must equal
    those of a run that measures the jump-out alone (which computes its own)."""
    import json as _json
    import sqlite3

    from robcurve.cli import main

    smoke = str(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
    rows = {}
    for tag, ms in (("shared", "clean,trajectory,jumpout"), ("alone", "clean,jumpout")):
        out = tmp_path / tag
        assert main(["bench", "--model", "zoo:vit-fmnist", "--config", smoke, "--out", str(out), "--no-progress",
                     "--set", "n=4", "--set", "summary.bootstrap=0", "--measurements", ms, "--attack", "none"]) == 0
        con = sqlite3.connect(str(out / "results.sqlite"))
        rows[tag] = [(s, _json.loads(v)) for s, v in con.execute(
            "SELECT sample, value FROM results WHERE measurement='jumpout' ORDER BY sample")]
        con.close()
    assert rows["shared"] == rows["alone"]


def test_training_trend_starts_at_epoch_one_with_exact_p():
    from robcurve.reproduce.track import TrackResult

    rows = []
    for s, fam, vals in (("a", "transformer", [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]), ("b", "cnn", [0.0, 0.5, 0.4, 0.45, 0.3, 0.2])):
        for e, v in enumerate(vals):
            rows.append({"series": s, "family": fam, "epoch": e, "model": s, "metric": "curvedness_median",
                         "condition": f"epoch={e}", "measured_at": "", "value": v, "lo": None, "hi": None,
                         "interval": "", "n": 10, "unit": "", "direction": "none", "run": ""})
    res = TrackResult(Path("."), [], pd.DataFrame(rows), {"a": "transformer", "b": "cnn"})
    tr = res.trends(metrics=(("curvedness_median", None),)).set_index("series")
    assert tr.loc["a", "epochs"] == "1-5" and tr.loc["a", "rho"] == pytest.approx(1.0)  # epoch 0 (0.9) left out
    assert tr.loc["a", "p"] == pytest.approx(2 / 120)  # exact: 2 of 5! orderings as extreme
    assert tr.loc["b", "rho"] == pytest.approx(-0.9)
    assert tr.loc["a", "p_holm"] == pytest.approx(min(1, 2 * 2 / 120))
