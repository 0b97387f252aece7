"""CIFAR-10 / CIFAR-100 from the standard python pickle batches.

``data_dir`` may be the batch folder itself (``cifar-10-batches-py`` / ``cifar-100-python``)
or its parent; default ``$ROBCURVE_DATA_DIR/<name>`` (``./data/<name>``). Only the files of
the requested split (and the optional meta file) are read.

Pickles are the official format of this dataset, and ``pickle.load`` would run any code a
crafted file asks for. The batches are therefore read with a restricted unpickler
(:mod:`robcurve.data.safe_pickle`) that builds only builtin containers, bytes/str and
numeric numpy arrays, and refuses anything else before it is imported or called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robcurve.data.base import DATASETS, DatasetSpec, SampleSet, check_dir, data_root, select
from robcurve.data.safe_pickle import load_data_pickle
from robcurve.errors import DataError

OFFICIAL = "https://www.cs.toronto.edu/~kriz/cifar.html"

LAYOUT = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "label_key": b"labels", "names_key": b"label_names", "k": 10},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "meta": "meta",
                 "label_key": b"fine_labels", "names_key": b"fine_label_names", "k": 100},
}
MEANS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
         "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


def resolve_dir(name: str, data_dir) -> Path:
    lay = LAYOUT[name]
    d = Path(data_dir) if data_dir else data_root() / name
    if (d / lay["folder"]).is_dir():
        d = d / lay["folder"]
    return d


def _unpickle(path: Path, name: str, split: str) -> dict:
    """One batch (or meta) file as a dict, read with the restricted unpickler."""
    lay = LAYOUT[name]
    if not path.is_file():
        raise DataError(f"{name} {split} file {path.name} not found in {path.parent}", where=str(path.parent),
                        fix=f"pass --data-dir with the python-version batches ({lay['folder']}, holding "
                            f"{', '.join(lay[split])}) or set ROBCURVE_DATA_DIR")
    obj = load_data_pickle(path, kind=f"{name} batch file", fix=f"download the python version from {OFFICIAL}")
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a {name} batch (a dict)", where=str(path),
                        fix=f"use the official {name} python batches ({OFFICIAL})")
    return obj


def _labels(b: dict, key: bytes, path: Path, n: int, k: int, name: str) -> np.ndarray:
    """The labels of one batch as int64, checked against the number of images and classes."""
    raw: Any = b[key]
    try:
        y = np.asarray(raw)
    except Exception:  # ragged or odd content
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or y.dtype.kind not in "iu" or y.shape[0] != n:
        raise DataError(f"{path} holds labels of shape {y.shape} and type {y.dtype}, expected {n} integers (one per image)",
                        where=str(path), fix=f"use the official {name} python batches")
    y = y.astype(np.int64)
    if n and (int(y.min()) < 0 or int(y.max()) >= k):
        raise DataError(f"{path} holds labels {int(y.min())}..{int(y.max())}, outside the {k} classes 0..{k - 1}",
                        where=str(path), fix=f"use the official {name} python batches")
    return y


def _images(b: dict, path: Path, name: str) -> np.ndarray:
    """The images of one batch as (N, 3072) uint8 (channel-major 32x32 RGB rows)."""
    raw: Any = b[b"data"]
    arr = raw if isinstance(raw, np.ndarray) else None
    if arr is None:
        try:
            arr = np.asarray(raw)
        except Exception:
            arr = np.asarray([], dtype=object)
    if arr.ndim != 2 or arr.shape[1] != 3072:
        raise DataError(f"{path} holds data of shape {arr.shape}, expected (N, 3072)", where=str(path),
                        fix=f"use the official {name} python batches")
    if arr.dtype != np.uint8:
        if arr.dtype.kind not in "iu" or (arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255)):
            raise DataError(f"{path} holds data of type {arr.dtype}, expected bytes 0..255 (uint8)", where=str(path),
                            fix=f"use the official {name} python batches")
        arr = arr.astype(np.uint8)
    return arr


def load_cifar(name: str, split: str = "test", n: int | None = None, seed: int = 0, data_dir=None, **_) -> SampleSet:
    """``n`` seeded images of a CIFAR split as (N, 3, 32, 32) float32 in [0, 1], labels int64."""
    lay = LAYOUT[name]
    d = check_dir(resolve_dir(name, data_dir), name, f"the python batches {', '.join(lay[split])}",
                  "pass --data-dir or set ROBCURVE_DATA_DIR")
    xs, ys = [], []
    for fname in lay[split]:
        b = _unpickle(d / fname, name, split)
        if b"data" not in b or lay["label_key"] not in b:
            raise DataError(f"{d / fname} has no {b'data'!r}/{lay['label_key']!r} entries", where=str(d / fname),
                            fix=f"use the official {name} python batches")
        data = _images(b, d / fname, name)
        xs.append(data)
        ys.append(_labels(b, lay["label_key"], d / fname, data.shape[0], lay["k"], name))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    meta_path = d / lay["meta"]
    classes = [str(i) for i in range(lay["k"])]
    if meta_path.is_file():
        meta = _unpickle(meta_path, name, split)
        names = meta.get(lay["names_key"])
        if isinstance(names, (list, tuple)) and len(names) == lay["k"] and all(isinstance(c, (bytes, str)) for c in names):
            classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in names]
    idx = select(len(y_all), n, seed)
    x = torch.from_numpy(x_all[idx.numpy()]).view(-1, 3, 32, 32).float().div_(255.0)
    y = torch.from_numpy(y_all[idx.numpy()])
    return SampleSet(x, y, idx.clone(), classes, name, split, str(d))


def _found(name: str):
    return lambda d: all((resolve_dir(name, d) / f).is_file() for f in LAYOUT[name]["test"])


for _name in LAYOUT:
    DATASETS.add(_name, DatasetSpec(
        _name, lambda _n=_name, **kw: load_cifar(_n, **kw),
        f"{_name.upper()}: 32x32 colour, {LAYOUT[_name]['k']} classes (python pickle batches)",
        LAYOUT[_name]["k"], (3, 32, 32), lambda _n=_name: data_root() / _n, _found(_name), *MEANS[_name]))
