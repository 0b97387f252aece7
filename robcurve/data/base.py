"""Dataset plugins: every reader returns a :class:`SampleSet` of images in [0, 1].

Sample selection is seeded and reproducible: ``n`` samples are the first ``n`` of a random
permutation of the split drawn with ``seed``, so a larger ``n`` with the same seed extends a
smaller one. The indices into the official split are kept with the samples.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from robcurve.errors import RobcurveError
from robcurve.registry import Registry


@dataclass
class SampleSet:
    """Images (N, C, H, W) float32 in [0, 1], labels (N,) int64 and their split indices."""

    images: Tensor
    labels: Tensor
    indices: Tensor
    classes: list[str]
    name: str
    split: str = "test"
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: Tensor | slice) -> SampleSet:
        return SampleSet(self.images[idx], self.labels[idx], self.indices[idx], self.classes,
                         self.name, self.split, self.source, dict(self.meta))

    def batches(self, batch_size: int):
        """Yield (start, images, labels) in order."""
        for s in range(0, len(self), batch_size):
            yield s, self.images[s : s + batch_size], self.labels[s : s + batch_size]


@dataclass
class DatasetSpec:
    name: str
    loader: Callable[..., SampleSet]
    description: str
    num_classes: int
    input_size: tuple[int, int, int]
    default_dir: Callable[[], Path]
    files_found: Callable[[Path], bool]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def data_root() -> Path:
    """Where datasets live unless a path is given: $ROBCURVE_DATA_DIR, else ./data."""
    return Path(os.environ.get("ROBCURVE_DATA_DIR", "data"))


def select(n_total: int, n: int | None, seed: int) -> Tensor:
    """Indices of a seeded selection of n out of n_total (all, in order, when n is None)."""
    if n is None:
        return torch.arange(n_total)
    if n <= 0:
        raise RobcurveError(f"n must be positive, got {n}", fix="use --n 1 or more")
    if n > n_total:
        raise RobcurveError(f"asked for n={n} samples but the split has only {n_total}", fix=f"use --n {n_total} or less")
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def load_dataset(name: str, *, split: str = "test", n: int | None = None, seed: int = 0,
                 data_dir: str | os.PathLike | None = None, **kwargs) -> SampleSet:
    """Load ``n`` seeded samples of a registered dataset as tensors in [0, 1].

    ``name`` may also be a corrupted view ``<dataset>-c:<corruption>:<severity>``.
    """
    if "-c:" in name:
        from robcurve.data.corruptions import load_corrupted

        return load_corrupted(name, split=split, n=n, seed=seed, data_dir=data_dir, **kwargs)
    spec = DATASETS.get(name)
    if split not in ("train", "test"):
        raise RobcurveError(f"unknown split {split!r}", fix="use 'train' or 'test'")
    return spec.loader(split=split, n=n, seed=seed, data_dir=data_dir, **kwargs)


def check_dir(path: Path, dataset: str, expected: str, fix: str) -> Path:
    if not path.exists():
        raise RobcurveError(f"{dataset} data not found: {path} does not exist", where=str(path),
                            fix=f"{fix}; it should hold {expected}")
    return path
