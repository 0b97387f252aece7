"""``file:<path>``: a weights file plus a small JSON sidecar naming its architecture.

Sidecar ``<path without suffix>.json`` (or ``arch=`` given directly)::

    {"arch": "resnet18",            # a timm architecture, or "zoo:<vit|swin|resnet|convnext>"
     "kwargs": {"num_classes": 10, "in_chans": 1},   # timm create_model arguments
     "mean": [0.286], "std": [0.353], "dataset": "fashion-mnist"}
"""

from __future__ import annotations

import json
from pathlib import Path

from robcurve.errors import RobcurveError
from robcurve.models.common import guess_family, load_into, read_state_dict, sha256_file
from robcurve.models.wrapper import ModelInfo, RobcurveModel


def read_sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise RobcurveError(f"no architecture given for {path}", where=str(side),
                            fix=f'write {side} with {{"arch": "<timm name>", "kwargs": {{...}}, "mean": [...], "std": [...]}} or pass --arch')
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise RobcurveError(f"{side} is not valid JSON: {e}", where=str(side), fix="fix the JSON syntax") from None
    if not isinstance(meta, dict) or "arch" not in meta:
        raise RobcurveError(f"{side} has no 'arch' field", where=str(side), fix='add "arch": "<timm name>"')
    return meta


def load_file_model(path: str, arch: str | None = None, **kw) -> RobcurveModel:
    p = Path(path)
    if not p.is_file():
        raise RobcurveError(f"weights file not found: {p}", where=str(p.parent), fix="check the path after 'file:'")
    meta = {"arch": arch} if arch else read_sidecar(p)
    kwargs = dict(meta.get("kwargs", {}))
    a = meta["arch"]
    if a.startswith("zoo:"):
        from robcurve.zoo.archs import build

        net = build(a[4:])
    else:
        import timm

        if not timm.is_model(a):
            raise RobcurveError(f"unknown timm architecture {a!r} in the sidecar of {p}", fix="use a name from timm.list_models()")
        net = timm.create_model(a, pretrained=False, **kwargs)
    load_into(net, read_state_dict(p), str(p), f"file:{p} ({a})")
    c = kwargs.get("in_chans", 1 if a.startswith("zoo:") else 3)
    mean, std = meta.get("mean"), meta.get("std")
    info = ModelInfo(spec=f"file:{p}", source="file", name=p.stem, arch=a, family=guess_family(net),
                     dataset=meta.get("dataset", ""), num_classes=getattr(net, "num_classes", 0),
                     input_size=tuple(meta.get("input_size", (c, 0, 0))), weights=str(p), weights_sha256=sha256_file(p))
    return RobcurveModel(net, mean, std, info=info)


def load_py_model(target: str, **kw) -> RobcurveModel:
    """``py:package.module:factory`` — any callable returning an nn.Module ([0, 1] input) or a RobcurveModel."""
    from torch import nn

    from robcurve.registry import import_target

    factory = import_target(target)
    obj = factory()
    if isinstance(obj, RobcurveModel):
        obj.info.spec, obj.info.source = f"py:{target}", "py"
        return obj
    if not isinstance(obj, nn.Module):
        raise RobcurveError(f"py:{target} returned {type(obj).__name__}, not a torch nn.Module", fix="return the model from the factory")
    info = ModelInfo(spec=f"py:{target}", source="py", name=target.rsplit(":", 1)[-1], arch=type(obj).__name__,
                     family=guess_family(obj))
    return RobcurveModel(obj, None, None, info=info)
