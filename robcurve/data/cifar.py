"""CIFAR-10 / CIFAR-100 from the standard python pickle batches.

``data_dir`` may be the batch folder itself (``cifar-10-batches-py`` / ``cifar-100-python``)
or its parent; default ``$ROBCURVE_DATA_DIR/<name>`` (``./data/<name>``). Pickles are the
official format of this dataset; they are only read from a folder the user names.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from robcurve.data.base import DATASETS, DatasetSpec, SampleSet, check_dir, data_root, select
from robcurve.errors import RobcurveError

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


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise RobcurveError(f"file not found: {path}", where=str(path.parent),
                            fix="pass --data-dir with the python-version batches (e.g. cifar-10-batches-py)")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except Exception as e:
        raise RobcurveError(f"cannot read {path}: {type(e).__name__}", where=str(path),
                            fix="the file is corrupted; replace it with the official python-version batch") from None


def load_cifar(name: str, split: str = "test", n: int | None = None, seed: int = 0, data_dir=None, **_) -> SampleSet:
    lay = LAYOUT[name]
    d = check_dir(resolve_dir(name, data_dir), name, f"the python batches {', '.join(lay['train'] + lay['test'])}",
                  "pass --data-dir or set ROBCURVE_DATA_DIR")
    xs, ys = [], []
    for fname in lay[split]:
        b = _unpickle(d / fname)
        if b"data" not in b or lay["label_key"] not in b:
            raise RobcurveError(f"{d / fname} has no {b'data'!r}/{lay['label_key']!r} entries", where=str(d / fname),
                                fix=f"use the official {name} python batches")
        data = np.asarray(b[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise RobcurveError(f"{d / fname} holds data of shape {data.shape}, expected (N, 3072)", where=str(d / fname),
                                fix=f"use the official {name} python batches")
        xs.append(data)
        ys.append(np.asarray(b[lay["label_key"]], dtype=np.int64))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    meta_path = d / lay["meta"]
    classes = [str(i) for i in range(lay["k"])]
    if meta_path.is_file():
        meta = _unpickle(meta_path)
        if lay["names_key"] in meta:
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[lay["names_key"]]]
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
