"""Architectures of the robcurve zoo: timm models sized for 28x28 grey images, 10 classes.

Each zoo architecture is a small dict of timm constructor arguments plus robcurve's edits,
so a model card can state exactly what was built. ``build(arch)`` returns the raw network
(normalisation is added by the RobcurveModel wrapper).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from robcurve.errors import RobcurveError

ARCHS: dict[str, dict[str, Any]] = {
    "vit": {
        "family": "transformer",
        "timm_class": "timm.models.vision_transformer:VisionTransformer",
        "kwargs": dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=6,
                       num_heads=4, mlp_ratio=2.0, class_token=True, global_pool="token"),
    },
    "swin": {
        "family": "transformer",
        "timm_class": "timm.models.swin_transformer:SwinTransformer",
        "kwargs": dict(img_size=28, patch_size=2, in_chans=1, num_classes=10, embed_dim=48, depths=(2, 2),
                       num_heads=(3, 6), window_size=7, mlp_ratio=2.0, drop_path_rate=0.0),
    },
    "resnet": {
        "family": "cnn",
        "timm_class": "timm.models.resnet:ResNet",
        "kwargs": dict(layers=(2, 2, 2, 2), channels=(16, 32, 64, 128), stem_width=16, in_chans=1, num_classes=10),
        # the 7x7 stride-2 stem conv runs at stride 1 on 28 px input (max-pool kept): stages see 14, 7, 4, 2 px
        "edits": {"conv1.stride": (1, 1)},
    },
    "convnext": {
        "family": "cnn",
        "timm_class": "timm.models.convnext:ConvNeXt",
        "kwargs": dict(in_chans=1, num_classes=10, depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), patch_size=1),
    },
}


def build(arch: str) -> nn.Module:
    """Build the raw network of a zoo architecture with timm's default initialisation."""
    from robcurve.registry import import_target

    if arch not in ARCHS:
        raise RobcurveError(f"unknown zoo architecture {arch!r}", fix=f"choose one of {sorted(ARCHS)}")
    spec = ARCHS[arch]
    cls = import_target(spec["timm_class"])
    kwargs = dict(spec["kwargs"])
    if cls.__name__ == "ResNet":
        from timm.models.resnet import BasicBlock

        kwargs["block"] = BasicBlock
    net = cls(**kwargs)
    for path, value in spec.get("edits", {}).items():
        *parents, attr = path.split(".")
        mod = net
        for p in parents:
            mod = getattr(mod, p)
        setattr(mod, attr, value)
    return net


def describe(arch: str) -> dict[str, Any]:
    spec = ARCHS[arch]
    return {"timm_class": spec["timm_class"], "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in spec["kwargs"].items()},
            "edits": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.get("edits", {}).items()}, "family": spec["family"]}
