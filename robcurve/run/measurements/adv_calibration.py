"""Measurement ``adv_calibration``: calibration on PGD examples at each budget of ``pgd.budgets``."""

from __future__ import annotations

from torch import Tensor

from robcurve.run.measures import Context, Measurement, batched_logits, prob_fields, run_pgd
from robcurve.run.metrics import calibration_metrics

NAME = "adv_calibration"


def run_adv_calibration(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    rows: list[dict] = [{} for _ in range(len(y))]
    for b in ctx.cfg.pgd.budgets:
        res = run_pgd(ctx, start, x, y, b)
        for r, q in zip(rows, prob_fields(batched_logits(ctx.model, res.x_adv), y.cpu()), strict=True):
            r[f"{b:g}"] = q
    return rows


MEASUREMENT = Measurement(NAME, run_adv_calibration, "calibration on PGD examples at each budget of pgd.budgets", 80,
                          "pgd")

calibration_metrics("adv", NAME, "on PGD examples at each budget (pgd.budgets)", "attack budget", lambda c: f"eps={c}")
