"""Calibration metrics and reliability diagrams (METHOD.md §5).

Confidence is the maximum softmax probability; the prediction is its arg-max. The
confidences are put into ``n_bins`` equal-width bins over (0, 1] with membership
``lo < conf <= hi`` (bin i = (i/K, (i+1)/K]); a confidence of exactly 0 (impossible for a
softmax, possible for user probabilities) goes into the first bin.

* **ECE** = Σ_i P(i) |acc_i − conf_i|, P(i) the share of samples in bin i.
* **sECE** = Σ_i P(i) (acc_i − conf_i): positive = underconfident, negative = overconfident.
  Because every sample lies in exactly one bin, sECE equals accuracy − mean confidence for
  any binning; it is reported beside ECE because its sign is the point.
* **MCE** = max over non-empty bins of |acc_i − conf_i|.
* **NLL** = mean over samples of −log p_y (natural log; from logits through log-softmax,
  from probabilities through log(max(p_y, 1e-12))).
* **Brier score** (multi-class form) = mean over samples of Σ_k (p_k − onehot_k)²; it lies
  in [0, 2] (the binary form, one class only, would be half of this for K = 2).

Empty bins contribute nothing (their accuracy and confidence are NaN in the bin table).

Bin convention versus torchmetrics: ``MulticlassCalibrationError`` puts a confidence into
bin ``bucketize(conf, edges, right=True) - 1``, i.e. ``lo <= conf < hi`` (a confidence of
exactly 1.0 lands in an extra bin of its own, which still counts). The two conventions
differ only for confidences exactly on a bin edge; for such confidences robcurve follows
METHOD.md (``lo < conf <= hi``). With no confidence on an edge the ECEs are identical.

Bootstrap intervals (``bootstrap=B > 0``): B resamples of the n samples with replacement
drawn from a seeded ``torch.Generator``; percentile 95% intervals (2.5th and 97.5th
percentiles) for ECE, sECE and accuracy. The ECE of a finite sample is biased upward, and so
are its resamples: for a nearly perfectly calibrated model on few samples the ECE interval
can lie above the point estimate. Read it as the spread, not as a bias-corrected interval;
:meth:`CalibrationResult.summary` (and every run summary) reports the debiased estimate and the
perfectly calibrated reference beside it (see :mod:`robcurve.stats`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from robcurve import stats
from robcurve.errors import RobcurveError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["CalibrationResult", "calibration", "calibration_under_attack", "reliability_diagram",
           "bin_index"]

_NLL_FLOOR = 1e-12
_BOOT_CHUNK = 128


@dataclass
class CalibrationResult:
    """Calibration of one set of predictions (see the module docstring for definitions).

    All metrics are plain floats; ``bin_*`` lists have one entry per bin (``n_bins``),
    accuracy/confidence NaN for an empty bin. ``ci`` maps "ece", "sece", "accuracy" to a
    (low, high) bootstrap 95% percentile interval when ``bootstrap > 0``.
    """

    ece: float
    sece: float
    mce: float
    nll: float
    brier: float
    accuracy: float
    mean_confidence: float
    n: int
    n_bins: int
    bin_lo: list[float]
    bin_hi: list[float]
    bin_count: list[int]
    bin_accuracy: list[float]
    bin_confidence: list[float]
    bootstrap: int = 0
    seed: int = 0
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    confidences: np.ndarray | None = field(default=None, repr=False)  # (n,) per-sample max probability
    correct: np.ndarray | None = field(default=None, repr=False)  # (n,) prediction == label

    def to_dataframe(self) -> pd.DataFrame:
        """One row per sample: confidence, correct, bin index (membership lo < conf <= hi)."""
        if self.confidences is None or self.correct is None:
            return pd.DataFrame(columns=["confidence", "correct", "bin"])
        return pd.DataFrame({"confidence": self.confidences, "correct": self.correct,
                             "bin": stats.bin_of(self.confidences, self.n_bins)})

    def summary(self, draws: int = 1000) -> pd.DataFrame:
        """Tidy metrics with honest intervals: plug-in ECE, the perfectly calibrated reference
        (consistency resampling), the debiased RMS calibration error (Kumar et al. 2019, jackknife
        interval), sECE, MCE, NLL, Brier, accuracy; columns metric, value, lo, hi, interval."""
        rows: list[tuple] = [("ece", self.ece, None, None, "none (plug-in, biased upward)")]
        if self.confidences is not None and self.correct is not None and self.n >= 3:
            conf, corr = self.confidences, self.correct.astype(float)
            ref = stats.ece_perfect(conf, corr, self.n_bins, draws, self.seed)
            if ref is not None:
                rows.append(("ece_perfect", ref[0], ref[1], ref[2], stats.CONSISTENCY_METHOD))
                rows.append(("ece_p_perfect", ref[3], None, None, "none"))
            jk = stats.jackknife_ce2(conf, corr, self.n_bins)
            if jk is not None:
                rows.append(("rmsce_debiased", *(stats.signed_root(v) for v in jk), stats.JACKKNIFE_METHOD))
        lo_hi = self.ci.get("sece")
        rows += [("sece", self.sece, *(lo_hi or (None, None)), stats.PERCENTILE_METHOD if lo_hi else "none"),
                 ("mce", self.mce, None, None, "none"), ("nll", self.nll, None, None, "none"),
                 ("brier", self.brier, None, None, "none"), ("accuracy", self.accuracy, None, None, "none")]
        df = pd.DataFrame(rows, columns=["metric", "value", "lo", "hi", "interval"])
        df["n"] = self.n
        return df

    def bins_dataframe(self) -> pd.DataFrame:
        """The per-bin table: lo, hi, count, accuracy, confidence, gap (= accuracy − confidence)."""
        df = pd.DataFrame({"lo": self.bin_lo, "hi": self.bin_hi, "count": self.bin_count,
                           "accuracy": self.bin_accuracy, "confidence": self.bin_confidence})
        df["gap"] = df["accuracy"] - df["confidence"]
        return df

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the metrics, the bin table as lists, the bootstrap intervals."""
        def clean(v: float) -> float | None:
            return None if (isinstance(v, float) and math.isnan(v)) else v

        return {
            "ece": self.ece, "sece": self.sece, "mce": self.mce, "nll": self.nll, "brier": self.brier,
            "brier_form": "multiclass: mean_n sum_k (p_k - onehot_k)^2, range [0, 2]",
            "accuracy": self.accuracy, "mean_confidence": self.mean_confidence, "n": self.n,
            "n_bins": self.n_bins, "bin_membership": "lo < conf <= hi",
            "bins": {"lo": list(self.bin_lo), "hi": list(self.bin_hi), "count": list(self.bin_count),
                     "accuracy": [clean(v) for v in self.bin_accuracy],
                     "confidence": [clean(v) for v in self.bin_confidence]},
            "bootstrap": self.bootstrap, "seed": self.seed,
            "ci": {k: [lo, hi] for k, (lo, hi) in self.ci.items()},
        }

    def metrics(self) -> dict[str, float]:
        """The scalar metrics only (for tables)."""
        return {"ece": self.ece, "sece": self.sece, "mce": self.mce, "nll": self.nll,
                "brier": self.brier, "accuracy": self.accuracy,
                "mean_confidence": self.mean_confidence, "n": self.n}


def _as_tensor(a: Any, name: str) -> Tensor:
    if isinstance(a, Tensor):
        return a.detach().cpu()
    try:
        return torch.as_tensor(np.array(a))  # a copy: read-only arrays (pandas) cannot back a tensor
    except (TypeError, ValueError) as e:
        raise RobcurveError(f"{name} is not array-like: {e}", fix="pass a tensor or numpy array") from None


def bin_index(conf: Tensor, n_bins: int) -> Tensor:
    """Bin of each confidence for ``n_bins`` equal-width bins over (0, 1], ``lo < conf <= hi``."""
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives i with edges[i-1] < conf <= edges[i]
    idx = torch.bucketize(conf.to(torch.float64), edges, right=False) - 1
    return idx.clamp_(0, n_bins - 1)


def _prepare(logits_or_probs: Any, labels: Any, probs: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(probabilities (N, K) float64, log-probabilities (N, K) float64, labels (N,) int64)."""
    z = _as_tensor(logits_or_probs, "logits_or_probs").to(torch.float64)
    y = _as_tensor(labels, "labels")
    if z.ndim != 2:
        raise RobcurveError(f"expected logits or probabilities of shape (N, K), got {tuple(z.shape)}",
                            fix="pass a 2-d array, one row per sample")
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise RobcurveError(f"labels must have shape ({z.shape[0]},), got {tuple(y.shape)}",
                            fix="pass one integer label per row of logits")
    if z.shape[0] == 0:
        raise RobcurveError("no samples given", fix="pass at least one sample")
    if y.is_floating_point():
        if not torch.equal(y, y.round()):
            raise RobcurveError("labels must be integers", fix="pass class indices, not one-hot or soft labels")
    y = y.to(torch.int64)
    k = z.shape[1]
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise RobcurveError(f"labels must lie in [0, {k - 1}], got range [{int(y.min())}, {int(y.max())}]",
                            fix="check that the labels match the model's classes")
    if not torch.isfinite(z).all():
        raise RobcurveError("logits_or_probs contains NaN or inf", fix="check the model output")
    if probs:
        if (z < 0).any() or (z > 1).any() or not torch.allclose(z.sum(1), torch.ones(z.shape[0], dtype=z.dtype), atol=1e-3):
            raise RobcurveError("probs=True but the rows are not probability vectors (entries in [0, 1] summing to 1)",
                                fix="pass probs=False for logits, or normalise the probabilities")
        p = z / z.sum(1, keepdim=True)
        logp = p.clamp_min(_NLL_FLOOR).log()
    else:
        logp = torch.log_softmax(z, dim=1)
        p = logp.exp()
    return p, logp, y


def _binned_stats(conf: Tensor, correct: Tensor, idx: Tensor, n_bins: int) -> tuple[Tensor, Tensor, Tensor]:
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(conf))
    s_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    s_acc = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    return count, s_conf, s_acc


def _bootstrap(conf: Tensor, correct: Tensor, idx: Tensor, n_bins: int, b: int, seed: int) -> dict[str, tuple[float, float]]:
    n = conf.shape[0]
    g = torch.Generator().manual_seed(seed)
    eces, seces, accs = [], [], []
    for start in range(0, b, _BOOT_CHUNK):
        m = min(_BOOT_CHUNK, b - start)
        r = torch.randint(0, n, (m, n), generator=g)
        flat = (idx[r] + n_bins * torch.arange(m).unsqueeze(1)).flatten()
        s_conf = torch.zeros(m * n_bins, dtype=torch.float64).index_add_(0, flat, conf[r].flatten()).view(m, n_bins)
        s_acc = torch.zeros(m * n_bins, dtype=torch.float64).index_add_(0, flat, correct[r].flatten()).view(m, n_bins)
        # P(i)(acc_i - conf_i) = (sum_acc_i - sum_conf_i) / n ; empty bins give 0 - 0
        eces.append((s_acc - s_conf).abs().sum(1) / n)
        seces.append((s_acc - s_conf).sum(1) / n)
        accs.append(s_acc.sum(1) / n)
    out = {}
    for key, vals in (("ece", eces), ("sece", seces), ("accuracy", accs)):
        v = torch.cat(vals).numpy()
        lo, hi = np.percentile(v, [2.5, 97.5])
        out[key] = (float(lo), float(hi))
    return out


def calibration(logits_or_probs: Tensor | np.ndarray, labels: Tensor | np.ndarray, n_bins: int = 15,
                probs: bool = False, bootstrap: int = 0, seed: int = 0) -> CalibrationResult:
    """Calibration metrics of predictions (N, K) against integer labels (N,).

    Args:
        logits_or_probs: logits (default) or, with ``probs=True``, probability rows.
        labels: class indices in [0, K).
        n_bins: number of equal-width confidence bins over (0, 1] (METHOD.md default 15;
            10 for comparison with the author's toolkit).
        probs: the input already holds probabilities.
        bootstrap: number of bootstrap resamples for 95% intervals (0 = none).
        seed: seed of the bootstrap resampling (stored with the result).

    Returns:
        :class:`CalibrationResult`; metrics in [0, 1] units (not percent).
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise RobcurveError(f"n_bins must be a positive integer, got {n_bins!r}", fix="use e.g. n_bins=15")
    if bootstrap < 0:
        raise RobcurveError(f"bootstrap must be >= 0, got {bootstrap}", fix="use 0 (none) or e.g. 1000")
    p, logp, y = _prepare(logits_or_probs, labels, probs)
    n = p.shape[0]
    conf, pred = p.max(dim=1)
    correct = (pred == y).to(torch.float64)
    idx = bin_index(conf, n_bins)
    count, s_conf, s_acc = _binned_stats(conf, correct, idx, n_bins)
    nonempty = count > 0
    acc_bin = torch.where(nonempty, s_acc / count.clamp_min(1), torch.full_like(count, float("nan")))
    conf_bin = torch.where(nonempty, s_conf / count.clamp_min(1), torch.full_like(count, float("nan")))
    gap = (acc_bin - conf_bin)[nonempty]
    weight = (count / n)[nonempty]
    ece = float((weight * gap.abs()).sum())
    sece = float((weight * gap).sum())
    mce = float(gap.abs().max()) if gap.numel() else 0.0
    nll = float(-logp.gather(1, y.unsqueeze(1)).mean())
    onehot = torch.nn.functional.one_hot(y, p.shape[1]).to(torch.float64)
    brier = float(((p - onehot) ** 2).sum(1).mean())
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    ci = _bootstrap(conf, correct, idx, n_bins, bootstrap, seed) if bootstrap > 0 else {}
    return CalibrationResult(
        ece=ece, sece=sece, mce=mce, nll=nll, brier=brier, accuracy=float(correct.mean()),
        mean_confidence=float(conf.mean()), n=n, n_bins=n_bins,
        bin_lo=edges[:-1].tolist(), bin_hi=edges[1:].tolist(), bin_count=[int(c) for c in count.tolist()],
        bin_accuracy=acc_bin.tolist(), bin_confidence=conf_bin.tolist(), bootstrap=bootstrap, seed=seed, ci=ci,
        confidences=conf.numpy().astype(np.float64), correct=correct.numpy().astype(bool))


def _x_adv(v: Any, budget: Any) -> Tensor:
    if isinstance(v, Tensor):
        return v
    if hasattr(v, "x_adv"):
        return v.x_adv
    if isinstance(v, Mapping) and "x_adv" in v:
        return v["x_adv"]
    raise RobcurveError(f"attack result for budget {budget!r} is a {type(v).__name__}, not a tensor or an object with .x_adv",
                        fix="pass {budget: x_adv tensor} or {budget: AttackResult}")


@torch.no_grad()
def _predict(model: torch.nn.Module, x: Tensor, batch_size: int) -> Tensor:
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = x.device
    out = [model(x[s:s + batch_size].to(device)).detach().float().cpu() for s in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def calibration_under_attack(model: torch.nn.Module, x: Tensor, y: Tensor, attack_results: Mapping[Any, Any],
                             n_bins: int = 15, batch_size: int = 256, bootstrap: int = 0,
                             seed: int = 0) -> pd.DataFrame:
    """Calibration metrics per attack budget.

    Args:
        model: maps images in [0, 1] (N, C, H, W) to logits (N, K) (a RobcurveModel or any module).
        x, y: the clean images and their labels.
        attack_results: ``{budget: x_adv}`` where ``x_adv`` is a tensor shaped like ``x`` or an
            object with an ``x_adv`` attribute (an AttackResult) or key. Budget 0 is the clean
            data; it is added from ``x`` unless given.
        n_bins, bootstrap, seed: as in :func:`calibration`.

    Returns:
        DataFrame, one row per budget in increasing order, columns budget, ece, sece, mce,
        nll, brier, accuracy, mean_confidence, n (and ``*_lo``/``*_hi`` with bootstrap).
    """
    x = torch.as_tensor(x)
    items: dict[Any, Tensor] = {}
    if not any(_is_zero(b) for b in attack_results):
        items[0.0] = x
    for b, v in attack_results.items():
        xa = _x_adv(v, b)
        if tuple(xa.shape) != tuple(x.shape):
            raise RobcurveError(f"adversarial images for budget {b!r} have shape {tuple(xa.shape)}, the clean ones {tuple(x.shape)}",
                                fix="pass one adversarial image per clean image, in the same order")
        items[b] = xa
    rows = []
    for b in sorted(items, key=float):
        r = calibration(_predict(model, items[b], batch_size), y, n_bins=n_bins, bootstrap=bootstrap, seed=seed)
        row: dict[str, Any] = {"budget": float(b), **r.metrics()}
        for k, (lo, hi) in r.ci.items():
            row[f"{k}_lo"], row[f"{k}_hi"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def _is_zero(b: Any) -> bool:
    try:
        return float(b) == 0.0
    except (TypeError, ValueError):
        raise RobcurveError(f"attack budget {b!r} is not a number", fix="key attack_results by the numeric budget") from None


def _label(name: str, r: CalibrationResult) -> str:
    return f"{name}: ECE {r.ece:.3f}, sECE {r.sece:+.3f} (acc {r.accuracy:.2f}, n={r.n})"


def reliability_diagram(results: Mapping[str, CalibrationResult] | CalibrationResult, ax: Axes | None = None,
                        title: str | None = None, log_counts: bool = True, ncols: int | None = None) -> Figure:
    """Reliability diagram(s): accuracy per confidence bin against the diagonal, with bin counts.

    Args:
        results: ``{label: CalibrationResult}`` (models and/or conditions), or one result.
        ax: ``None`` (default) draws one panel per result side by side, each with its bin-count
            histogram underneath. Given an axes, all results are drawn there as grouped bars,
            with the share of samples per bin as step lines on a right-hand axis.
        title: figure title.
        log_counts: logarithmic count axis in the panel layout (confidences pile up near 1).
        ncols: panels per row in the panel layout (default: all in one row), e.g. the number
            of conditions when ``results`` holds models × conditions in row-major order.

    Bars are the accuracy of each non-empty bin; the black tick in a bar marks the bin's mean
    confidence (so the gap to the tick is the calibration gap of that bin); a bar above the
    diagonal is underconfident. The legend gives ECE and sECE (positive = underconfident).
    Returns the matplotlib figure (Agg backend; save it with ``fig.savefig``).
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if isinstance(results, CalibrationResult):
        results = {"model": results}
    if not results:
        raise RobcurveError("no calibration results to plot", fix="pass {label: CalibrationResult}")
    names = list(results)
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]

    if ax is not None:
        fig = ax.figure
        share = ax.twinx()
        m = len(names)
        for j, name in enumerate(names):
            r = results[name]
            lo, hi = np.array(r.bin_lo), np.array(r.bin_hi)
            w = (hi - lo) / m
            left = lo + j * w
            acc = np.nan_to_num(np.array(r.bin_accuracy, dtype=float))
            conf = np.array(r.bin_confidence, dtype=float)
            c = colours[j % len(colours)]
            ax.bar(left, acc, width=w, align="edge", color=c, alpha=0.75, edgecolor="white", linewidth=0.5,
                   label=_label(name, r))
            ok = ~np.isnan(conf)
            ax.hlines(conf[ok], left[ok], left[ok] + w[ok], colors="black", linewidth=1.0)
            frac = np.array(r.bin_count, dtype=float) / max(r.n, 1)
            share.step(np.r_[lo, hi[-1]], np.r_[frac, frac[-1]], where="post", color=c, linewidth=1.0, alpha=0.6)
        share.set_ylim(0, 1)
        share.set_ylabel("share of samples per bin (lines)")
        _decorate(ax)
        ax.legend(loc="upper left", fontsize=7)
        if title:
            ax.set_title(title)
        return fig

    n = len(names)
    cols = max(1, min(ncols or n, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 4.8 * rows))
    FigureCanvasAgg(fig)  # no pyplot: no global state, works headless
    outer = fig.add_gridspec(rows, cols, hspace=0.32, wspace=0.25)
    for j, name in enumerate(names):
        r = results[name]
        row, col = divmod(j, cols)
        inner = outer[row, col].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.06)
        a = fig.add_subplot(inner[0])
        h = fig.add_subplot(inner[1], sharex=a)
        lo, hi = np.array(r.bin_lo), np.array(r.bin_hi)
        w = hi - lo
        acc = np.nan_to_num(np.array(r.bin_accuracy, dtype=float))
        conf = np.array(r.bin_confidence, dtype=float)
        c = colours[(row if rows > 1 else j) % len(colours)]  # one colour per row of a grid
        a.bar(lo, acc, width=w, align="edge", color=c, alpha=0.8, edgecolor="white", linewidth=0.5,
              label=f"ECE {r.ece:.3f}\nsECE {r.sece:+.3f}\nacc {r.accuracy:.2f}, n={r.n}")
        ok = ~np.isnan(conf)
        a.hlines(conf[ok], lo[ok], hi[ok], colors="black", linewidth=1.2)
        _decorate(a)
        a.set_title(name, fontsize=9)
        a.legend(loc="upper left", fontsize=7, handlelength=0.8)
        a.set_xlabel("")
        a.tick_params(labelbottom=False)
        if col:
            a.set_ylabel("")
        counts = np.array(r.bin_count, dtype=float)
        h.bar(lo, counts, width=w, align="edge", color="grey", edgecolor="white", linewidth=0.5)
        if log_counts and counts.max() > 0:
            h.set_yscale("log")
            h.set_ylim(0.8, counts.max() * 2)
        h.set_xlim(0, 1)
        h.set_xlabel("confidence", labelpad=1)
        if not col:
            h.set_ylabel("count")
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.08 if cols > 1 else 0.16, right=0.98, bottom=0.09 / rows,
                        top=1 - (0.12 if title else 0.06) / rows)
    return fig


def _decorate(a: Axes) -> None:
    a.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=0.8, alpha=0.7)
    a.set_xlim(0, 1)
    a.set_ylim(0, 1)
    a.set_xlabel("confidence")
    a.set_ylabel("accuracy")
    a.grid(alpha=0.2)


class _CallableModule(__import__("types").ModuleType):
    """``robcurve.calibration`` is both this module and, called, :func:`calibration`.

    Importing the submodule sets the package attribute ``robcurve.calibration`` to the
    module, which would shadow the public function of the same name; making the module
    callable keeps ``robcurve.calibration(logits, labels)`` working either way.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> CalibrationResult:
        return calibration(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableModule
