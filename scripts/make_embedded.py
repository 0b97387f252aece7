"""Regenerate robcurve/data/embedded/: a class-balanced subset of the Fashion-MNIST test split.

Run: python scripts/make_embedded.py [--data-dir /usr/share/datasets/fashion-mnist]
100 images per class, chosen with seed 0, kept in the order of the official test split.
"""

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

from robcurve.data.fashion_mnist import DEFAULT_DIR, EMBEDDED, read_split

p = argparse.ArgumentParser()
p.add_argument("--data-dir", default=str(DEFAULT_DIR))
p.add_argument("--per-class", type=int, default=100)
a = p.parse_args()
images, labels = read_split(Path(a.data_dir), "test")
labels_t = torch.from_numpy(labels.astype("int64"))
g = torch.Generator().manual_seed(0)
keep = []
for c in range(10):
    idx = torch.nonzero(labels_t == c).flatten()
    keep.append(idx[torch.randperm(len(idx), generator=g)[: a.per_class]])
keep = torch.cat(keep).sort().values
EMBEDDED.parent.mkdir(parents=True, exist_ok=True)
save_file({"images": torch.from_numpy(images[keep.numpy()].copy()), "labels": torch.from_numpy(labels[keep.numpy()].copy()),
           "indices": keep}, str(EMBEDDED))
print(f"wrote {EMBEDDED} ({len(keep)} images)")
