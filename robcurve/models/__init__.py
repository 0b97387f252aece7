"""Model plugins behind one registry: ``source:name`` specs and per-dataset aliases.

Sources: ``timm:<arch>``, ``robustbench:<name>``, ``zoo:<name>[@epoch]``, ``file:<path>``,
``py:<module>:<factory>``. A spec without a source is an alias, resolved per dataset through
:data:`ALIASES` (``robcurve models`` prints the table).
"""

from __future__ import annotations

import sys
from typing import Any

import torch

from robcurve.errors import RobcurveError, one_line
from robcurve.models.wrapper import ModelInfo, RobcurveModel, as_robmodel, check_norm_stats
from robcurve.naming import dataset_family  # noqa: F401  (re-exported: robcurve.models.dataset_family)
from robcurve.registry import Registry

SOURCES: Registry = Registry("model source")
#: Every source is called the same way: ``loader(name, weights=, dataset=, threat_model=, model_dir=, arch=,
#: model_kwargs=)`` (keywords a source does not use land in its ``**kw``); ``model_kwargs=True`` marks the
#: sources that take constructor arguments.
SOURCES.add("timm", "robcurve.models.timm_source:timm_source", help="timm architecture; --weights FILE or the local HF cache",
            model_kwargs=True)
SOURCES.add("robustbench", "robcurve.models.robustbench_source:load_robustbench",
            help="RobustBench model; checkpoint at <model_dir>/<dataset>/<threat>/<name>.pt")
SOURCES.add("zoo", "robcurve.zoo:zoo_source", help="robcurve's own Fashion-MNIST zoo (shipped); name@epoch for the training series")
SOURCES.add("file", "robcurve.models.file_source:load_file_model", help="weights file + JSON sidecar naming the timm architecture",
            model_kwargs=True)
SOURCES.add("py", "robcurve.models.file_source:load_py_model", help="module:factory returning an nn.Module ([0, 1] input)")

# alias -> spec, per dataset
ALIASES: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "vit_small": "zoo:vit-fmnist", "vit": "zoo:vit-fmnist", "swin": "zoo:swin-fmnist",
        "resnet18": "zoo:resnet-fmnist", "resnet": "zoo:resnet-fmnist", "convnext": "zoo:convnext-fmnist",
        "vit_small_at": "zoo:vit-fmnist-at", "resnet18_at": "zoo:resnet-fmnist-at",
    },
    "cifar10": {  # RobustBench's L-inf leaderboard; other threat models: THREAT_ALIASES
        "standard": "robustbench:Standard", "resnet18": "robustbench:Addepalli2022Efficient_RN18",
        "vit_small": "robustbench:Debenedetti2022Light_XCiT-S12",
    },
    "imagenet": {
        "vit_small": "timm:vit_small_patch16_224", "vit_base": "timm:vit_base_patch16_224",
        "swin_tiny": "timm:swin_tiny_patch4_window7_224", "resnet18": "timm:resnet18", "resnet50": "timm:resnet50",
    },
}


# (dataset, threat model) -> alias -> spec, or None where RobustBench has no such model for
# that threat model; overrides ALIASES (whose CIFAR-10 entries are L-inf models).
THREAT_ALIASES: dict[tuple[str, str], dict[str, str | None]] = {
    ("cifar10", "L2"): {"resnet18": "robustbench:Sehwag2021Proxy_R18", "vit_small": None},
    ("cifar10", "corruptions"): {"resnet18": "robustbench:Modas2021PRIMEResNet18", "vit_small": None},
}


def resolve_spec(spec: str, dataset: str = "fashion-mnist", threat_model: str = "Linf") -> str:
    """Turn an alias into a ``source:name`` spec for ``dataset`` and ``threat_model``; pass full specs through."""
    if not isinstance(spec, str) or not spec.strip():
        raise RobcurveError(f"model spec must be a non-empty string, got {spec!r}", fix="e.g. vit_small or zoo:vit-fmnist")
    if ":" in spec:
        return spec
    fam = dataset_family(dataset)
    over = THREAT_ALIASES.get((fam, threat_model), {})
    if spec in over:
        if over[spec] is None:
            have = {a: t for a, t in over.items() if t} | {a: t for a, t in ALIASES.get(fam, {}).items() if a not in over}
            raise RobcurveError(f"alias {spec!r} has no model for {fam} under threat model {threat_model} "
                                f"(RobustBench lists none of that architecture there)",
                                fix=f"use one of {', '.join(sorted(have))} or a spec robustbench:<name> of the {fam}/{threat_model} leaderboard")
        return over[spec]  # type: ignore[return-value]
    table = ALIASES.get(fam, {})
    if spec in table:
        return table[spec]
    import difflib

    known = sorted(table)
    close = difflib.get_close_matches(spec, known, n=3)
    raise RobcurveError(f"unknown model {spec!r} for dataset {dataset!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
                        fix=f"use an alias ({', '.join(known) or 'none for this dataset'}) or a spec source:name "
                            f"with source one of {', '.join(SOURCES.names())}; `robcurve models` lists them")


def load_model(spec: str, *, dataset: str = "fashion-mnist", threat_model: str = "Linf", weights: str | None = None,
               model_dir: str | None = None, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
               verbose: bool = False, model_kwargs: dict[str, Any] | None = None, mean: Any = None, std: Any = None,
               **kwargs) -> RobcurveModel:
    """Load a model in the RobcurveModel contract ([0, 1] input, normalisation inside, eval mode).

    Args:
        spec: ``source:name`` or an alias resolved for ``dataset`` and ``threat_model``.
        weights: weights file for ``timm:`` (or ``"random"``).
        model_dir: RobustBench model dir for ``robustbench:``.
        model_kwargs: constructor arguments for ``timm:`` and ``file:`` models (timm
            ``create_model`` kwargs such as ``in_chans``); refused for the other sources.
        mean, std: input normalisation per channel, overriding what the source gives (timm's
            pretrained cfg, a ``file:`` sidecar, the zoo card); the one used and where it came
            from are in ``model.info.extra["normalisation"]``.
    """
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise RobcurveError(f"model_kwargs must be a mapping, got {type(model_kwargs).__name__}", fix='e.g. {"in_chans": 1}')
    arch = kwargs.pop("arch", None)  # file: models may name their architecture instead of a sidecar
    model_kwargs = {**(model_kwargs or {}), **kwargs}
    full = resolve_spec(spec, dataset, threat_model)
    if verbose and full != spec:
        print(f"model {spec!r} resolved to {full!r} for dataset {dataset!r}", file=sys.stderr)
    source, _, name = full.partition(":")
    if source not in SOURCES:
        raise RobcurveError(SOURCES.unknown_message(source) + f" in {full!r}", fix=f"use one of: {', '.join(SOURCES.names())}")
    if not name:
        raise RobcurveError(f"model spec {full!r} has no name after '{source}:'", fix=f"write {source}:<name>")
    loader = SOURCES.get(source)
    if model_kwargs and not SOURCES.meta(source).get("model_kwargs"):
        takes = ", ".join(f"{s}:" for s in SOURCES.names() if SOURCES.meta(s).get("model_kwargs"))
        raise RobcurveError(f"model arguments {model_kwargs} were given for a {source}: model, which takes none",
                            fix=f"drop --model-kwargs (it serves {takes} models)")
    model = loader(name, weights=weights, dataset=dataset, threat_model=threat_model, model_dir=model_dir, arch=arch,
                   model_kwargs=model_kwargs)
    if spec != full:
        model.info.extra["alias"] = spec
    set_normalisation(model, source, mean, std)
    try:
        model = model.to(device)
    except (RuntimeError, AssertionError, TypeError, ValueError) as e:
        raise RobcurveError(f"cannot move the model to device {str(device)!r}: {one_line(e, 160)}",
                            fix="use device cpu, or cuda / cuda:N on a machine with a CUDA GPU") from None
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


#: where each source's mean/std come from, when no flag overrides them
NORM_SOURCES = {"timm": "timm pretrained cfg of the architecture", "zoo": "zoo model card (Fashion-MNIST training statistics)",
                "file": "sidecar JSON next to the weights (0 and 1 where it names none)",
                "robustbench": "RobustBench model (any normalisation is inside the network)", "py": "the factory's model"}


def set_normalisation(model: RobcurveModel, source: str, mean: Any = None, std: Any = None) -> None:
    """Apply a mean/std override (if any) and record in ``info.extra`` which normalisation is used and why."""
    origin = NORM_SOURCES.get(source, f"the {source}: source")
    if mean is not None or std is not None:
        cur_m, cur_s = model.mean.flatten().tolist(), model.std.flatten().tolist()
        m, s = check_norm_stats(mean if mean is not None else cur_m, std if std is not None else cur_s, model.info)
        model.mean = torch.tensor(m, dtype=model.mean.dtype, device=model.mean.device).view(1, -1, 1, 1)
        model.std = torch.tensor(s, dtype=model.std.dtype, device=model.std.device).view(1, -1, 1, 1)
        origin = "--mean/--std (config mean/std)"
    model.info.extra["normalisation"] = {"mean": [round(v, 6) for v in model.mean.flatten().tolist()],
                                         "std": [round(v, 6) for v in model.std.flatten().tolist()], "from": origin}


__all__ = ["ALIASES", "SOURCES", "THREAT_ALIASES", "ModelInfo", "RobcurveModel", "as_robmodel", "load_model", "resolve_spec"]
