"""Measurement ``clean``: the clean predictions (confidence, NLL, Brier, probabilities) and their metrics.

Every run has it (``RunConfig.all_measurements`` adds it): the clean logits are kept in the batch cache for
the attacks (PGD's clean forward) and the boundary-relative window. Metrics: accuracy and calibration
(METHOD.md §6). Its figure, the reliability diagram, is the summary's own (it also draws the corruptions).
"""

from __future__ import annotations

from torch import Tensor

from robcurve.run.measures import Context, Measurement, batched_logits, prob_fields
from robcurve.run.metrics import metric, one

NAME = "clean"


def run_clean(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    logits = batched_logits(ctx.model, x)
    ctx.cache["clean_logits"] = logits.detach()
    return prob_fields(logits, y.cpu())


MEASUREMENT = Measurement(NAME, run_clean, "clean predictions: confidence, NLL, Brier, probabilities", 0, recheck="sample")


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
metric("clean_acc", "clean", "clean accuracy", "fraction", "higher", "share",
       lambda i: one(i.correct), leaderboard=True)
metric("ece", "clean", "expected calibration error, clean (plug-in, K equal-width bins)", "fraction", "lower", "ece",
       lambda i: one(i.conf, i.correct), leaderboard=True)
metric("ece_perfect", "clean", "ECE a perfectly calibrated model with these confidences would show", "fraction",
       "none", "ece_perfect", lambda i: one(i.conf, i.correct))
metric("ece_p_perfect", "clean", "p-value of the ECE against perfect calibration", "p", "none", "ece_p_perfect",
       lambda i: one(i.conf, i.correct))
metric("rmsce_debiased", "clean", "debiased RMS calibration error (Kumar et al. 2019), signed root", "fraction",
       "lower", "rmsce_debiased", lambda i: one(i.conf, i.correct), leaderboard=True)
metric("sece", "clean", "signed ECE, clean (positive = underconfident)", "fraction", "none", "sece",
       lambda i: one(i.conf, i.correct), leaderboard=True)
metric("mce", "clean", "maximum calibration error, clean", "fraction", "lower", "mce",
       lambda i: one(i.conf, i.correct))
metric("nll", "clean", "negative log-likelihood, clean", "nats", "lower", "mean",
       lambda i: one(i.col("clean", "nll")))
metric("brier", "clean", "Brier score (multi-class), clean", "", "lower", "mean",
       lambda i: one(i.col("clean", "brier")))
