"""Small shared rules that several layers need (no heavy imports): the threat models and dataset families of
the boards, the dataset family of a dataset and the grid step."""

from __future__ import annotations

from enum import StrEnum


class ThreatModel(StrEnum):
    """Threat models of a leaderboard (RobustBench's names); a member equals its string."""

    LINF = "Linf"
    L2 = "L2"
    CORRUPTIONS = "corruptions"
    CORRUPTIONS_3D = "corruptions_3d"


class DatasetFamily(StrEnum):
    """Dataset families of a leaderboard (a board's folder; :func:`dataset_family` maps a dataset to one)."""

    CIFAR10 = "cifar10"
    CIFAR100 = "cifar100"
    IMAGENET = "imagenet"
    FASHION_MNIST = "fashion-mnist"


class Norm(StrEnum):
    """Perturbation norms of the attacks and directions."""

    LINF = "Linf"
    L2 = "L2"


#: spellings a user may write for a norm (lower case) -> the norm
NORM_SPELLINGS = {"linf": Norm.LINF, "l_inf": Norm.LINF, "inf": Norm.LINF, "l∞": Norm.LINF, "l2": Norm.L2, "2": Norm.L2}


def parse_norm(value: object) -> Norm | None:
    """The norm a spelling names ("Linf", "linf", "inf", "L2", "2", ...), or None."""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    return NORM_SPELLINGS.get(str(value).strip().lower().replace("∞", "inf"))


def base_dataset(dataset: str) -> str:
    """The dataset a corrupted view is made from: ``<dataset>-c:<corruption>:<severity>`` -> ``<dataset>``."""
    return dataset.split("-c:")[0]


def dataset_family(dataset: str) -> str:
    """The family a dataset belongs to: corrupted views (``<dataset>-c:...``) and the embedded subset share
    their base's (``fashion-mnist-embedded-c:fog:3`` -> ``fashion-mnist``). Alias tables, default budgets and
    leaderboard folders are per family."""
    base = base_dataset(dataset)
    if base.startswith("fashion-mnist"):
        return "fashion-mnist"
    return base


def grid_step(T: int, E: float) -> float:
    """The step of T equally spaced points over [-E, E] (METHOD.md §2): 2E / (T - 1)."""
    return 2 * E / (T - 1)
