"""Run configuration: YAML files (``safe_load``) with includes, validated by a schema.

A config may name a base with ``include: other.yaml`` (resolved next to it or in the
shipped ``configs/``); its fields are merged recursively, the including file winning.
Every CLI flag overrides one field (``--set section.field=value`` reaches any field). The
resolved config is saved with each run, and its digest keys the result store.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from robcurve.errors import ConfigError, InputError, RobcurveError, one_line
from robcurve.naming import dataset_family
from robcurve.run.sections import SECTIONS, builtin, register_section
from robcurve.validate import check_budget

SHIPPED = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/ (editable install)



def _measurements():
    """The measurement registry (imported lazily: it imports torch)."""
    # deferred: torch, needed only here
    from robcurve.run.measures import MEASUREMENTS

    return MEASUREMENTS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DirectionCfg(Strict):
    kind: Literal["fgsm", "random", "orthogonal", "pgd", "deepfool"] = "fgsm"
    clamp: bool = False


def _fraction(v: Any) -> Any:
    """Accept ``"8/255"`` (a budget written as a fraction) as a number; leave anything else alone."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*", v)
        if m and float(m.group(2)) != 0:
            return float(m.group(1)) / float(m.group(2))
    return v


def _budget_error(e: InputError) -> ValueError:
    """An InputError from :func:`robcurve.validate.check_budget` as a plain ValueError for pydantic."""
    return ValueError(e.what)


#: A finite float in pixel units that may be written as a fraction ("8/255").
PixelFloat = Annotated[float, BeforeValidator(_fraction)]


class Section(Strict):
    """Base of the config sections: unknown fields and non-finite floats (.inf, .nan) refused."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class TrajectoryCfg(Section):
    """The ε grid of the trajectory: T points over [-E, E] (L-inf pixel units, step h0 = 2E/(T-1))."""

    T: int = Field(201, ge=11, le=100001, description="grid points in [-E, E]")
    E: PixelFloat = Field(0.1, gt=0, le=1, description="half width of the epsilon interval, L-inf pixel units in (0, 1]")
    region: Literal["in-class", "full"] = "in-class"
    ladder: list[int] = Field(default_factory=lambda: [1, 5, 10, 20, 50],
                              description="steps in grid points (h = k·h0); each >= 1 and <= (T-1)/2")
    curved_threshold: float = Field(0.25, ge=0, le=1, description="a sample is curved when 1 - R^2 exceeds this")
    chunk_size: int | Literal["auto"] = Field(
        128, description="images per forward (an int: the same batches on every machine, so the same float rounding; "
                         "'auto': measured per model, fastest, but rounding may differ between runs at ~1e-6). "
                         "128 is within a few % of the fastest batch size on the zoo ViT, ResNet and Swin (benchmarks/trajectory.py)")

    @field_validator("E", mode="before")
    @classmethod
    def _e_range(cls, v: Any) -> Any:
        v = _fraction(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 1:
            try:
                check_budget("E", v, "Linf")
            except InputError as e:
                raise _budget_error(e) from None
        return v

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _chunk(cls, v: Any) -> Any:
        if isinstance(v, bool) or (isinstance(v, int) and v < 1):
            raise ValueError(f"must be an int >= 1 or 'auto', got {v}")
        return v

    @field_validator("ladder")
    @classmethod
    def _ladder_steps(cls, v: list[int]) -> list[int]:
        bad = [k for k in v if k < 1]
        if bad:
            raise ValueError(f"ladder steps are grid steps and must be >= 1, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"ladder steps must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _ladder_fits(self) -> TrajectoryCfg:
        biggest = (self.T - 1) // 2
        too_big = [k for k in self.ladder if k > biggest]
        if too_big:
            raise ValueError(f"ladder step(s) {too_big} do not fit the grid: with T={self.T} the largest step is "
                             f"(T-1)/2 = {biggest} grid points (h = k·2E/(T-1) must be <= E); "
                             f"drop them or raise T to at least {2 * max(too_big) + 1}")
        return self


class TravelCfg(Section):
    """Travel-distance search along a direction with ‖d‖∞ = 1: all values in L-inf pixel units."""

    h: float = Field(1e-3, gt=0, description="forward-search step")
    tol: float = Field(1e-6, gt=0, description="final bracket width")
    eps_max: PixelFloat = Field(1.0, gt=0, le=1, description="search limit in (0, 1]; no flip up to it = censored")

    @model_validator(mode="after")
    def _order(self) -> TravelCfg:
        if self.h > self.eps_max:
            raise ValueError(f"h={self.h:g} is larger than eps_max={self.eps_max:g}; the search step must be <= its limit")
        if self.tol > self.h:
            raise ValueError(f"tol={self.tol:g} is larger than h={self.h:g}; the bracket width must be <= the search step")
        return self


class PGDCfg(Section):
    """PGD budgets in pixel units: L-inf budgets in (0, 1], L2 budgets positive and finite."""

    norm: Literal["Linf", "L2"] = "Linf"
    eps: PixelFloat | None = Field(None, gt=0, description="budget; default by dataset (0.1 Fashion-MNIST, 8/255 CIFAR, 4/255 ImageNet; L2 0.5)")
    steps: int = Field(10, ge=1)
    step_size: PixelFloat | None = Field(None, gt=0)
    restarts: int = Field(1, ge=1)
    random_start: bool = True
    budgets: list[PixelFloat] = Field(default_factory=list, description="extra budgets for calibration under attack")
    loss: Literal["ce", "margin"] = Field("ce", description="PGD loss: cross-entropy (ce) or logit margin")

    @field_validator("eps", "step_size")
    @classmethod
    def _budget(cls, v: float | None, info: ValidationInfo) -> float | None:
        if v is None:
            return v
        try:
            return check_budget(info.field_name or "eps", v, info.data.get("norm", "Linf"), allow_zero=False)
        except InputError as e:
            raise _budget_error(e) from None

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[float], info: ValidationInfo) -> list[float]:
        for b in v:
            try:
                check_budget("budget", b, info.data.get("norm", "Linf"), allow_zero=False)
            except InputError as e:
                raise _budget_error(e) from None
        return v


class PGDDistanceCfg(Section):
    """Bisection for the smallest PGD budget; ``hi`` in pixel units of ``pgd.norm`` (<= 1 for L-inf)."""

    hi: PixelFloat | None = Field(None, gt=0)
    bisection_steps: int = Field(8, ge=1)
    steps: int = Field(10, ge=1)
    loss: Literal["ce", "margin"] = Field("margin", description="loss of the PGD runs inside the bisection (margin: tight)")


class DeepFoolCfg(Section):
    norm: Literal["L2", "Linf"] = "L2"
    steps: int = Field(50, ge=1)
    overshoot: float = Field(0.02, ge=0, le=1, description="relative overshoot of the last step, in [0, 1]")
    candidates: int = Field(10, ge=2)


class JumpOutCfg(Section):
    """The jump-out perturbation: ``eta`` is an L-inf budget in (0, 1] pixel units."""

    eta: PixelFloat = Field(2 / 255, gt=0, le=1)
    jump: Literal["random", "orthogonal", "fgsm"] = "random"
    keep_direction: bool = False

    @field_validator("eta", mode="before")
    @classmethod
    def _eta_range(cls, v: Any) -> Any:
        v = _fraction(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 1:
            try:
                check_budget("eta", v, "Linf")
            except InputError as e:
                raise _budget_error(e) from None
        return v


class CalibrationCfg(Section):
    n_bins: int = Field(15, ge=2, le=10000)
    corruptions: list[str] = Field(default_factory=lambda: ["gaussian_noise", "fog"])
    severities: list[int] = Field(default_factory=lambda: [3])

    @field_validator("severities")
    @classmethod
    def _sev(cls, v: list[int]) -> list[int]:
        if any(s < 1 or s > 5 for s in v):
            raise ValueError("severities must be between 1 and 5")
        if len(set(v)) != len(v):
            raise ValueError(f"severities must be distinct, got {v}")
        return v

    @field_validator("corruptions")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        # deferred: safetensors, torch, needed only here
        from robcurve.data.corruptions import CORRUPTIONS, NOT_IMPLEMENTED

        for name in v:
            if name in CORRUPTIONS:
                continue
            if name in NOT_IMPLEMENTED:
                raise ValueError(f"corruption {name!r} is not implemented ({NOT_IMPLEMENTED[name]})")
            close = difflib.get_close_matches(name, CORRUPTIONS.names(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown corruption {name!r}{hint} (known: {', '.join(CORRUPTIONS.names())})")
        if len(set(v)) != len(v):
            raise ValueError(f"corruptions must be distinct, got {v}")
        return v


class SummaryCfg(Section):
    bootstrap: int = Field(1000, ge=0, le=1_000_000, description="bootstrap resamples for the intervals (0: none)")


for _name, _model in (("direction", DirectionCfg), ("trajectory", TrajectoryCfg), ("travel", TravelCfg),
                      ("pgd", PGDCfg), ("pgd_distance", PGDDistanceCfg), ("deepfool", DeepFoolCfg),
                      ("jumpout", JumpOutCfg), ("calibration", CalibrationCfg), ("summary", SummaryCfg)):
    register_section(_name, _model, builtin=True)


def _json_object(v: Any) -> Any:
    """``model_kwargs`` given as a JSON text (``--model-kwargs '{"in_chans": 1}'``) -> dict."""
    if isinstance(v, str):
        try:
            v = json.loads(v) if v.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"is not valid JSON ({e.msg} at character {e.pos}); write a JSON object such as "
                             "'{\"in_chans\": 1}'") from None
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"must be a mapping of argument names to values, got {type(v).__name__}")
    return v


#: Extra model constructor arguments: a mapping, or its JSON text.
ModelKwargs = Annotated[dict[str, Any], BeforeValidator(_json_object)]


def _floats(v: Any) -> Any:
    """``--mean 0.5`` or ``--mean 0.485,0.456,0.406`` (text) -> list of floats; lists pass through."""
    if isinstance(v, str):
        try:
            return [float(x) for x in v.replace(" ", "").strip("[]").split(",") if x]
        except ValueError:
            raise ValueError(f"expected numbers separated by commas, got {v!r}") from None
    if isinstance(v, int | float) and not isinstance(v, bool):
        return [float(v)]
    return v


NormStats = Annotated[list[float] | None, BeforeValidator(_floats)]


class RunConfig(Strict):
    """Everything a run measures; stored with its results."""

    model: str = "vit_small"
    dataset: str = "fashion-mnist-embedded"
    data_dir: str | None = None
    threat_model: Literal["Linf", "L2", "corruptions"] = "Linf"
    weights: str | None = None
    model_kwargs: ModelKwargs = Field(default_factory=dict, exclude_if=lambda v: not v,
                                      description="extra model constructor arguments (timm create_model kwargs, e.g. in_chans)")
    mean: NormStats = Field(None, exclude_if=lambda v: v is None,
                            description="input mean per channel, overriding the model source's (e.g. 0.5 or 0.485,0.456,0.406)")
    std: NormStats = Field(None, exclude_if=lambda v: v is None,
                           description="input standard deviation per channel, overriding the model source's")
    model_dir: str | None = None
    split: Literal["test", "train"] = "test"
    n: int = Field(300, ge=1)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(100, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    autocast: Literal["none", "bf16", "fp16"] = Field(
        "none", description="run the model's forwards under torch.autocast (bf16/fp16); moves curvature at small scales, see docs/devices.md")
    max_memory: int | str | None = Field(
        None, description="memory budget of robcurve's chunks and attack sub-batches: bytes, 2GiB, 512MB or 25% (default 2 GiB, or 25% of free device memory if less)")
    threads: int | None = Field(None, ge=1, le=1024, exclude_if=lambda v: v is None,
                                description="torch CPU threads (a machine setting, not in the digest; default: the CPUs this "
                                            "process may use: affinity, cgroup quota, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK)")
    attack: str = Field("pgd", description="a measurement registered as an attack (pgd, deepfool, jumpout) or none")
    attack_backend: Literal["robcurve", "torchattacks", "foolbox"] = "robcurve"
    measurements: list[str] = Field(default_factory=lambda: ["clean", "trajectory", "travel", "corruptions"])
    direction: DirectionCfg = Field(default_factory=DirectionCfg)
    trajectory: TrajectoryCfg = Field(default_factory=TrajectoryCfg)
    travel: TravelCfg = Field(default_factory=TravelCfg)
    pgd: PGDCfg = Field(default_factory=PGDCfg)
    pgd_distance: PGDDistanceCfg = Field(default_factory=PGDDistanceCfg)
    deepfool: DeepFoolCfg = Field(default_factory=DeepFoolCfg)
    jumpout: JumpOutCfg = Field(default_factory=JumpOutCfg)
    calibration: CalibrationCfg = Field(default_factory=CalibrationCfg)
    summary: SummaryCfg = Field(default_factory=SummaryCfg)
    out: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, exclude_if=lambda v: not v,
                                    description="config sections of plugin measurements, by section name")

    @model_validator(mode="before")
    @classmethod
    def _plugin_sections(cls, data: Any) -> Any:
        """Move the sections of registered plugin measurements into ``options``."""
        if not isinstance(data, dict):
            return data
        plug = {n for n in SECTIONS.names() if not builtin(n)}
        if not plug & set(data):
            return data
        data = dict(data)
        opts = dict(data.get("options") or {})
        for k in plug & set(data):
            opts[k] = data.pop(k)
        data["options"] = opts
        return data

    @model_validator(mode="after")
    def _validate_options(self) -> RunConfig:
        reg = _measurements()
        for key in list(self.options):
            if key not in SECTIONS or builtin(key):
                raise ValueError(f"options.{key}: no registered measurement has a config section {key!r}")
            try:
                self.options[key] = SECTIONS.get(key).model_validate(self.options[key] or {}).model_dump()
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in (key, *err["loc"]))
                raise ValueError(f"{loc}: {err['msg']} (got {err.get('input')!r})") from None
        for m in reg.names():  # plugin sections that were not given get their defaults
            spec = reg.get(m)
            if spec.config_model is not None and not builtin(spec.config) and m in self.measurements:
                self.options.setdefault(spec.config, spec.config_model().model_dump())
        return self

    @field_validator("measurements")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        reg = _measurements()
        bad = [m for m in v if m not in reg]
        if bad:
            raise ValueError("; ".join(reg.unknown_message(b) for b in bad) + f" (allowed: {', '.join(reg.names())})")
        return v

    @field_validator("attack")
    @classmethod
    def _attack(cls, v: str) -> str:
        # deferred: torch, needed only here
        from robcurve.run.measures import attack_names

        names = attack_names()
        if v != "none" and v not in names:
            import difflib

            close = difflib.get_close_matches(str(v), [*names, "none"], n=2, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"unknown attack {v!r}{hint} (allowed: {', '.join([*names, 'none'])})")
        return v

    def section(self, name: str) -> Any:
        """A config section by name: a built-in field or a plugin measurement's validated section."""
        if name in type(self).model_fields:
            return getattr(self, name)
        if name in SECTIONS:
            return SECTIONS.get(name).model_validate(self.options.get(name) or {})
        raise KeyError(name)

    def all_measurements(self) -> list[str]:
        """The configured measurements plus ``clean`` and the one ``attack`` names, in run order."""
        # deferred: torch, needed only here
        from robcurve.run.measures import ordered

        ms = set(self.measurements) | {"clean"}
        if self.attack != "none":
            ms.add(self.attack)
        return ordered(ms)

    def pgd_eps(self) -> float:
        if self.pgd.eps is not None:
            return self.pgd.eps
        if self.pgd.norm == "L2":
            return 0.5
        fam = dataset_family(self.dataset)
        if fam == "fashion-mnist":
            return 0.1
        return 4 / 255 if fam == "imagenet" else 8 / 255

    def direction_options(self) -> dict[str, Any]:
        """Options of the direction rule: the run's PGD or DeepFool settings for those rules."""
        if self.direction.kind == "pgd":
            return {"eps": self.pgd_eps(), "norm": self.pgd.norm, "steps": self.pgd.steps}
        if self.direction.kind == "deepfool":
            d = self.deepfool
            return {"norm": d.norm, "steps": d.steps, "overshoot": d.overshoot, "candidates": d.candidates}
        return {}

    def digest(self) -> str:
        """sha256 of the fields that change results (16 hex digits): see :func:`config_digest`."""
        return config_digest(self.model_dump())


# fields that name this machine's paths or devices (or its thread count): not part of a run's identity
MACHINE_FIELDS = ("out", "device", "data_dir", "model_dir", "weights", "max_memory", "threads")

#: performance settings: they change float rounding at most (how many inputs go through the model per forward), so
#: a board's entries may differ in them. Dotted path -> the value the protocol digest sees: ``None`` drops the field;
#: the window's chunk (a later section, under ``options``) reads as 2048, its value when the boards' protocols were
#: fixed, so that their digests (in protocol.yaml and in every entry) stay valid.
PERFORMANCE_FIELDS: dict[str, Any] = {"trajectory.chunk_size": None, "options.window.chunk_size": 2048}

# The fields of the config when its digest was first fixed (digest form 1). A field in this
# tree is always part of the digest; a field added later enters it only when it differs from
# its default, so a new option never changes the digest of a run made before it existed (and
# the shipped leaderboard entries, report and series keep verifying).
DIGEST_V1_FIELDS: dict[str, Any] = {
    "model": None, "dataset": None, "threat_model": None, "split": None, "n": None, "seed": None,
    "batch_size": None, "dtype": None, "attack": None, "attack_backend": None, "measurements": None,
    "direction": {"kind": None, "clamp": None},
    "trajectory": {"T": None, "E": None, "region": None, "ladder": None, "curved_threshold": None, "chunk_size": None},
    "travel": {"h": None, "tol": None, "eps_max": None},
    "pgd": {"norm": None, "eps": None, "steps": None, "step_size": None, "restarts": None, "random_start": None,
            "budgets": None, "loss": None},
    "pgd_distance": {"hi": None, "bisection_steps": None, "steps": None, "loss": None},
    "deepfool": {"norm": None, "steps": None, "overshoot": None, "candidates": None},
    "jumpout": {"eta": None, "jump": None, "keep_direction": None},
    "calibration": {"n_bins": None, "corruptions": None, "severities": None},
    "summary": {"bootstrap": None},
}


def _canonical(d: dict[str, Any], defaults: dict[str, Any], v1: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if v1 is not None and k in v1:
            sub = v1[k]
            out[k] = _canonical(v, defaults.get(k) or {}, sub) if isinstance(sub, dict) and isinstance(v, dict) else v
        elif isinstance(defaults, dict) and k in defaults and v == defaults[k]:
            continue  # added after digest form 1 and at its default
        else:
            out[k] = v
    return out


_DEFAULTS: dict[str, Any] | None = None


def dotted_get(d: Any, path: str) -> Any:
    """The value at a dotted path of nested dicts (``options.window.chunk_size``); None where a step is missing."""
    for p in path.split("."):
        d = d.get(p) if isinstance(d, dict) else None
    return d


def config_changes(old: dict[str, Any], new: dict[str, Any],
                   skip: Callable[[str, dict[str, Any], dict[str, Any]], bool] | None = None) -> list[str]:
    """The dotted fields in which two dumped configs differ (``options.window.chunk_size``). ``skip(dotted, old
    level, new level)`` leaves a field and everything below it out; by default the machine fields are."""
    if skip is None:
        def skip(dotted: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
            return dotted in MACHINE_FIELDS
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                dotted = f"{path}.{k}" if path else k
                if not skip(dotted, a, b):
                    walk(a.get(k), b.get(k), dotted)
        elif a != b:
            out.append(path)

    walk(old, new, "")
    return out


def portable_spec(spec: Any) -> Any:
    """A model spec without this machine's folders: ``file:/home/me/w.safetensors`` -> ``file:w.safetensors``."""
    if isinstance(spec, str) and spec.startswith("file:"):
        return "file:" + Path(spec[5:]).name
    return spec


def config_digest(dump: dict[str, Any]) -> str:
    """The digest of a dumped config: machine fields left out, later fields left out at their defaults.

    ``out``, ``device``, ``data_dir``, ``model_dir``, ``weights`` (a path; the weights'
    sha256 is stored with the model info), ``max_memory`` and ``threads`` are left out, so the
    same study on another machine has the same digest.
    """
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = RunConfig().model_dump()
    d = {k: v for k, v in dump.items() if k not in MACHINE_FIELDS}
    if "model" in d:
        d["model"] = portable_spec(d["model"])
    d = _canonical(d, _DEFAULTS, DIGEST_V1_FIELDS)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# fields a CLI flag maps to directly
FLAG_FIELDS = ("model", "dataset", "data_dir", "threat_model", "weights", "model_dir", "n", "seed", "batch_size", "mean", "std",
               "device", "dtype", "autocast", "max_memory", "attack", "attack_backend", "out", "model_kwargs", "threads")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


#: The name errors give to values that came from CLI flags or ``--set`` (not from a file).
CLI_SOURCE = "the command line (flags / --set)"
Origins = dict[tuple[str, ...], str]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in first
            except TypeError:  # unhashable key: SafeLoader reports it itself
                continue
            if dup and key != "<<":
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first on line {first[key] + 1})", key_node.start_mark)
            first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _record(data: dict[str, Any], prefix: tuple[str, ...], source: str, origins: Origins) -> None:
    """Note ``source`` as the origin of every key path in ``data``."""
    for k, v in data.items():
        key = (*prefix, str(k))
        origins[key] = source
        if isinstance(v, dict):
            _record(v, key, source, origins)


def read_yaml(path: Path, seen: tuple[Path, ...] = (), origins: Origins | None = None) -> dict[str, Any]:
    """Read a config YAML (safe loader) and resolve its ``include`` chain.

    Refuses (with :class:`~robcurve.errors.ConfigError`) a folder, an unreadable, binary,
    non-UTF-8 or empty file, a key given twice, anything but a mapping at the top, and an
    ``include`` that is not a file name or a list of file names. When ``origins`` is given,
    it is filled with the file each key path came from (the including file winning).
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config path {path} is a folder, not a YAML file", where=str(path),
                          fix="pass the path of a .yaml file, e.g. configs/smoke.yaml")
    if not path.is_file():
        alt = SHIPPED / path.name
        if path.parent == Path(".") and alt.is_file():
            path = alt
        else:
            raise ConfigError(f"config file not found: {path}", fix=f"check the path; shipped configs are in {SHIPPED}")
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config include loop: {' -> '.join(str(p) for p in (*seen, path))}", fix="remove the cyclic include")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or type(e).__name__}", where=str(path),
                          fix="check that the file is readable (permissions)") from None
    if b"\x00" in raw[:65536]:
        raise ConfigError(f"config file {path} is a binary file, not YAML text", where=str(path),
                          fix="pass a YAML text file (field: value lines), e.g. configs/smoke.yaml")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})",
                          where=str(path), fix="save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"bad YAML: {one_line(getattr(e, 'problem', None) or e, 200)}", where=where,
                          fix="fix the YAML syntax") from None
    if data is None:
        raise ConfigError(f"config file {path} is empty", where=str(path),
                          fix="write field: value lines (see configs/default.yaml), or leave out --config for the defaults")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of fields, not {type(data).__name__}", where=str(path),
                          fix="write field: value lines")
    if "include" in data:
        inc = data.pop("include")
        if isinstance(inc, str):
            incs = [inc]
        elif isinstance(inc, list) and all(isinstance(i, str) for i in inc):
            incs = inc
        else:
            raise ConfigError(f"include: must be a config file name or a list of file names, got {one_line(repr(inc), 80)} "
                              f"({type(inc).__name__})", where=str(path), fix="write include: base.yaml or include: [a.yaml, b.yaml]")
        if not incs or any(not i.strip() for i in incs):
            raise ConfigError("include: names no file", where=str(path), fix="write include: base.yaml, or remove the line")
        base: dict[str, Any] = {}
        for i in incs:
            p = Path(i)
            cand = path.parent / p
            base = merge(base, read_yaml(cand if cand.is_file() else p, (*seen, path), origins))
        if origins is not None:
            _record(data, (), str(path), origins)
        return merge(base, data)
    if origins is not None:
        _record(data, (), str(path), origins)
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["pgd.eps=0.05", "n=100"]`` -> nested dict with YAML-typed values.

    Raises :class:`~robcurve.errors.ConfigError` for an item without ``=``, an empty key or
    key part (``pgd..eps``), and two items that contradict (``pgd=1`` and ``pgd.eps=0.1``).
    """
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--set {it!r} has no '='", fix="write --set section.field=value")
        key, _, raw = it.partition("=")
        parts = [p.strip() for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in parts):
            raise ConfigError(f"--set {it!r} has an empty field name", fix="write --set section.field=value, e.g. --set pgd.eps=0.05")
        try:
            val = yaml.safe_load(raw)
        except yaml.YAMLError:
            val = raw
        node = out
        for depth, p in enumerate(parts[:-1]):
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {it!r} conflicts with --set {'.'.join(parts[:depth + 1])}={nxt!r}",
                                  fix="set either the whole section or its fields, not both")
            node = nxt
        if isinstance(node.get(parts[-1]), dict) and not isinstance(val, dict):
            raise ConfigError(f"--set {it!r} conflicts with an earlier --set {key.strip()}.<field>=...",
                              fix="set either the whole section or its fields, not both")
        node[parts[-1]] = val
    return out


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config model class that holds the field at ``loc`` (e.g. PGDCfg for ("pgd", "eps"))."""
    model: type[BaseModel] = RunConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _source_of(loc: tuple[Any, ...], origins: Origins | None, default: str) -> str:
    """Where the value at ``loc`` came from: a file, the command line, or several of them for a section."""
    if not origins:
        return default
    key = tuple(str(p) for p in loc)
    inside = sorted({src for k, src in origins.items() if len(k) > len(key) and k[: len(key)] == key})
    if inside:  # a section: every place that set one of its fields
        if key in origins and origins[key] not in inside:
            inside.append(origins[key])
        return " and ".join(inside)
    for i in range(len(key), 0, -1):
        if key[:i] in origins:
            return origins[key[:i]]
    return "the built-in defaults"


def format_validation_error(e: ValidationError, source: str, origins: Origins | None = None) -> str:
    """One line listing every invalid field: ``loc: problem (got value) [from source]``.

    Unknown fields get the close field names suggested; ``source`` names where values came
    from when ``origins`` (key path -> file or command line) does not know better.
    """
    parts = []
    for err in e.errors():
        loc = tuple(err["loc"])
        where = _source_of(loc, origins, source)
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if err["type"] == "extra_forbidden":
            model = _model_at(loc)
            names = sorted(model.model_fields) if model else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            parent = _loc_text(loc[:-1])
            known = f" ({parent + ' has' if parent else 'top-level fields are'}: {', '.join(names)})" if names else ""
            parts.append(f"{_loc_text(loc)}: unknown field{hint}{known} [from {where}]")
            continue
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            msg += f" (allowed: {ctx['expected']})"
        got = "" if err["type"] in ("missing",) else f" (got {one_line(repr(err.get('input')), 80)})"
        if loc and isinstance(err.get("input"), dict):
            got = ""  # a whole section: the message names the field
        parts.append(f"{_loc_text(loc) or 'config'}: {msg}{got} [from {where}]")
    return "invalid config: " + "; ".join(parts)


_DEVICE = re.compile(r"(cpu|mps|cuda(:[0-9]+)?)")


def _cross_checks(cfg: RunConfig) -> list[tuple[tuple[str, ...], str]]:
    """Checks that span sections or need the whole config: (loc, problem) pairs."""
    problems: list[tuple[tuple[str, ...], str]] = []
    if not _DEVICE.fullmatch(cfg.device.strip()):
        problems.append((("device",), f"unknown device {cfg.device!r}; use cpu, cuda, cuda:N or mps"))
    if cfg.max_memory is not None:
        # deferred: torch, needed only here
        from robcurve.memory import parse_memory

        try:
            parse_memory(cfg.max_memory)
        except RobcurveError as e:
            problems.append((("max_memory",), f"{e.what}; e.g. 2GiB, 512MB or 25%"))
    if cfg.pgd_distance.hi is not None:
        try:
            check_budget("hi", cfg.pgd_distance.hi, cfg.pgd.norm, allow_zero=False)
        except InputError as e:
            problems.append((("pgd_distance", "hi"), f"{e.what} (pgd.norm is {cfg.pgd.norm})"))
    problems.extend(_names_exist(cfg))
    bad_keys = [k for k in cfg.model_kwargs if not isinstance(k, str) or not k.isidentifier()]
    if bad_keys:
        problems.append((("model_kwargs",), f"argument names must be identifiers, got {bad_keys}"))
    return problems


def _names_exist(cfg: RunConfig) -> list[tuple[tuple[str, ...], str]]:
    """The dataset (or corrupted view) is registered and a model alias resolves for it: checked
    here so that a typo is reported before anything is loaded or written."""
    # deferred: safetensors, torch, needed only here
    import robcurve.data  # noqa: F401  (registers the datasets)

    # deferred: safetensors, torch, needed only here
    from robcurve.data.base import DATASETS

    problems: list[tuple[tuple[str, ...], str]] = []
    try:
        if "-c:" in cfg.dataset:
            # deferred: safetensors, torch, needed only here
            from robcurve.data.corruptions import parse_corrupted_name

            base = parse_corrupted_name(cfg.dataset)[0]
        else:
            base = cfg.dataset
        if base not in DATASETS:
            DATASETS.get(base)  # raises, naming the close names
    except RobcurveError as e:
        problems.append((("dataset",), e.what))
        return problems
    # deferred: torch, needed only here
    from robcurve.models import resolve_spec

    try:
        resolve_spec(cfg.model, cfg.dataset, cfg.threat_model)
    except RobcurveError as e:
        problems.append((("model",), f"{e.what}; {e.fix}" if e.fix else e.what))
    return problems


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig from a YAML file (or the defaults) and overrides (flags, --set).

    Every problem raises :class:`~robcurve.errors.ConfigError` with one line that names each
    bad field, its value, and where it came from (the file, an included file, or the
    command line).
    """
    origins: Origins = {}
    data = read_yaml(Path(path), origins=origins) if path else {}
    if overrides:
        if not isinstance(overrides, dict):
            raise ConfigError(f"config overrides must be a mapping, got {type(overrides).__name__}", fix="pass a dict of fields")
        _record(overrides, (), CLI_SOURCE, origins)
        data = merge(data, overrides)
    default_source = str(path) if path else CLI_SOURCE
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as e:
        unknown_top = any(err["type"] == "extra_forbidden" and len(err["loc"]) == 1 for err in e.errors())
        fix = "correct the field(s) named above where they are set"
        if unknown_top:
            fix = "check the field names (`--set section.field=value` reaches a nested field)"
        raise ConfigError(format_validation_error(e, default_source, origins), fix=fix) from None
    problems = _cross_checks(cfg)
    if problems:
        text = "; ".join(f"{_loc_text(loc)}: {msg} [from {_source_of(loc, origins, default_source)}]" for loc, msg in problems)
        raise ConfigError("invalid config: " + text, fix="correct the field(s) named above where they are set")
    return cfg
