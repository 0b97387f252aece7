"""Tests of robcurve.attacks: analytic DeepFool distances, agreement with foolbox and
torchattacks, PGD feasibility, targeted PGD, restarts, PGD distance, backends and errors.

Models: a linear classifier over flattened pixels (distances known in closed form) and the
zoo ViT at random initialisation with its own predictions as labels (a random-init model is
~10% accurate; labelling by its predictions makes every sample clean-correct, so every
sample is attacked). One torch thread: the CPUs are shared, and timing is not tested here.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robcurve.attacks import (
    ATTACKS,
    AttackResult,
    PGDDistanceResult,
    deepfool,
    pgd,
    pgd_distance,
    robust_accuracy,
    run_attack,
)
from robcurve.errors import RobcurveError

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def linear_model(k: int, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """nn.Linear over 1x28x28 pixels, biased so the decision boundaries pass near x = 0.5."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(784, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, 784, generator=g))
        lin.bias.copy_(-lin.weight @ torch.full((784,), 0.5))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.45 + 0.1 * torch.rand(24, 1, 28, 28, generator=g)  # far from the [0, 1] edges
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def analytic_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Distance to the nearest hyperplane f_k = f_y in the dual norm q (2 for L2, 1 for L∞)."""
    lin = model[1]
    with torch.no_grad():
        f = model(x)
        w = lin.weight.double()
        dist = torch.full((len(x),), math.inf, dtype=torch.float64)
        for k in range(f.shape[1]):
            dw = w[k][None] - w[y]  # (n, d)
            df = (f[:, k] - f.gather(1, y[:, None])[:, 0]).double().abs()
            d = torch.where(y == k, math.inf, df / dw.norm(p=q, dim=1))
            dist = torch.minimum(dist, d)
    return dist


@pytest.fixture(scope="module")
def vit():
    import robcurve.data.fashion_mnist  # noqa: F401  (registers the dataset)
    from robcurve.data.base import load_dataset
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.zoo.archs import build

    torch.manual_seed(0)
    model = RobcurveModel(build("vit"), (0.286,), (0.353,))
    x = load_dataset("fashion-mnist-embedded", n=16).images
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def recheck(model: nn.Module, res: AttackResult) -> torch.Tensor:
    with torch.no_grad():
        return model(res.x_adv).argmax(1)


# -- DeepFool ------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [2, 10])
@pytest.mark.parametrize("norm,q", [("L2", 2), ("Linf", 1)])
def test_deepfool_linear_equals_analytic_distance(k, norm, q):
    model, x, y = linear_model(k)
    res = deepfool(model, x, y, norm=norm, overshoot=0.02)
    d = analytic_distance(model, x, y, q)
    got = res.l2 if norm == "L2" else res.linf
    assert res.success.all() and (recheck(model, res) != y).all()
    assert (res.x_adv > 0).all() and (res.x_adv < 1).all()  # no clipping: the analytic case holds
    # one linearised step is exact on a linear model: (1 + overshoot) * (d + 1e-4)
    assert torch.allclose(got, 1.02 * (d + 1e-4), rtol=2e-4, atol=1e-6), (got / d).tolist()
    assert (got >= d).all() and (got <= 1.02 * d + 2e-4).all()
    assert (res.backwards == 1 * (k - 1)).all()  # one step of k-1 gradients per sample


def test_deepfool_matches_foolbox_and_really_misclassifies(vit):
    model, x, y = vit
    ours = deepfool(model, x, y, norm="L2", steps=50, overshoot=0.02)
    fb = run_attack("deepfool", model, x, y, backend="foolbox", norm="L2", steps=50, overshoot=0.02)
    assert ours.success.all() and fb.success.all()
    m_ours, m_fb = ours.median_distance("L2"), fb.median_distance("L2")
    assert abs(m_ours - m_fb) <= 0.01 * m_fb, (m_ours, m_fb)
    # the same algorithm: per sample too, up to float noise in the gradients (measured <= 2e-6)
    assert torch.allclose(ours.l2, fb.l2, rtol=1e-5, atol=0)
    pred = recheck(model, ours)
    assert (pred[ours.success] != y[ours.success]).all()
    assert (ours.x_adv >= 0).all() and (ours.x_adv <= 1).all()
    # finished samples leave the batch: fewer backward passes than foolbox's all-batch loop
    assert ours.backwards.sum() < fb.backwards.sum()


def test_deepfool_grad_modes_agree():
    model, x, y = linear_model(10, seed=1)
    a = deepfool(model, x, y, grad_mode="loop")
    b = deepfool(model, x, y, grad_mode="vmap")
    assert torch.allclose(a.x_adv, b.x_adv, atol=1e-6)


def test_deepfool_leaves_misclassified_alone():
    model, x, y = linear_model(10)
    y_wrong = (y + 1) % 10
    res = deepfool(model, x, y_wrong)
    assert res.success.all() and not res.clean_correct.any()
    assert (res.l2 == 0).all() and torch.equal(res.x_adv, x)


# -- PGD -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps", [("Linf", 0.03), ("L2", 0.5)])
@pytest.mark.parametrize("early_stop", [True, False])
def test_pgd_stays_in_budget_and_box(vit, norm, eps, early_stop):
    model, x, y = vit
    res = pgd(model, x, y, eps=eps, norm=norm, steps=5, early_stop=early_stop)
    assert (res.x_adv >= 0).all() and (res.x_adv <= 1).all()
    dist = res.linf if norm == "Linf" else res.l2
    assert (dist <= eps * (1 + 1e-5) + 1e-7).all(), dist.max()
    assert 0 < res.robust_accuracy < 1
    assert torch.equal(res.pred_adv, recheck(model, res))


@pytest.mark.parametrize("norm,eps", [("Linf", 0.03), ("L2", 0.5)])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_matches_torchattacks(vit, norm, eps, random_start):
    """early_stop=False is torchattacks' algorithm; the backend seeds torch's global RNG with the
    same seed our generator uses, so even the random start is the same draw."""
    model, x, y = vit
    ours = pgd(model, x, y, eps=eps, norm=norm, steps=10, random_start=random_start, seed=3, early_stop=False)
    ta = run_attack("pgd", model, x, y, backend="torchattacks", eps=eps, norm=norm, steps=10,
                    random_start=random_start, seed=3)
    assert abs(ours.robust_accuracy - ta.robust_accuracy) <= 0.01
    assert 0 < ta.robust_accuracy < 1
    assert (ours.x_adv - ta.x_adv).abs().max() < 1e-5
    # early stop freezes samples once fooled: never more robust than running on
    es = pgd(model, x, y, eps=eps, norm=norm, steps=10, random_start=random_start, seed=3)
    assert es.robust_accuracy <= ours.robust_accuracy
    assert es.queries.sum() <= ours.queries.sum()


def test_pgd_targeted_reaches_targets():
    model, x, y = linear_model(10)
    target = (y + 3) % 10
    res = pgd(model, x, y, eps=0.3, norm="Linf", steps=20, target=target)
    assert res.params["targeted"] is True
    assert res.success.all() and torch.equal(res.pred_adv, target)
    assert torch.equal(recheck(model, res), target)
    assert (res.linf <= 0.3 + 1e-6).all()


def test_pgd_restarts_never_worse(vit):
    model, x, y = vit
    one = pgd(model, x, y, eps=0.03, steps=5, restarts=1, seed=0)
    three = pgd(model, x, y, eps=0.03, steps=5, restarts=3, seed=0)
    assert (three.success | ~one.success).all()  # every sample fooled by one run stays fooled
    assert three.robust_accuracy <= one.robust_accuracy
    failed = ~one.success
    assert failed.any() and (three.queries[failed] > one.queries[failed]).all()  # restarts ran
    assert torch.equal(three.x_adv[one.success], one.x_adv[one.success])  # restart 0 = the single run


def test_pgd_batch_size_does_not_change_result(vit):
    model, x, y = vit
    a = pgd(model, x, y, eps=0.03, steps=5)
    b = pgd(model, x, y, eps=0.03, steps=5, batch_size=5)
    assert torch.equal(a.success, b.success)
    assert (a.x_adv - b.x_adv).abs().max() < 1e-5


@pytest.mark.parametrize("early_stop", [False, True])
def test_pgd_one_budget_equals_per_sample_budgets(vit, early_stop):
    """A float budget takes the scalar-bound step, a tensor of budgets the per-row one: same bits."""
    model, x, y = vit
    n = len(x)
    a = pgd(model, x, y, eps=0.03, steps=5, early_stop=early_stop)
    b = pgd(model, x, y, eps=torch.full((n,), 0.03), steps=5, early_stop=early_stop)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.pred_adv, b.pred_adv)
    mixed = torch.full((n,), 0.03)
    mixed[0] = 0.01  # budgets differ: the per-row path; the other rows are unchanged by it
    c = pgd(model, x, y, eps=mixed, steps=5, early_stop=early_stop)
    assert torch.equal(c.x_adv[1:], a.x_adv[1:])
    assert float(c.linf[0]) <= 0.01 + 1e-6 < float(a.linf[0])


def test_pgd_distance_bracket_is_reproducible(vit):
    model, x, y = vit
    hi, steps = 0.2, 6
    res = pgd_distance(model, x, y, norm="Linf", hi=hi, bisection_steps=steps, steps=10)
    assert isinstance(res, PGDDistanceResult)
    cens = res.censored
    ok = res.clean_correct & ~cens
    assert ok.sum() >= 4 and res.n_censored == int(cens.sum())
    assert torch.isinf(res.budget[cens]).all() and torch.isfinite(res.budget[ok]).all()
    assert (res.budget[ok] - res.budget_lo[ok] <= hi / 2**steps + 1e-12).all()
    assert res.success[ok].all() and (res.linf[ok] <= res.budget[ok] + 1e-6).all()
    assert res.params["loss"] == "margin"  # the PGD distance's default loss
    # re-run PGD (same loss) at the found budgets (others untouched: budget 0) -> every one succeeds ...
    at = pgd(model, x, y, eps=torch.where(ok, res.budget, 0.0), steps=10, loss="margin")
    assert at.success[ok].all()
    # ... and just below, at the bracket's low end, every one fails
    below = pgd(model, x, y, eps=torch.where(ok, res.budget_lo, 0.0), steps=10, loss="margin")
    assert not below.success[ok].any()
    df = res.to_dataframe()
    assert len(df) == len(x) and {"budget", "budget_lo", "censored"} <= set(df.columns)
    assert int(df["censored"].sum()) == res.n_censored


def test_pgd_distance_all_censored_when_hi_tiny():
    model, x, y = linear_model(10)
    res = pgd_distance(model, x, y, hi=1e-6, bisection_steps=3)
    assert res.n_censored == len(x) and torch.isinf(res.budget).all() and math.isinf(res.median_budget())


def test_robust_accuracy_function(vit):
    model, x, y = vit
    assert robust_accuracy(model, x, y, 0.03, steps=5) == pgd(model, x, y, 0.03, steps=5).robust_accuracy


# -- backends and the interface ------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["robcurve", "torchattacks", "foolbox"])
@pytest.mark.parametrize("name,params", [("pgd", {"eps": 0.02, "steps": 5}), ("deepfool", {"steps": 20})])
def test_backends_give_consistent_results(backend, name, params):
    model, x, y = linear_model(10)
    x, y = x[:6], y[:6]
    if backend != "robcurve" and name == "pgd":
        params = {**params, "early_stop": False}
    if backend == "torchattacks" and name == "deepfool":
        params = {**params, "candidates": None}
    res = run_attack(name, model, x, y, backend=backend, **params)
    n = len(x)
    assert isinstance(res, AttackResult) and res.backend == backend and res.attack == name
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    for f in ("success", "l2", "linf", "queries", "clean_correct", "pred_adv", "forwards", "backwards", "labels"):
        assert getattr(res, f).shape == (n,), f
    assert res.success.dtype == torch.bool and res.clean_correct.dtype == torch.bool
    delta = (res.x_adv - x).flatten(1).double()
    assert torch.allclose(res.l2, delta.norm(dim=1)) and torch.allclose(res.linf, delta.abs().amax(1))
    assert torch.equal(res.pred_adv, recheck(model, res)) and torch.equal(res.success, res.pred_adv != y)
    assert (res.queries == res.forwards + res.backwards).all() and (res.backwards > 0).all()
    df = res.to_dataframe()
    assert len(df) == n and df["success"].tolist() == res.success.tolist()
    assert res.robust_accuracy == pytest.approx(float((res.clean_correct & ~res.success).double().mean()))
    if name == "deepfool":
        assert res.success.all()
    if name == "pgd":
        assert (res.linf <= 0.02 + 1e-6).all()


def test_registry_and_errors():
    assert {"pgd", "deepfool"} <= set(ATTACKS.names())
    model, x, y = linear_model(2)
    with pytest.raises(RobcurveError, match="did you mean 'pgd'"):
        run_attack("pdg", model, x, y, eps=0.1)
    with pytest.raises(RobcurveError, match="did you mean 'foolbox'"):
        run_attack("pgd", model, x, y, eps=0.1, backend="fooolbox")
    with pytest.raises(RobcurveError, match="did you mean 'steps'") as e:
        run_attack("pgd", model, x, y, eps=0.1, stpes=3)
    assert "Fix:" in str(e.value)
    with pytest.raises(RobcurveError, match="needs eps"):
        run_attack("pgd", model, x, y)
    with pytest.raises(RobcurveError, match=r"\[0, 1\]"):
        pgd(model, x * 255, y, eps=0.1)
    with pytest.raises(RobcurveError, match="target"):
        pgd(model, x, y, eps=0.1, targeted=True)
    with pytest.raises(RobcurveError, match="norm"):
        deepfool(model, x, y, norm="L7")
    with pytest.raises(RobcurveError, match="early stop"):
        run_attack("pgd", model, x, y, eps=0.1, backend="torchattacks", early_stop=True)
    with pytest.raises(RobcurveError, match="all 2 classes|L2 only"):
        run_attack("deepfool", model, x, y, backend="torchattacks", norm="Linf")
    with pytest.raises(RobcurveError, match="labels"):
        pgd(model, x, y.float(), eps=0.1)


def test_missing_backend_library_is_a_clear_error(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "foolbox":
            raise ImportError("No module named 'foolbox'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    model, x, y = linear_model(2)
    with pytest.raises(RobcurveError, match="not installed.*Fix: pip install foolbox"):
        run_attack("deepfool", model, x, y, backend="foolbox")


def test_device_autocast_and_train_mode_restored():
    model, x, y = linear_model(10)
    model.train()
    res = deepfool(model, x, y, device="cpu", autocast=True)  # bfloat16 forward on the CPU
    assert model.training and all(m.training for m in model.modules())
    assert res.x_adv.device == x.device and res.params["autocast"] == "True"
    assert res.success.float().mean() > 0.9


def test_jumpout_through_the_attack_interface():
    """`jumpout` runs METHOD §4 through run_attack; its examples are where the travel after the jump flips."""
    from robcurve.attacks import run_attack
    from robcurve.geometry import jump_out

    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(6, 1, 4, 4) * 0.5 + 0.25
    with torch.no_grad():
        y = lin(x).argmax(1)
    res = run_attack("jumpout", lin, x, y, eta=0.01, eps_max=2.0, T=21, E=0.05)
    ref = jump_out(lin, x, y, eta=0.01, eps_max=2.0, T=21, E=0.05)
    assert res.attack == "jumpout" and len(res) == 6
    ok = ~ref.travel_after.censored
    assert ok.any()
    # every flipped travel gives a misclassified example, at distance about eta + eps_after from x
    with torch.no_grad():
        assert (lin(res.x_adv).argmax(1)[ok] != y[ok]).all()
    assert res.success[ok].all()
    expected = (0.01 + ref.travel_after.linf[ok]).double()
    assert torch.all(res.linf[ok] <= expected + 1e-4)


def test_robcurve_wrapper_is_safe_to_hand_to_torchattacks():
    """torchattacks special-cases a class named RobModel; ours must not be treated so."""
    import torchattacks

    from robcurve.models.wrapper import RobcurveModel
    from robcurve.zoo.archs import build

    torch.manual_seed(0)
    m = RobcurveModel(build("resnet"), (0.286,), (0.353,))
    x = torch.rand(4, 1, 28, 28)
    y = torch.randint(0, 10, (4,))
    adv = torchattacks.PGD(m, eps=0.05, alpha=0.01, steps=3)(x, y)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((adv - x).abs().max()) <= 0.05 + 1e-6
