"""ImageNet validation images from a class-folder directory (``<dir>/<wnid>/*.JPEG``).

Classes are the sorted folder names (the standard ImageNet-1k class index order when all
1,000 wnid folders are present). Images are resized (shorter side ``resize``, default 256)
and centre-cropped (``crop``, default 224), RobustBench's ImageNet preprocessing. Only the
selected samples are decoded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from robcurve.data.base import DATASETS, DatasetSpec, SampleSet, check_dir, data_root, select
from robcurve.errors import RobcurveError, one_line

EXTS = {".jpeg", ".jpg", ".png"}


def list_images(d: Path) -> tuple[list[Path], list[int], list[str]]:
    try:
        classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    except OSError as e:
        raise RobcurveError(f"cannot list {d}: {e.strerror or type(e).__name__}", where=str(d),
                            fix="point --data-dir at a readable folder with one folder per class") from None
    if not classes:
        raise RobcurveError(f"{d} has no class folders", where=str(d), fix="point --data-dir at the val folder with one folder per class (wnid)")
    files, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((d / c).iterdir()):
            if f.suffix.lower() in EXTS:
                files.append(f)
                labels.append(k)
    if not files:
        raise RobcurveError(f"{d} has class folders but no images", where=str(d), fix="check the folder holds JPEG/PNG files")
    return files, labels, classes


def load_imagenet(split: str = "test", n: int | None = None, seed: int = 0, data_dir=None, resize: int = 256,
                  crop: int = 224, **_) -> SampleSet:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import functional as TF

    d = check_dir(Path(data_dir) if data_dir else data_root() / "imagenet" / "val", "imagenet",
                  "one folder per class with JPEG images", "pass --data-dir with the ImageNet val folder")
    files, labels, classes = list_images(d)
    idx = select(len(files), n, seed)
    xs = []
    for i in idx.tolist():
        try:
            with Image.open(files[i]) as im:
                im = im.convert("RGB")
                t = TF.center_crop(TF.resize(TF.pil_to_tensor(im), resize, antialias=True), crop)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise RobcurveError(f"cannot decode image {files[i]}: {type(e).__name__}: {one_line(e, 200)}", where=str(files[i]),
                                fix="remove or replace the file") from None
        xs.append(t.float().div_(255.0))
    y = torch.tensor([labels[i] for i in idx.tolist()], dtype=torch.long)
    return SampleSet(torch.stack(xs), y, idx.clone(), classes, "imagenet", "test", str(d), {"resize": resize, "crop": crop})


DATASETS.add("imagenet", DatasetSpec("imagenet", load_imagenet, "ImageNet val, class folders, resize 256 / crop 224",
             1000, (3, 224, 224), lambda: data_root() / "imagenet" / "val",
             lambda d: Path(d).is_dir() and any(p.is_dir() for p in Path(d).iterdir()),
             (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
