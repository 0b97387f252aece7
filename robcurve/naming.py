"""Small shared rules that several layers need (no heavy imports): the dataset family and the grid step."""

from __future__ import annotations


def dataset_family(dataset: str) -> str:
    """The family a dataset belongs to: corrupted views (``<dataset>-c:...``) and the embedded subset share
    their base's (``fashion-mnist-embedded-c:fog:3`` -> ``fashion-mnist``). Alias tables, default budgets and
    leaderboard folders are per family."""
    base = dataset.split("-c:")[0]
    if base.startswith("fashion-mnist"):
        return "fashion-mnist"
    return base


def grid_step(T: int, E: float) -> float:
    """The step of T equally spaced points over [-E, E] (METHOD.md §2): 2E / (T - 1)."""
    return 2 * E / (T - 1)
