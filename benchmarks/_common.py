"""Shared set-up of the benchmarks: the models, the images, the timing and how spread is shown.

Models (``--models``, comma list; ``all`` = every one):

* ``zoo-vit``, ``zoo-resnet``, ``zoo-convnext``, ``zoo-swin``: the shipped zoo models (trained
  on Fashion-MNIST), 28 px grey; images: the embedded Fashion-MNIST test images with their
  true labels.
* ``timm-resnet18``, ``timm-vit-tiny``: untrained timm models at 32 px, 3 channels, built with
  ``timm.create_model(arch, pretrained=False, num_classes=10)`` (ViT-Tiny with
  ``img_size=32, patch_size=4``), seeded; images: the same embedded images resized to 32 px
  (bilinear) and repeated over 3 channels, labelled by the model's own predictions (an
  untrained model is ~10% accurate; so every sample is attacked).

What every comparison holds fixed: the same images and labels for every contender, the same
torch thread count (``--threads``), parameters frozen (``requires_grad_(False)``) for robcurve
and the peer libraries alike, and timings interleaved with a rotating order (A, B, C, then
B, C, A, …) so that load from other processes and the state one run leaves behind hit all of
them alike; each ratio is shown as ``median [min-max]`` over the per-repeat ratios.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ZOO = ("zoo-vit", "zoo-resnet", "zoo-convnext", "zoo-swin")
TIMM = ("timm-resnet18", "timm-vit-tiny")
ALL_MODELS = ZOO + TIMM
FAMILY = {"zoo-vit": "ViT", "zoo-resnet": "ResNet", "zoo-convnext": "ConvNeXt", "zoo-swin": "Swin",
          "timm-resnet18": "ResNet-18", "timm-vit-tiny": "ViT-Tiny/4"}


def parse_models(spec: str) -> list[str]:
    names = list(ALL_MODELS) if spec == "all" else [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in names if m not in ALL_MODELS]
    if bad:
        raise SystemExit(f"unknown model(s) {bad}; choose from {', '.join(ALL_MODELS)} or 'all'")
    return names


def build_model(name: str) -> torch.nn.Module:
    """The model, in eval mode with frozen parameters."""
    import robcurve
    from robcurve.models.wrapper import RobcurveModel

    if name in ZOO:
        model = robcurve.load_model(f"zoo:{name[4:]}-fmnist")
    else:
        import timm

        torch.manual_seed(0)
        if name == "timm-resnet18":
            net = timm.create_model("resnet18", pretrained=False, num_classes=10)
        else:
            net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=4)
        model = RobcurveModel(net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model.eval()
    model.requires_grad_(False)
    return model


def images(name: str, model: torch.nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x, y, description): the same images for every contender."""
    import torch.nn.functional as F

    import robcurve

    ds = robcurve.load_dataset("fashion-mnist-embedded", n=n, seed=0)
    x, y = ds.images.float(), ds.labels.long()
    if name in ZOO:
        return x, y, f"{n} embedded Fashion-MNIST test images, 28 px, true labels"
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y, f"{n} embedded images resized to 32 px x 3 channels, labels = the model's predictions"


def setup_threads(threads: int) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def header(what: str, threads: int) -> None:
    print(f"# {what}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) (--threads {threads}), "
          f"{os.cpu_count()} cores, load average at start {loadavg()}")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def interleaved(contenders: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run every contender once per repeat, in turn; return the times (s) and the last results.

    The order rotates by one contender per repeat (A B C, B C A, C A B, ...), so no contender
    always runs right after the same other one (allocator and cache state carry over).
    """
    times: dict[str, list[float]] = {k: [] for k in contenders}
    last: dict[str, Any] = {}
    names = list(contenders)
    for r in range(repeats):
        for i in range(len(names)):
            k = names[(r + i) % len(names)]
            t, last[k] = timed(contenders[k])
            times[k].append(t)
    return times, last


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Per-repeat ratios num[i] / den[i] (e.g. peer time / our time = our speed-up)."""
    return [a / b for a, b in zip(num, den, strict=True)]


def spread(v: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median [min-max]`` of the values."""
    if not v:
        return "n/a"
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(statistics.median(v))} [{fmt.format(min(v))}-{fmt.format(max(v))}]"


def table(rows: list[list[Any]], headers: list[str]) -> str:
    try:
        from tabulate import tabulate

        return tabulate(rows, headers=headers, tablefmt="github")
    except ImportError:  # pragma: no cover
        return "\n".join(" | ".join(str(c) for c in r) for r in [headers, *rows])
