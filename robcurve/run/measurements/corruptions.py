"""Measurement ``corruptions``: calibration under each corruption and severity of ``calibration``.

Corruptions are seeded per sample (its index in the split), so a row depends on its sample only.
Metrics: accuracy, ECE and signed ECE per corruption:severity and their mean (CIFAR-10-C convention).
"""

from __future__ import annotations

from torch import Tensor

from robcurve.data.corruptions import corrupt
from robcurve.run.measures import Context, Measurement, batched_logits, prob_fields
from robcurve.run.metrics import calibration_metrics

NAME = "corruptions"


def run_corruptions(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    c = ctx.cfg.calibration
    rows: list[dict] = [{} for _ in range(len(y))]
    for name in c.corruptions:
        for sev in c.severities:
            xc = corrupt(x.cpu(), name, sev, seed=ctx.cfg.seed, sample_seeds=split_idx.cpu()).to(x.device)
            for r, q in zip(rows, prob_fields(batched_logits(ctx.model, xc), y.cpu()), strict=True):
                r[f"{name}:{sev}"] = q
    return rows


MEASUREMENT = Measurement(NAME, run_corruptions, "calibration under each corruption and severity", 70, "calibration",
                          recheck="sample")

calibration_metrics("corruption", NAME, "under corruption", "corruption:severity", lambda c: c)
