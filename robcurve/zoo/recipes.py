"""Training recipes of the shipped zoo (all on the full Fashion-MNIST training split)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from robcurve.errors import RobcurveError


@dataclass(frozen=True)
class Recipe:
    name: str
    arch: str
    epochs: int
    lr: float = 2e-3
    weight_decay: float = 0.05
    batch_size: int = 128
    warmup_epochs: float = 1.0
    seed: int = 0
    crop_pad: int = 2  # random-crop padding of the augmentation (0: flips only)
    # adversarial training: None, or FGSM with random start (Wong, Rice, Kolter 2020)
    adv_eps: float | None = None
    adv_step: float | None = None
    # which epochs are kept as the shipped training series (0 = initialisation)
    series: tuple[int, ...] = ()
    train_data: str = "fashion-mnist"
    label_smoothing: float = 0.0
    population: bool = False  # one of the population models (issue 25), not the headline zoo
    max_steps: int | None = None  # stop after this many optimiser steps (tests)
    ckpt_every: int = 100  # steps between resumable checkpoints
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["series"] = list(self.series)
        return d


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("vit-fmnist", "vit", epochs=15, series=(0, 1, 2, 3, 5, 8, 11, 15),
           description="ViT (patch 4, width 64, depth 6, 4 heads, class token); `vit_small` on Fashion-MNIST"),
    Recipe("swin-fmnist", "swin", epochs=10, crop_pad=0,
           description="Swin (patch 2, window 7, width 48, depths 2-2); `swin` on Fashion-MNIST"),
    Recipe("resnet-fmnist", "resnet", epochs=6, series=(0, 1, 2, 3, 4, 5, 6),
           description="ResNet (BasicBlock 2-2-2-2, width 16-128, stride-1 stem); `resnet18` on Fashion-MNIST"),
    Recipe("convnext-fmnist", "convnext", epochs=12, crop_pad=0,
           description="ConvNeXt (depths 1-1-2-1, width 16-128, patch 1); `convnext` on Fashion-MNIST"),
    Recipe("vit-fmnist-at", "vit", epochs=8, adv_eps=0.1, adv_step=0.1,
           description="ViT as vit-fmnist, FGSM-RS adversarial training at L-inf 0.1"),
    Recipe("resnet-fmnist-at", "resnet", epochs=5, adv_eps=0.1, adv_step=0.1,
           description="ResNet as resnet-fmnist, FGSM-RS adversarial training at L-inf 0.1"),
]}

# The population (issue 25): 3 seeds of each main architecture and of an MLP-Mixer, plus the
# knobs that plausibly move curvature, distance and calibration: adversarial training at two
# budgets, label smoothing, shorter and longer schedules, width: 24 models. Sized so all of it
# trains in about 1.5 hours on one CPU thread (measured per-epoch costs in docs/population.md).
_POP_EPOCHS = {"vit-p": 12, "swin-p": 8, "resnet-p": 4, "convnext-p": 6, "mixer-p": 6}
_POP_NAMES = {"vit-p": "ViT", "swin-p": "Swin", "resnet-p": "ResNet", "convnext-p": "ConvNeXt", "mixer-p": "MLP-Mixer"}


def _pop(name: str, arch: str, base: str | None = None, **kw: Any) -> Recipe:
    base = base or arch
    kw.setdefault("epochs", _POP_EPOCHS[base])
    # flips only (no crops): with crops the small ViT ended at 85.6% after 10 epochs, the ConvNeXt at
    # 82.8% after 4; the short schedules need the faster convergence
    kw.setdefault("crop_pad", 0)
    return Recipe(f"pop-{name}", arch, population=True, series=(), **kw)


POPULATION: list[Recipe] = [
    *[_pop(f"{a.removesuffix('-p')}-s{s}", a, seed=s, description=f"population {_POP_NAMES[a]}, seed {s}")
      for s in (0, 1, 2) for a in _POP_EPOCHS],
    # adversarial training at two budgets on the ResNet (a ViT with AT costs ~6x: left for a later session)
    *[_pop(f"{a.removesuffix('-p')}-at{tag}", a, adv_eps=e, adv_step=e * 1.25,
           description=f"population {_POP_NAMES[a]}, FGSM-RS adversarial training at L-inf {e}")
      for a, tag, e in (("resnet-p", "02", 0.02), ("resnet-p", "05", 0.05))],
    *[_pop(f"{a.removesuffix('-p')}-ls", a, label_smoothing=0.1,
           description=f"population {_POP_NAMES[a]}, label smoothing 0.1") for a in ("vit-p", "resnet-p", "mixer-p")],
    _pop("vit-short", "vit-p", epochs=6, description="population ViT, short schedule (6 epochs)"),
    _pop("resnet-short", "resnet-p", epochs=2, description="population ResNet, short schedule (2 epochs)"),
    _pop("resnet-long", "resnet-p", epochs=10, description="population ResNet, long schedule (10 epochs)"),
    _pop("resnet-wide", "resnet-p-wide", base="resnet-p", description="population ResNet, widths 32-256 (2x)"),
]

# training order: the seeds first, then the cheap ResNet knobs, the ViT knobs last (a ViT epoch costs ~3x)
_ORDER = ["resnet", "mixer", "vit-short", "vit-ls"]
POPULATION.sort(key=lambda r: (0 if r.name.endswith(("-s0", "-s1", "-s2")) else
                               1 + next(i for i, p in enumerate(_ORDER) if r.name.startswith(f"pop-{p}"))))
RECIPES.update({r.name: r for r in POPULATION})
RECIPES.update({r.name: r for r in [
    # a tiny recipe for tests: trains on the embedded subset for a few steps
    Recipe("tiny-test", "vit", epochs=2, batch_size=50, train_data="fashion-mnist-embedded", max_steps=12,
           ckpt_every=3, series=(0, 1), description="test recipe"),
]})


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        import difflib

        close = difflib.get_close_matches(name, list(RECIPES), n=3)
        raise RobcurveError(f"unknown zoo recipe {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                            fix=f"choose one of {sorted(RECIPES)}")
    return RECIPES[name]
