"""The robcurve zoo: small models trained here on Fashion-MNIST, shipped with the package.

Layout (the index is the folder): ``cards/<name>.json`` (+ ``.md``) describe each model;
``weights/<name>.safetensors`` are the final weights; ``weights/<name>/epoch_XXX.safetensors``
the training series (epoch 0 = initialisation). ``zoo:<name>`` loads the final weights,
``zoo:<name>@<epoch>`` a checkpoint of the series.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

from robcurve.data.fashion_mnist import MEAN, STD  # noqa: F401  (the zoo's input normalisation)
from robcurve.errors import RobcurveError
from robcurve.models.common import load_into, sha256_file
from robcurve.models.wrapper import ModelInfo, RobcurveModel
from robcurve.zoo.archs import build

ZOO_DIR = Path(__file__).parent
CARDS = ZOO_DIR / "cards"
WEIGHTS = ZOO_DIR / "weights"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in CARDS.glob("*.json"))


def card(name: str) -> dict:
    if "/" in name or "\\" in name or name.startswith("."):
        raise RobcurveError(f"invalid zoo model name {name!r}", fix="use a plain name such as vit-fmnist")
    path = CARDS / f"{name}.json"
    if not path.is_file():
        import difflib

        close = difflib.get_close_matches(name, zoo_names(), n=3)
        raise RobcurveError(f"unknown zoo model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
                            fix=f"choose one of: {', '.join(zoo_names()) or '(none shipped yet)'}; `robcurve zoo list` shows them")
    return json.loads(path.read_text())


def weight_file(c: dict, epoch: int | None) -> tuple[Path, str]:
    if epoch is None:
        return ZOO_DIR / c["weights"]["file"], c["weights"]["sha256"]
    for item in c.get("series", []):
        if item["epoch"] == epoch:
            return ZOO_DIR / item["file"], item["sha256"]
    epochs = [i["epoch"] for i in c.get("series", [])]
    if not epochs:
        with_series = [n for n in zoo_names() if card(n).get("series")]
        raise RobcurveError(f"zoo model {c['name']!r} has no training series: only its final weights are shipped",
                            fix=f"use zoo:{c['name']} without @{epoch}; models with a series: "
                                + (", ".join(f"{n} (@{card(n)['series'][0]['epoch']}..@{card(n)['series'][-1]['epoch']})"
                                             for n in with_series) or "none"))
    raise RobcurveError(f"zoo model {c['name']!r} has no checkpoint of epoch {epoch}",
                        fix=f"choose one of epochs {', '.join(str(e) for e in epochs)} (zoo:{c['name']}@<epoch>)")


def zoo_source(name: str, **_: Any):
    """The ``zoo:`` model source as :func:`robcurve.load_model` calls every source: ``name`` or ``name@epoch``."""
    base, _, ep = name.partition("@")
    if ep and not ep.isdigit():
        raise RobcurveError(f"bad epoch {ep!r} in 'zoo:{name}'", fix="write zoo:<name>@<epoch number>")
    return load_zoo(base, epoch=int(ep) if ep else None)


def load_zoo(name: str, epoch: int | None = None, verify: bool = True, **_):
    """Load zoo model ``name`` (optionally a series checkpoint) as a RobcurveModel in eval mode."""
    from safetensors.torch import load_file

    c = card(name)
    path, sha = weight_file(c, epoch)
    if not path.is_file():
        raise RobcurveError(f"zoo model {name!r} has no weights file", where=str(path),
                            fix=f"train it with `robcurve zoo train {c.get('recipe', {}).get('name', name)}` or reinstall robcurve")
    digest = sha256_file(path)
    if verify and digest != sha:
        raise RobcurveError(f"the weights of zoo model {name!r} do not match their card (sha256 {digest[:12]} != {sha[:12]})",
                            where=str(path), fix="reinstall robcurve or run `robcurve zoo verify`")
    net = build(c["arch"])
    load_into(net, load_file(str(path)), str(path), f"zoo:{name}")
    spec = f"zoo:{name}" + (f"@{epoch}" if epoch is not None else "")
    info = ModelInfo(spec=spec, source="zoo", name=name, arch=c["arch"], family=c["family"], dataset="fashion-mnist",
                     num_classes=10, input_size=(1, 28, 28), weights=str(path), weights_sha256=digest,
                     extra={"epoch": epoch, "test_acc": c.get("test_acc"), "adversarial_training": c.get("adversarial_training")})
    return RobcurveModel(net, MEAN, STD, info=info)


def verify_all() -> list[tuple[str, bool, str]]:
    """(file, ok, message) for every file named by every card."""
    out = []
    for name in zoo_names():
        c = card(name)
        entries = [(c["weights"]["file"], c["weights"]["sha256"])] + [(i["file"], i["sha256"]) for i in c.get("series", [])]
        for rel, sha in entries:
            p = ZOO_DIR / rel
            if not p.is_file():
                out.append((rel, False, "missing"))
            else:
                d = sha256_file(p)
                out.append((rel, d == sha, "ok" if d == sha else f"sha256 {d[:12]} != card {sha[:12]}"))
    return out


class _ZooPackage(types.ModuleType):
    """The package keeps its function ``card`` when the submodule ``robcurve.zoo.card`` is imported.

    Importing a submodule sets it as an attribute of its package, which would replace the
    function ``card`` with the module (so ``load_zoo`` failed after ``zoo train`` had run in
    the same process). ``from robcurve.zoo.card import finalize`` still finds the submodule
    in ``sys.modules``.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name == "card" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _ZooPackage
