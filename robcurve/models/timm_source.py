"""``timm:<arch>`` models with local weights (no hub access at run time).

Weights come from, in order: ``weights=FILE`` (safetensors, or a torch checkpoint read with
``weights_only=True``); the user's local Hugging Face cache, read offline (where timm
users already have them); ``weights="random"`` for timm's random initialisation (tests,
ablations). Otherwise one error names both places.
"""

from __future__ import annotations

import os
from pathlib import Path

from robcurve.errors import RobcurveError
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


def load_timm(name: str, weights: str | None = None, num_classes: int | None = None, in_chans: int | None = None,
              **kwargs) -> RobcurveModel:
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
    net = timm.create_model(name, pretrained=False, **create_kw)
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
        key = _classifier_key(net)
        if key and key in sd and num_classes is None and sd[key].shape[0] != net.num_classes:
            # a fine-tuned checkpoint: rebuild with its number of classes
            create_kw["num_classes"] = int(sd[key].shape[0])
            net = timm.create_model(name, pretrained=False, **create_kw)
        load_into(net, sd, str(path), f"timm:{name}")
        source = str(path)
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    c = create_kw.get("in_chans", 3)
    if len(mean) != c:
        mean, std = (sum(mean) / len(mean),) * c, (sum(std) / len(std),) * c
    size = tuple(cfg.get("input_size", (c, 224, 224)))
    info = ModelInfo(spec=f"timm:{name}", source="timm", name=name, arch=name, family=guess_family(net),
                     num_classes=net.num_classes, input_size=(c, size[1], size[2]), weights=source,
                     weights_sha256=sha256_file(source) if sd is not None else None)
    return RobcurveModel(net, mean, std, info=info)
