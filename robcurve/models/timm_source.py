"""``timm:<arch>`` models with local weights (no hub access at run time).

Weights come from, in order: ``weights=FILE`` (safetensors, or a torch checkpoint read with
``weights_only=True``); the user's local Hugging Face cache, read offline (where timm
users already have them); ``weights="random"`` for timm's random initialisation (tests,
ablations). Otherwise one error names both places.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robcurve.errors import ModelError, RobcurveError, one_line
from robcurve.models.common import guess_family, load_into, read_state_dict, sha256_file
from robcurve.models.wrapper import ModelInfo, RobcurveModel


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"


def cached_hf_weights(hub_id: str) -> Path | None:
    """Path of ``model.safetensors`` (or ``pytorch_model.bin``) for hub_id in the local HF cache."""
    folder = hf_cache_dir() / ("models--" + hub_id.replace("/", "--")) / "snapshots"
    if not folder.is_dir():
        return None
    for snap in sorted(folder.iterdir()):
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (snap / fname).is_file():
                return snap / fname
    return None


def _classifier_key(net) -> str | None:
    head = net.get_classifier()
    for name, mod in net.named_modules():
        if mod is head and name:
            return name + ".weight"
    return None


def _stem_key(net: nn.Module) -> tuple[str, int] | None:
    """(state-dict key of the first Conv2d's weight, its in_channels): the layer that sees the image."""
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Conv2d) and name:
            return name + ".weight", mod.in_channels
    return None


def create(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)``; a bad argument becomes one ModelError."""
    import timm

    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError, AttributeError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise ModelError(f"timm cannot build {name!r} with {shown}: {type(e).__name__}: {one_line(e, 200) or 'no message'}",
                         fix="check the model arguments (--model-kwargs / the sidecar's kwargs) against the timm model's signature") from None


def infer_kwargs(net: nn.Module, sd: dict[str, torch.Tensor], given: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments the checkpoint implies but ``given`` does not set: num_classes, in_chans.

    ``num_classes`` is the row count of the classifier weight; ``in_chans`` the input-channel
    count of the first convolution's weight (the patch embedding of a ViT, the stem of a CNN).
    """
    out: dict[str, Any] = {}
    if "num_classes" not in given and hasattr(net, "get_classifier"):
        key = _classifier_key(net)
        if key and key in sd and sd[key].dim() >= 1 and sd[key].shape[0] != getattr(net, "num_classes", None):
            out["num_classes"] = int(sd[key].shape[0])
    stem = _stem_key(net)
    if "in_chans" not in given and stem:
        key, c = stem
        if key in sd and sd[key].dim() == 4 and sd[key].shape[1] != c:
            out["in_chans"] = int(sd[key].shape[1])
    return out


def load_timm(name: str, weights: str | None = None, num_classes: int | None = None, in_chans: int | None = None,
              **kwargs: Any) -> RobcurveModel:
    """A timm architecture with local weights, in the RobcurveModel contract.

    ``num_classes``/``in_chans`` and any other ``kwargs`` go to ``timm.create_model``; when
    not given, ``num_classes`` and ``in_chans`` are read from the checkpoint (classifier rows,
    first convolution's input channels), so a 1-channel or 10-class fine-tune loads as is.
    """
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise RobcurveError(f"unknown timm architecture {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
                            fix="see timm.list_models() for the names")
    create_kw = dict(kwargs)
    if in_chans:
        create_kw["in_chans"] = in_chans
    if num_classes:
        create_kw["num_classes"] = num_classes
    net = create(name, **create_kw)
    cfg = net.pretrained_cfg or {}
    source = None
    if weights == "random":
        sd = None
        source = "random"
    else:
        path = Path(weights) if weights else None
        if path is None:
            hub_id = cfg.get("hf_hub_id")
            path = cached_hf_weights(hub_id) if hub_id else None
            if path is None:
                where = hf_cache_dir() / ("models--" + (hub_id or name).replace("/", "--"))
                raise RobcurveError(f"no weights for timm:{name}", where=str(where),
                                    fix=f"pass --weights FILE (safetensors or .pth), put the Hugging Face checkpoint in {where}, "
                                        "or use --weights random for a random initialisation")
        sd = read_state_dict(path)
        implied = infer_kwargs(net, sd, create_kw)
        if implied:  # a fine-tuned checkpoint (other classes or input channels): rebuild to fit it
            create_kw.update(implied)
            net = create(name, **create_kw)
        load_into(net, sd, str(path), f"timm:{name}" + (f" with {create_kw}" if create_kw else ""))
        source = str(path)
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    c = int(create_kw.get("in_chans", 3))
    if len(mean) != c:
        mean, std = (sum(mean) / len(mean),) * c, (sum(std) / len(std),) * c
    size = tuple(cfg.get("input_size", (c, 224, 224)))
    info = ModelInfo(spec=f"timm:{name}", source="timm", name=name, arch=name, family=guess_family(net),
                     num_classes=net.num_classes, input_size=(c, size[1], size[2]), weights=source,
                     weights_sha256=sha256_file(source) if sd is not None else None,
                     extra={"kwargs": create_kw} if create_kw else {})
    return RobcurveModel(net, mean, std, info=info)


def timm_source(name: str, weights: str | None = None, model_kwargs: dict[str, Any] | None = None, **_: Any
                ) -> RobcurveModel:
    """The ``timm:`` model source as :func:`robcurve.load_model` calls every source: ``model_kwargs`` go to
    ``timm.create_model``."""
    return load_timm(name, weights=weights, **(model_kwargs or {}))
