"""robcurve: the measurements of *Curved Representation Space of Vision Transformers*
(Kim, Park, Kim, Lee, AAAI 2024, arXiv:2210.05742) as an adversarial-robustness benchmark.

Public API (imported lazily on first use)::

    from robcurve import load_model, load_dataset, trajectory, curvature, travel_distance
    from robcurve import jump_out, layer_profile, deepfool, pgd, pgd_distance, calibration, bench

Images are (N, C, H, W) in [0, 1]; every ε and distance is in [0, 1] pixel units; angles in
degrees.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "load_model": "robcurve.models:load_model",
    "RobcurveModel": "robcurve.models.wrapper:RobcurveModel",
    "ModelInfo": "robcurve.models.wrapper:ModelInfo",
    "load_dataset": "robcurve.data:load_dataset",
    "SampleSet": "robcurve.data.base:SampleSet",
    "get_direction": "robcurve.geometry:get_direction",
    "trajectory": "robcurve.geometry:trajectory",
    "curvature": "robcurve.geometry:curvature",
    "local_turning_angle": "robcurve.geometry:local_turning_angle",
    "travel_distance": "robcurve.geometry:travel_distance",
    "jump_out": "robcurve.geometry:jump_out",
    "layer_profile": "robcurve.geometry:layer_profile",
    "pgd": "robcurve.attacks:pgd",
    "pgd_distance": "robcurve.attacks:pgd_distance",
    "deepfool": "robcurve.attacks:deepfool",
    "run_attack": "robcurve.attacks:run_attack",
    "calibration_under_attack": "robcurve.calibration:calibration_under_attack",
    "reliability_diagram": "robcurve.calibration:reliability_diagram",
    "corrupt": "robcurve.data.corruptions:corrupt",
    "load_config": "robcurve.run.config:load_config",
    "RunConfig": "robcurve.run.config:RunConfig",
    "bench": "robcurve.run.runner:run",
    "load_run": "robcurve.run.results:load_run",
    "RunResults": "robcurve.run.results:RunResults",
    "summarize": "robcurve.run.summary:summarize",
    "METRICS": "robcurve.run.metrics:METRICS",
    "MEASUREMENTS": "robcurve.run.measures:MEASUREMENTS",
    "RobcurveError": "robcurve.errors:RobcurveError",
}

__all__ = [*_API, "calibration", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "calibration":  # the module is callable: robcurve.calibration(logits, labels)
        import importlib

        return importlib.import_module("robcurve.calibration")
    if name in _API:
        import importlib

        mod, _, attr = _API[name].partition(":")
        obj = getattr(importlib.import_module(mod), attr)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'robcurve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
