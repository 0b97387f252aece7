"""Calibration metrics (robcurve.calibration) against torchmetrics and hand-computed values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

import robcurve.data.fashion_mnist  # noqa: F401  (registers the dataset)
from robcurve.calibration import (
    bin_index,
    calibration,
    calibration_under_attack,
    reliability_diagram,
)
from robcurve.data.base import load_dataset
from robcurve.errors import RobcurveError


def _tm_ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    k = logits.shape[1]
    return float(MulticlassCalibrationError(num_classes=k, n_bins=n_bins, norm="l1")(logits, labels))


def _assert_off_edges(logits: torch.Tensor, n_bins: int = 15) -> None:
    """torchmetrics bins lo <= conf < hi, robcurve lo < conf <= hi: equal unless a confidence is on an edge.

    The check is in float64, where both libraries compute the confidences (robcurve always,
    torchmetrics when given float64 logits) and where they differ by a few ULPs at most.
    """
    conf = torch.softmax(logits.double(), 1).max(1).values
    scaled = conf * n_bins
    assert (scaled - scaled.round()).abs().min() > 1e-9, "a confidence lies on a bin edge"


@pytest.fixture(scope="module")
def real_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out logits of a multinomial logistic regression fitted on 800 embedded Fashion-MNIST images."""
    ss = load_dataset("fashion-mnist-embedded", n=1000, seed=0)
    x = ss.images.flatten(1)
    x = (x - 0.2860) / 0.3530
    y = ss.labels
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.LBFGS(lin.parameters(), lr=0.5, max_iter=60, history_size=10)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(x[:800]), y[:800]) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return lin(x[800:]), y[800:]


@pytest.mark.parametrize("seed,temp", [(0, 1.0), (1, 3.0), (2, 0.3)])
def test_ece_equals_torchmetrics_random(seed: int, temp: float) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3000, 10, generator=g) * temp
    labels = torch.randint(0, 10, (3000,), generator=g)
    # make a share of the predictions right, so the bins hold a mix of accuracies
    labels[:1000] = logits[:1000].argmax(1)
    _assert_off_edges(logits)
    r = calibration(logits, labels)
    assert r.ece == pytest.approx(_tm_ece(logits.double(), labels), abs=1e-6)
    assert r.ece == pytest.approx(_tm_ece(logits, labels), abs=1e-6)  # float32 input to torchmetrics
    assert r.ece > 0.01  # not a trivial zero


def test_ece_equals_torchmetrics_real(real_logits) -> None:
    logits, labels = real_logits
    r = calibration(logits, labels)
    assert r.accuracy > 0.7  # the linear model really learnt something
    _assert_off_edges(logits)
    _assert_off_edges(logits, 10)
    # float64 logits: in float32 the fitted model's softmax rounds confidences above 1 - 6e-8 to
    # exactly 1.0, which torchmetrics keeps in an extra bin [1, 1] and robcurve in (14/15, 1].
    assert r.ece == pytest.approx(_tm_ece(logits.double(), labels), abs=1e-6)
    r10 = calibration(logits, labels, n_bins=10)
    assert r10.ece == pytest.approx(_tm_ece(logits.double(), labels, n_bins=10), abs=1e-6)
    assert r10.ece != pytest.approx(r.ece, abs=1e-4)  # the number of bins matters


def test_bin_membership_convention_differs_from_torchmetrics_on_edges() -> None:
    # n_bins=4: edges 0, .25, .5, .75, 1 are exact. Confidence 0.5 is in (0.25, 0.5] here,
    # in [0.5, 0.75) in torchmetrics.
    p = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.6, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    assert bin_index(torch.tensor([0.5, 0.6, 1.0, 0.25 + 1e-9], dtype=torch.float64), 4).tolist() == [1, 2, 3, 1]
    r = calibration(p, y, n_bins=4, probs=True)
    # bin (0.25, 0.5]: 2 samples, acc 1, conf 0.5 ; bin (0.5, 0.75]: 1 sample, acc 0, conf 0.6
    assert r.ece == pytest.approx(2 / 3 * 0.5 + 1 / 3 * 0.6, abs=1e-12)
    tm = float(MulticlassCalibrationError(num_classes=2, n_bins=4, norm="l1")(p, y))
    assert tm == pytest.approx(abs(2 / 3 - 1.6 / 3), abs=1e-6)  # all three in one bin there
    assert abs(r.ece - tm) > 0.3


def test_sece_sign_constructed() -> None:
    # overconfident: always 90% sure, right half of the time
    p_over = torch.tensor([[0.9, 0.1]] * 100, dtype=torch.float64)
    y_over = torch.tensor([0, 1] * 50)
    r = calibration(p_over, y_over, probs=True)
    assert r.sece == pytest.approx(-0.4, abs=1e-12) and r.ece == pytest.approx(0.4, abs=1e-12)
    # underconfident: always 60% sure, always right
    p_under = torch.tensor([[0.6, 0.4]] * 100, dtype=torch.float64)
    r = calibration(p_under, torch.zeros(100, dtype=torch.long), probs=True)
    assert r.sece == pytest.approx(0.4, abs=1e-12) and r.ece == pytest.approx(0.4, abs=1e-12)


def test_sece_sign_under_temperature(real_logits) -> None:
    logits, labels = real_logits
    assert calibration(logits * 5, labels).sece < -0.05  # sharpened: overconfident
    assert calibration(logits * 0.2, labels).sece > 0.05  # flattened: underconfident
    r = calibration(logits, labels)
    assert r.sece == pytest.approx(r.accuracy - r.mean_confidence, abs=1e-12)


def test_perfect_calibration_is_zero() -> None:
    rows, labels = [], []
    for c in (0.6, 0.7, 0.8, 0.9, 1.0):
        n_right = round(10 * c)
        for i in range(10):
            rows.append([c, 1 - c])
            labels.append(0 if i < n_right else 1)
    r = calibration(torch.tensor(rows, dtype=torch.float64), torch.tensor(labels), probs=True)
    assert r.ece == pytest.approx(0, abs=1e-12)
    assert r.sece == pytest.approx(0, abs=1e-12)
    assert r.mce == pytest.approx(0, abs=1e-12)


def test_bin_table(real_logits) -> None:
    logits, labels = real_logits
    r = calibration(logits, labels)
    df = r.bins_dataframe()
    assert list(df.columns) == ["lo", "hi", "count", "accuracy", "confidence", "gap"]
    assert len(df) == 15 and int(df["count"].sum()) == r.n == len(labels)
    assert df["lo"].iloc[0] == 0 and df["hi"].iloc[-1] == 1
    empty = df["count"] == 0
    assert df.loc[empty, "accuracy"].isna().all() and df.loc[~empty, "accuracy"].notna().all()
    inside = df[~empty]
    assert ((inside["confidence"] > inside["lo"]) & (inside["confidence"] <= inside["hi"])).all()
    # ECE recomputed from the table
    ece = float((inside["count"] / r.n * (inside["accuracy"] - inside["confidence"]).abs()).sum())
    assert ece == pytest.approx(r.ece, abs=1e-12)
    d = r.to_dict()
    assert d["bins"]["count"] == df["count"].tolist() and d["n"] == r.n


def test_bootstrap_interval(real_logits) -> None:
    logits, labels = real_logits
    r = calibration(logits, labels, bootstrap=500, seed=3)
    for key in ("ece", "sece", "accuracy"):
        lo, hi = r.ci[key]
        assert lo <= getattr(r, key) <= hi and hi - lo > 0
    assert r.ci == calibration(logits, labels, bootstrap=500, seed=3).ci
    assert r.ci != calibration(logits, labels, bootstrap=500, seed=4).ci


def test_mce_at_least_ece(real_logits) -> None:
    logits, labels = real_logits
    for scale in (0.2, 1.0, 5.0):
        r = calibration(logits * scale, labels)
        assert r.mce >= r.ece > 0
    g = torch.Generator().manual_seed(5)
    r = calibration(torch.randn(500, 4, generator=g), torch.randint(0, 4, (500,), generator=g))
    assert r.mce >= r.ece > 0


def test_nll_brier_by_hand() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    r = calibration(p, y, probs=True)
    assert r.nll == pytest.approx(-(math.log(0.7) + math.log(0.3)) / 2, abs=1e-12)  # 0.780324
    # Brier (multi-class): ((.3² + .2² + .1²) + (.1² + .7² + .6²)) / 2 = (0.14 + 0.86) / 2
    assert r.brier == pytest.approx(0.5, abs=1e-12)
    assert r.accuracy == 0.5
    assert r.ece == pytest.approx((0.3 + 0.6) / 2, abs=1e-12)
    assert r.sece == pytest.approx((0.3 - 0.6) / 2, abs=1e-12)
    assert r.mce == pytest.approx(0.6, abs=1e-12)
    # from logits: log-softmax
    z = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    r = calibration(z, torch.tensor([0, 2]))
    z1, z2 = math.exp(2) + 2, math.e + 2
    assert r.nll == pytest.approx((-math.log(math.exp(2) / z1) - math.log(1 / z2)) / 2, abs=1e-9)
    b1 = (1 - math.exp(2) / z1) ** 2 + 2 * (1 / z1) ** 2
    b2 = (1 / z2) ** 2 + (math.e / z2) ** 2 + (1 - 1 / z2) ** 2
    assert r.brier == pytest.approx((b1 + b2) / 2, abs=1e-9)


def test_calibration_under_attack() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    x = torch.rand(64, 1, 28, 28)
    y = torch.randint(0, 10, (64,))
    g = torch.Generator().manual_seed(1)
    x1 = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    x2 = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    df = calibration_under_attack(model, x, y, {0.3: SimpleNamespace(x_adv=x2), 0.1: x1}, batch_size=20)
    assert df["budget"].tolist() == [0.0, 0.1, 0.3]
    with torch.no_grad():
        for row, xs in zip(df.itertuples(), (x, x1, x2), strict=True):
            ref = calibration(model(xs), y)
            assert row.ece == pytest.approx(ref.ece, abs=1e-6) and row.accuracy == ref.accuracy
    assert {"ece", "sece", "mce", "nll", "brier", "accuracy", "n"} <= set(df.columns)
    with pytest.raises(RobcurveError, match="shape"):
        calibration_under_attack(model, x, y, {0.1: x1[:10]})
    with pytest.raises(RobcurveError, match="x_adv"):
        calibration_under_attack(model, x, y, {0.1: "nope"})


def test_reliability_diagram(real_logits, tmp_path) -> None:
    logits, labels = real_logits
    res = {"linear": calibration(logits, labels), "linear T=0.2": calibration(logits * 0.2, labels)}
    fig = reliability_diagram(res, title="test")
    assert len(fig.axes) == 4  # two panels, each with its count histogram
    texts = [t.get_text() for a in fig.axes if a.get_legend() for t in a.get_legend().get_texts()]
    assert any(f"ECE {res['linear'].ece:.3f}" in t for t in texts) and any("sECE +" in t for t in texts)
    fig.savefig(tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 5000
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    fig2 = reliability_diagram(res, ax=ax)  # grouped bars on one axes
    assert fig2 is ax.figure and len(ax.patches) == 2 * 15


def test_input_errors() -> None:
    with pytest.raises(RobcurveError, match="probability"):
        calibration(torch.tensor([[0.7, 0.7]]), torch.tensor([0]), probs=True)
    with pytest.raises(RobcurveError, match="labels must lie"):
        calibration(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(RobcurveError, match="shape"):
        calibration(torch.zeros(2, 3), torch.tensor([0]))
    with pytest.raises(RobcurveError, match="n_bins"):
        calibration(torch.zeros(2, 3), torch.tensor([0, 1]), n_bins=0)


def test_reliability_figure_script_random_init(tmp_path, capsys) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "reliability_figure.py"
    spec = importlib.util.spec_from_file_location("reliability_figure", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "rel.png"
    assert mod.main(["--random-init", "--n", "40", "--out", str(out), "--csv", str(tmp_path / "m.csv")]) == 0
    assert out.stat().st_size > 10000
    import pandas as pd

    table = pd.read_csv(tmp_path / "m.csv")
    assert len(table) == 6 and set(table["condition"]) == {"clean", "gaussian_noise:3", "fog:3"}
    assert (table["n"] == 40).all()
    # without weights and without --random-init: a clear error, exit code 2
    assert mod.main(["--models", "vit-fmnist", "--weights", f"vit-fmnist={tmp_path / 'none.safetensors'}",
                     "--n", "10", "--out", str(tmp_path / "x.png")]) == 2
    assert "no weights for vit-fmnist" in capsys.readouterr().err
