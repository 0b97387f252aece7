"""Measurement ``pgd`` (an ``--attack``): PGD robust accuracy and calibration on the PGD examples at the budget.

PGD with the run's settings, backend and batch seed (:func:`robcurve.run.measures.run_pgd`, cached per
batch and budget, so ``adv_calibration`` reuses it at the same budget).
"""

from __future__ import annotations

from torch import Tensor

from robcurve.run.measures import (
    Context,
    Measurement,
    attack_rows,
    batched_logits,
    prob_fields,
    run_pgd,
)
from robcurve.run.metrics import Inputs, metric

NAME = "pgd"


def run_pgd_measurement(ctx: Context, start: int, x: Tensor, y: Tensor, split_idx: Tensor) -> list[dict]:
    res = run_pgd(ctx, start, x, y, ctx.cfg.pgd_eps())
    rows = attack_rows(res, y)
    for r, q in zip(rows, prob_fields(batched_logits(ctx.model, res.x_adv), y.cpu()), strict=True):
        r.update({"adv_" + k: v for k, v in q.items()})
    return rows


MEASUREMENT = Measurement(NAME, run_pgd_measurement, "PGD robust accuracy and calibration on the PGD examples at the "
                          "budget", 30, "pgd", attack=True)


# -- metrics (METHOD.md §6) ------------------------------------------------------------------------
def _budget(i: Inputs) -> str:
    p = i.cfg.pgd
    return f"{p.norm} eps={i.cfg.pgd_eps():g} PGD-{p.steps} {p.loss} {i.cfg.attack_backend}"


metric("pgd_robust_acc", "pgd", "PGD robust accuracy at the budget", "fraction", "higher", "share",
       lambda i: {_budget(i): (i.col("pgd", "clean_correct", bool) & ~i.col("pgd", "success", bool),)},
       condition="attack budget", leaderboard=True)
metric("pgd_adv_ece", "pgd", "ECE on PGD examples", "fraction", "lower", "ece",
       lambda i: {_budget(i): (i.col("pgd", "adv_conf"), i.col("pgd", "adv_correct", bool).astype(float))},
       condition="attack budget")
metric("pgd_adv_sece", "pgd", "signed ECE on PGD examples", "fraction", "none", "sece",
       lambda i: {_budget(i): (i.col("pgd", "adv_conf"), i.col("pgd", "adv_correct", bool).astype(float))},
       condition="attack budget")
