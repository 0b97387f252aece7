"""``robustbench:<name>`` models, loaded offline from a model dir in RobustBench's layout.

The checkpoint must sit where RobustBench itself looks: ``<model_dir>/<dataset>/<threat>/<name>.pt``
(default model dir ``./models``, RobustBench's default, or $ROBCURVE_MODEL_DIR). The
architecture comes from RobustBench's model zoo; the weights are read by robcurve with
``torch.load(weights_only=True)`` (never downloaded).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from robcurve.errors import RobcurveError
from robcurve.models.common import guess_family, load_into, read_state_dict, sha256_file
from robcurve.models.wrapper import ModelInfo, RobcurveModel
from robcurve.naming import DatasetFamily, ThreatModel

#: RobustBench's datasets and the threat models robcurve loads from it (its 3D corruptions are not served)
DATASETS = tuple(d.value for d in DatasetFamily if d != DatasetFamily.FASHION_MNIST)
THREATS = tuple(t.value for t in ThreatModel if t != ThreatModel.CORRUPTIONS_3D)


def import_robustbench():
    """Import robustbench once, serving its ``autoattack`` import with ``pyautoattack``.

    robustbench 1.1.1 imports the module ``autoattack`` (AutoAttack's GitHub package, not on
    PyPI); PyPI ships the same code as the package ``pyautoattack``. Aliasing the module and
    its ``state`` submodule in ``sys.modules`` before the import is the whole fix; it is done
    here and nowhere else.
    """
    if "autoattack" not in sys.modules:
        try:
            import pyautoattack
            import pyautoattack.state
        except ImportError:
            raise RobcurveError("robustbench needs the package pyautoattack", fix="pip install pyautoattack==0.2.0") from None
        sys.modules["autoattack"] = pyautoattack
        sys.modules["autoattack.state"] = pyautoattack.state
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import robustbench  # noqa: F401
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
        from robustbench.model_zoo.models import model_dicts
    return model_dicts, BenchmarkDataset, ThreatModel


def default_model_dir() -> Path:
    return Path(os.environ.get("ROBCURVE_MODEL_DIR", "models"))


def checkpoint_path(name: str, dataset: str, threat_model: str, model_dir: str | Path | None = None) -> Path:
    return Path(model_dir or default_model_dir()) / dataset / threat_model / f"{name}.pt"


def load_robustbench(name: str, dataset: str = "cifar10", threat_model: str = "Linf",
                     model_dir: str | Path | None = None, **_) -> RobcurveModel:
    if dataset not in DATASETS:
        raise RobcurveError(f"robustbench has no dataset {dataset!r}", fix=f"use --dataset one of {', '.join(DATASETS)}")
    if threat_model not in THREATS:
        raise RobcurveError(f"robustbench has no threat model {threat_model!r}", fix=f"use --threat-model one of {', '.join(THREATS)}")
    model_dicts, BenchmarkDataset, ThreatModel = import_robustbench()
    zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    if name not in zoo:
        import difflib

        elsewhere = [t.value for t, z in model_dicts[BenchmarkDataset(dataset)].items() if name in z]
        if elsewhere:
            raise RobcurveError(f"RobustBench has robustbench:{name} for {dataset} only under threat model(s) "
                                f"{', '.join(elsewhere)}, not {threat_model}",
                                fix=f"use --threat-model {elsewhere[0]}, or a {dataset}/{threat_model} model "
                                    "(https://robustbench.github.io lists them)")
        close = difflib.get_close_matches(name, list(zoo), n=3)
        raise RobcurveError(f"RobustBench has no model {name!r} for {dataset}/{threat_model}"
                            + (f"; did you mean {', '.join(close)}?" if close else "")
                            + " (the installed robustbench may predate it)",
                            fix="see https://robustbench.github.io for the model names")
    path = checkpoint_path(name, dataset, threat_model, model_dir)
    if not path.is_file():
        raise RobcurveError(f"no checkpoint for robustbench:{name}", where=str(path),
                            fix=f"put the RobustBench checkpoint at {path} (RobustBench's own layout "
                                "<model_dir>/<dataset>/<threat>/<name>.pt) or pass --model-dir")
    if isinstance(zoo[name].get("gdrive_id"), list):
        raise RobcurveError(f"robustbench:{name} is an ensemble of several checkpoints, which robcurve does not load yet",
                            fix="choose a single-checkpoint model")
    try:
        net = zoo[name]["model"]()
    except Exception as e:  # e.g. a constructor that wants to download
        raise RobcurveError(f"cannot build the architecture of robustbench:{name} offline: {e}",
                            fix="choose another model or load it with py:module:factory") from None
    sd = read_state_dict(path)
    # RobustBench checkpoints of some entries carry a 'model.' prefix too
    if sd and not any(k in net.state_dict() for k in sd) and all(k.startswith("model.") for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items()}
    load_into(net, sd, str(path), f"robustbench:{name}")
    c = 3
    size = 224 if dataset == "imagenet" else 32
    info = ModelInfo(spec=f"robustbench:{name}", source="robustbench", name=name, arch=type(net).__name__,
                     family=guess_family(net), dataset=dataset, num_classes={"cifar10": 10, "cifar100": 100}.get(dataset, 1000),
                     input_size=(c, size, size), weights=str(path), weights_sha256=sha256_file(path),
                     extra={"threat_model": threat_model})
    # RobustBench models take [0, 1] input and normalise inside themselves where needed
    return RobcurveModel(net, None, None, info=info)
