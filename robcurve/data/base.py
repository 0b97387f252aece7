"""Dataset plugins: every reader returns a :class:`SampleSet` of images in [0, 1].

Sample selection is seeded and reproducible: ``n`` samples are the first ``n`` of a random
permutation of the split drawn with ``seed``, so a larger ``n`` with the same seed extends a
smaller one. The indices into the official split are kept with the samples.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from robcurve.errors import DataError, InputError, RobcurveError
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
#: Derived views of a registered dataset by name marker (``"-c:"``: a corrupted view), each a loader
#: ``(name, split=, n=, seed=, data_dir=, **kw) -> SampleSet``; robcurve.data.corruptions adds "-c:" on import
#: (the package imports it), so this module does not import it (no import circle).
VIEWS: dict[str, Callable[..., SampleSet]] = {}


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

    ``name`` may also be a corrupted view ``<dataset>-c:<corruption>:<severity>``. The result
    is checked (:func:`check_sampleset`): images (N, C, H, W) finite in [0, 1], one integer
    label per image inside the dataset's classes.
    """
    if not isinstance(name, str) or not name:
        raise InputError(f"dataset name must be a non-empty string, got {name!r}", fix="e.g. fashion-mnist-embedded")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int)):
        raise InputError(f"n must be a whole number of samples, got {n!r}", fix="pass n=100, or n=None for the whole split")
    for marker, view in VIEWS.items():
        if marker in name:
            return check_sampleset(view(name, split=split, n=n, seed=seed, data_dir=data_dir, **kwargs))
    spec = DATASETS.get(name)
    if split not in ("train", "test"):
        raise RobcurveError(f"unknown split {split!r}", fix="use 'train' or 'test'")
    return check_sampleset(spec.loader(split=split, n=n, seed=seed, data_dir=data_dir, **kwargs))


def check_sampleset(s: SampleSet) -> SampleSet:
    """Refuse a SampleSet a measurement would silently mis-measure; return it unchanged.

    Checks: images (N, C, H, W) floating point, finite, in [0, 1]; labels (N,) integers in
    0..len(classes)-1 (when classes are named); indices (N,).
    """
    x, y = s.images, s.labels
    where = s.source or s.name
    if x.dim() != 4 or not x.is_floating_point():
        raise DataError(f"dataset {s.name!r} gave images of shape {tuple(x.shape)} and type {x.dtype}, "
                        "expected (N, C, H, W) floating point", where=where, fix="check the dataset files (or the reader plugin)")
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.dtype in (torch.bool,) or y.is_floating_point():
        raise DataError(f"dataset {s.name!r} gave labels of shape {tuple(y.shape)} and type {y.dtype} for {x.shape[0]} images, "
                        "expected one integer per image", where=where, fix="check the dataset files (or the reader plugin)")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi > 1:
            raise DataError(f"dataset {s.name!r} gave pixel values in [{lo:g}, {hi:g}], expected finite values in [0, 1]",
                            where=where, fix="images must be scaled to [0, 1] (divide bytes by 255)")
    k = len(s.classes)
    if y.numel() and k:
        ymin, ymax = int(y.min()), int(y.max())
        if ymin < 0 or ymax >= k:
            raise DataError(f"dataset {s.name!r} has labels {ymin}..{ymax}, outside its {k} classes 0..{k - 1}",
                            where=where, fix="check the label file: it does not belong to this dataset")
    if s.labels.dtype != torch.int64:
        s.labels = s.labels.long()
    return s


def check_dir(path: Path, dataset: str, expected: str, fix: str) -> Path:
    """``path`` if it is an existing folder; DataError naming what it should hold otherwise."""
    if not path.exists():
        raise DataError(f"{dataset} data not found: {path} does not exist", where=str(path),
                        fix=f"{fix}; it should hold {expected}")
    if not path.is_dir():
        raise DataError(f"{dataset} data folder {path} is a file, not a folder", where=str(path),
                        fix=f"{fix}; pass the folder that holds {expected}")
    return path
