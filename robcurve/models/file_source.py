"""``file:<path>``: a weights file plus a small JSON sidecar naming its architecture.

Sidecar ``<path without suffix>.json`` (or ``arch=`` given directly)::

    {"arch": "resnet18",            # a timm architecture, or "zoo:<vit|swin|resnet|convnext>"
     "kwargs": {"num_classes": 10, "in_chans": 1},   # timm create_model arguments
     "mean": [0.286], "std": [0.353], "dataset": "fashion-mnist"}

Every field is type-checked; a wrong type or an unknown field gets one error naming it.
``py:<module>:<factory>`` (also here) imports the factory, with the current folder on
``sys.path`` during the import and the call, and calls it with no arguments.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robcurve.errors import ModelError, RobcurveError, one_line
from robcurve.models.common import guess_family, load_into, read_state_dict, sha256_file
from robcurve.models.timm_source import create, infer_kwargs
from robcurve.models.wrapper import ModelInfo, RobcurveModel
from robcurve.registry import import_target

SIDECAR_FIELDS = {"arch": "str", "kwargs": "object", "mean": "list of numbers", "std": "list of numbers",
                  "dataset": "str", "input_size": "list of 3 integers", "name": "str", "description": "str"}


def _numbers(v: Any) -> bool:
    return (isinstance(v, list) and len(v) > 0
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in v))


def check_sidecar(meta: Any, side: Path) -> dict[str, Any]:
    """The sidecar's fields, type-checked; ModelError naming the first bad field."""
    def bad(field: str, got: Any) -> ModelError:
        return ModelError(f"{side}: field {field!r} must be a {SIDECAR_FIELDS[field]}, got {one_line(repr(got), 80)}",
                          where=str(side), fix=f'fix "{field}" in the sidecar (see `robcurve models`, source file)')

    if not isinstance(meta, dict):
        raise ModelError(f"{side} must hold a JSON object, got {type(meta).__name__}", where=str(side),
                         fix='write {"arch": "<timm name>", "kwargs": {...}, "mean": [...], "std": [...]}')
    if "arch" not in meta:
        raise ModelError(f"{side} has no 'arch' field", where=str(side), fix='add "arch": "<timm name>"')
    unknown = sorted(set(meta) - set(SIDECAR_FIELDS))
    if unknown:
        raise ModelError(f"{side} has unknown field(s) {unknown}", where=str(side),
                         fix=f"use only {', '.join(SIDECAR_FIELDS)}")
    for f in ("arch", "dataset", "name", "description"):
        if f in meta and not isinstance(meta[f], str):
            raise bad(f, meta[f])
    if not meta["arch"].strip():
        raise bad("arch", meta["arch"])
    if "kwargs" in meta and not (isinstance(meta["kwargs"], dict)):
        raise bad("kwargs", meta["kwargs"])
    for f in ("mean", "std"):
        if f in meta and meta[f] is not None and not _numbers(meta[f]):
            raise bad(f, meta[f])
    if "input_size" in meta:
        v = meta["input_size"]
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in v)):
            raise bad("input_size", v)
    return meta


def read_sidecar(path: Path) -> dict:
    side = path.with_suffix(".json")
    if not side.is_file():
        raise ModelError(f"no architecture given for {path}", where=str(side),
                         fix=f'write {side} with {{"arch": "<timm name>", "kwargs": {{...}}, "mean": [...], "std": [...]}} or pass --arch')
    try:
        text = side.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{side} is not UTF-8 text", where=str(side), fix="save the sidecar as UTF-8 JSON") from None
    except OSError as e:
        raise ModelError(f"cannot read {side}: {e.strerror or type(e).__name__}", where=str(side),
                         fix="check the file's permissions") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"{side} is not valid JSON: {e}", where=str(side), fix="fix the JSON syntax") from None
    except RecursionError:
        raise ModelError(f"{side} is nested too deeply", where=str(side), fix="write a flat JSON object") from None
    return check_sidecar(meta, side)


def load_file_model(path: str, arch: str | None = None, model_kwargs: dict[str, Any] | None = None, **kw: Any) -> RobcurveModel:
    """A weights file plus its sidecar (or ``arch``) as a RobcurveModel.

    ``model_kwargs`` update the sidecar's ``kwargs`` (timm ``create_model`` arguments).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}", where=str(p.parent), fix="check the path after 'file:'")
    meta = check_sidecar({"arch": arch}, p) if arch else read_sidecar(p)
    kwargs = dict(meta.get("kwargs") or {})
    kwargs.update(model_kwargs or {})
    a = meta["arch"]
    sd = read_state_dict(p)
    if a.startswith("zoo:"):
        # deferred: safetensors, needed only here
        from robcurve.zoo.archs import ARCHS, build

        if kwargs:
            raise ModelError(f"the sidecar of {p} gives kwargs {kwargs} for zoo architecture {a!r}, which takes none",
                             fix='remove "kwargs" (zoo architectures are fixed; use a timm name to change them)')
        if a[4:] not in ARCHS:
            raise ModelError(f"unknown zoo architecture {a!r} in the sidecar of {p}", fix=f"choose one of zoo:{', zoo:'.join(sorted(ARCHS))}")
        net = build(a[4:])
    else:
        import timm

        if not timm.is_model(a):
            raise ModelError(f"unknown timm architecture {a!r} in the sidecar of {p}", fix="use a name from timm.list_models()")
        net = create(a, **kwargs)
        implied = infer_kwargs(net, sd, kwargs)
        if implied:
            kwargs.update(implied)
            net = create(a, **kwargs)
    load_into(net, sd, str(p), f"file:{p} ({a})")
    c = int(kwargs.get("in_chans", 1 if a.startswith("zoo:") else 3))
    mean, std = meta.get("mean"), meta.get("std")
    info = ModelInfo(spec=f"file:{p}", source="file", name=p.stem, arch=a, family=guess_family(net),
                     dataset=meta.get("dataset", ""), num_classes=getattr(net, "num_classes", 0),
                     input_size=tuple(meta.get("input_size", (c, 0, 0))), weights=str(p), weights_sha256=sha256_file(p),
                     extra={"kwargs": kwargs} if kwargs else {})
    return RobcurveModel(net, mean, std, info=info)


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current folder first on ``sys.path`` (where ``py:mymod:make`` finds ``./mymod.py``), then restored."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            try:
                sys.path.remove(cwd)
            except ValueError:
                pass


def _call_factory(factory: Callable[..., Any], target: str) -> Any:
    """``factory()``, with a missing argument or an exception inside it turned into one ModelError."""
    import inspect

    if not callable(factory):
        raise ModelError(f"py:{target} is a {type(factory).__name__}, not a callable", fix="point py: at a function or class")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        required = [p.name for p in sig.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if required:
            raise ModelError(f"py:{target} needs argument(s) {', '.join(required)}, but robcurve calls it with none",
                             fix="give the factory defaults for every argument, or wrap it: def make(): return build(...)")
    try:
        return factory()
    except RobcurveError:
        raise
    except Exception as e:  # the user's code failed
        raise ModelError(f"py:{target} raised {type(e).__name__}: {one_line(e, 240) or 'no message'}",
                         fix="fix the factory (rerun with --debug for its traceback)") from e


def load_py_model(target: str, **kw: Any) -> RobcurveModel:
    """``py:package.module:factory`` — any callable returning an nn.Module ([0, 1] input) or a RobcurveModel.

    The module is looked up on ``sys.path`` with the current folder first, so
    ``py:mymod:make`` finds ``./mymod.py``. The factory is called with no arguments.
    """
    from torch import nn

    with _cwd_on_path():
        factory = import_target(target)
        obj = _call_factory(factory, target)
    if isinstance(obj, RobcurveModel):
        obj.info.spec, obj.info.source = f"py:{target}", "py"
        return obj
    if not isinstance(obj, nn.Module):
        raise ModelError(f"py:{target} returned {type(obj).__name__}, not a torch nn.Module", fix="return the model from the factory")
    info = ModelInfo(spec=f"py:{target}", source="py", name=target.rsplit(":", 1)[-1], arch=type(obj).__name__,
                     family=guess_family(obj))
    return RobcurveModel(obj, None, None, info=info)
