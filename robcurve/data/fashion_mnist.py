"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017; MIT licence) from its IDX gz files.

``fashion-mnist`` reads the four official files (by default from the Debian package
``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist). ``fashion-mnist-embedded``
reads the class-balanced 1,000-image subset of the official test split that ships inside
robcurve (robcurve/data/embedded/), so the main job runs with no data installed. Sample
indices always refer to the official split, so the two agree image for image.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from robcurve.data.base import DATASETS, DatasetSpec, SampleSet, check_dir, select
from robcurve.errors import RobcurveError

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED = Path(__file__).parent / "embedded" / "fashion-mnist-test-1000.safetensors"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Mean and std of the training split's pixels in [0, 1].
MEAN, STD = (0.2860,), (0.3530,)


def read_idx(path: Path, expect_dims: int) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a uint8 array."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise RobcurveError(f"file not found: {path}", where=str(path.parent),
                            fix="install the Debian package dataset-fashion-mnist or pass --data-dir with the four IDX gz files") from None
    except IsADirectoryError:
        raise RobcurveError(f"{path} is a folder, not an IDX file", where=str(path.parent),
                            fix="pass --data-dir with the four IDX gz files") from None
    except PermissionError:
        raise RobcurveError(f"cannot read {path}: permission denied", where=str(path), fix="check the file's permissions") from None
    except (OSError, EOFError, zlib.error) as e:
        raise RobcurveError(f"cannot read {path}: {e or type(e).__name__}", where=str(path),
                            fix="the file is corrupted; replace it with the official IDX gz file") from None
    if len(raw) < 4 + 4 * expect_dims:
        raise RobcurveError(f"{path} is too short to be an IDX file", where=str(path), fix="replace it with the official file")
    zero, dtype_code, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or ndim != expect_dims:
        raise RobcurveError(
            f"{path} is not an IDX uint8 file with {expect_dims} dimensions (header {raw[:4].hex()})",
            where=str(path), fix="replace it with the official Fashion-MNIST file")
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise RobcurveError(f"{path} holds {data.size} bytes of data but its header says {dims}",
                            where=str(path), fix="the file is truncated; replace it with the official file")
    return data.reshape(dims)


def read_split(data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_name, lbl_name = FILES[split]
    images = read_idx(data_dir / img_name, 3)
    labels = read_idx(data_dir / lbl_name, 1)
    if images.shape[0] != labels.shape[0]:
        raise RobcurveError(f"{img_name} has {images.shape[0]} images but {lbl_name} has {labels.shape[0]} labels",
                            where=str(data_dir), fix="use matching official files")
    return images, labels


def _to_set(images: np.ndarray, labels: np.ndarray, idx: torch.Tensor, split_idx: torch.Tensor, name: str,
            split: str, source: str) -> SampleSet:
    x = torch.from_numpy(np.ascontiguousarray(images[idx.numpy()])).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(labels[idx.numpy()].astype(np.int64))
    return SampleSet(x, y, split_idx[idx], list(CLASSES), name, split, source)


def load_fashion_mnist(split: str = "test", n: int | None = None, seed: int = 0, data_dir=None, **_) -> SampleSet:
    d = check_dir(Path(data_dir) if data_dir else DEFAULT_DIR, "fashion-mnist", "the four IDX gz files",
                  "install the Debian package dataset-fashion-mnist, pass --data-dir, or use the dataset fashion-mnist-embedded")
    images, labels = read_split(d, split)
    idx = select(len(labels), n, seed)
    return _to_set(images, labels, idx, torch.arange(len(labels)), "fashion-mnist", split, str(d))


def load_embedded(split: str = "test", n: int | None = None, seed: int = 0, data_dir=None, **_) -> SampleSet:
    if split != "test":
        raise RobcurveError("the embedded Fashion-MNIST subset holds test images only", fix="use --split test or the full dataset fashion-mnist")
    t = load_file(str(EMBEDDED))
    images, labels, split_idx = t["images"].numpy(), t["labels"].numpy(), t["indices"]
    idx = select(len(labels), n, seed)
    return _to_set(images, labels, idx, split_idx, "fashion-mnist-embedded", "test", "embedded")


def _found(d: Path) -> bool:
    return all((d / f).exists() for pair in FILES.values() for f in pair)


DATASETS.add("fashion-mnist", DatasetSpec("fashion-mnist", load_fashion_mnist,
             "Fashion-MNIST, 28x28 grey, 10 classes, 60k/10k (IDX gz files)", 10, (1, 28, 28),
             lambda: DEFAULT_DIR, _found, MEAN, STD))
DATASETS.add("fashion-mnist-embedded", DatasetSpec("fashion-mnist-embedded", load_embedded,
             "1,000 class-balanced Fashion-MNIST test images shipped with robcurve", 10, (1, 28, 28),
             lambda: EMBEDDED.parent, lambda d: EMBEDDED.exists(), MEAN, STD))
