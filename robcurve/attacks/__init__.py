"""Adversarial attacks (METHOD.md §3): PGD, PGD distance and DeepFool, with torchattacks and
foolbox backends behind one interface.

    from robcurve.attacks import pgd, deepfool, pgd_distance, run_attack
    res = deepfool(model, x, y)                   # AttackResult
    res = run_attack("pgd", model, x, y, eps=0.1, backend="torchattacks", early_stop=False)
    res.robust_accuracy, res.to_dataframe()

Images are (N, C, H, W) in [0, 1]; every budget and distance is in [0, 1] pixel units.
"""

from robcurve.attacks import backends as _backends  # noqa: F401  (registers the peers' adapters)
from robcurve.attacks.base import (
    ATTACKS,
    BACKENDS,
    Attack,
    AttackResult,
    PGDDistanceResult,
    attack_class,
    run_attack,
)
from robcurve.attacks.deepfool import DeepFool, deepfool
from robcurve.attacks.pgd import PGD, PGDDistance, pgd, pgd_distance, robust_accuracy

__all__ = [
    "ATTACKS", "BACKENDS", "Attack", "AttackResult", "PGDDistanceResult", "attack_class", "run_attack",
    "DeepFool", "deepfool", "PGD", "PGDDistance", "pgd", "pgd_distance", "robust_accuracy",
]
