"""Run configuration: YAML files (``safe_load``) with includes, validated by a schema.

A config may name a base with ``include: other.yaml`` (resolved next to it or in the
shipped ``configs/``); its fields are merged recursively, the including file winning.
Every CLI flag overrides one field (``--set section.field=value`` reaches any field). The
resolved config is saved with each run, and its digest keys the result store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from robcurve.errors import RobcurveError

SHIPPED = Path(__file__).resolve().parents[2] / "configs"  # the repository's configs/ (editable install)

MEASUREMENTS = ("clean", "trajectory", "travel", "pgd", "pgd_distance", "deepfool", "jumpout", "corruptions", "adv_calibration")
ATTACK_MEASUREMENT = {"pgd": "pgd", "deepfool": "deepfool", "jumpout": "jumpout", "none": None}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DirectionCfg(Strict):
    kind: Literal["fgsm", "random", "orthogonal", "pgd", "deepfool"] = "fgsm"
    clamp: bool = False


class TrajectoryCfg(Strict):
    T: int = Field(201, ge=11, le=100001, description="grid points in [-E, E]")
    E: float = Field(0.1, gt=0, description="half width of the epsilon interval, L-inf pixel units")
    region: Literal["in-class", "full"] = "in-class"
    ladder: list[int] = Field(default_factory=lambda: [1, 5, 10, 20, 50])
    curved_threshold: float = Field(0.25, ge=0, le=1, description="a sample is curved when 1 - R^2 exceeds this")
    chunk_size: int = Field(4096, ge=1)


class TravelCfg(Strict):
    h: float = Field(1e-3, gt=0)
    tol: float = Field(1e-6, gt=0)
    eps_max: float = Field(1.0, gt=0)


class PGDCfg(Strict):
    norm: Literal["Linf", "L2"] = "Linf"
    eps: float | None = Field(None, gt=0, description="budget; default by dataset (0.1 Fashion-MNIST, 8/255 CIFAR, 4/255 ImageNet; L2 0.5)")
    steps: int = Field(10, ge=1)
    step_size: float | None = Field(None, gt=0)
    restarts: int = Field(1, ge=1)
    random_start: bool = True
    budgets: list[float] = Field(default_factory=list, description="extra budgets for calibration under attack")


class PGDDistanceCfg(Strict):
    hi: float | None = Field(None, gt=0)
    bisection_steps: int = Field(8, ge=1)
    steps: int = Field(10, ge=1)


class DeepFoolCfg(Strict):
    norm: Literal["L2", "Linf"] = "L2"
    steps: int = Field(50, ge=1)
    overshoot: float = Field(0.02, ge=0)
    candidates: int = Field(10, ge=2)


class JumpOutCfg(Strict):
    eta: float = Field(2 / 255, gt=0)
    jump: Literal["random", "orthogonal", "fgsm"] = "random"
    keep_direction: bool = False


class CalibrationCfg(Strict):
    n_bins: int = Field(15, ge=2)
    corruptions: list[str] = Field(default_factory=lambda: ["gaussian_noise", "fog"])
    severities: list[int] = Field(default_factory=lambda: [3])

    @field_validator("severities")
    @classmethod
    def _sev(cls, v: list[int]) -> list[int]:
        if any(s < 1 or s > 5 for s in v):
            raise ValueError("severities must be between 1 and 5")
        return v


class SummaryCfg(Strict):
    bootstrap: int = Field(1000, ge=0)


class RunConfig(Strict):
    """Everything a run measures; stored with its results."""

    model: str = "vit_small"
    dataset: str = "fashion-mnist-embedded"
    data_dir: str | None = None
    threat_model: Literal["Linf", "L2", "corruptions"] = "Linf"
    weights: str | None = None
    model_dir: str | None = None
    split: Literal["test", "train"] = "test"
    n: int = Field(300, ge=1)
    seed: int = Field(0, ge=0)
    batch_size: int = Field(100, ge=1)
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    attack: Literal["pgd", "deepfool", "jumpout", "none"] = "pgd"
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

    @field_validator("measurements")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in MEASUREMENTS]
        if bad:
            raise ValueError(f"unknown measurement(s) {bad}; allowed: {list(MEASUREMENTS)}")
        return v

    def all_measurements(self) -> list[str]:
        """The configured measurements plus the one ``attack`` names, in a fixed order."""
        ms = set(self.measurements) | {"clean"}
        extra = ATTACK_MEASUREMENT[self.attack]
        if extra:
            ms.add(extra)
        return [m for m in MEASUREMENTS if m in ms]

    def pgd_eps(self) -> float:
        if self.pgd.eps is not None:
            return self.pgd.eps
        if self.pgd.norm == "L2":
            return 0.5
        base = self.dataset.split("-c:")[0]
        if base.startswith("fashion-mnist"):
            return 0.1
        return 4 / 255 if base == "imagenet" else 8 / 255

    def direction_options(self) -> dict[str, Any]:
        """Options of the direction rule: the run's PGD or DeepFool settings for those rules."""
        if self.direction.kind == "pgd":
            return {"eps": self.pgd_eps(), "norm": self.pgd.norm, "steps": self.pgd.steps}
        if self.direction.kind == "deepfool":
            d = self.deepfool
            return {"norm": d.norm, "steps": d.steps, "overshoot": d.overshoot, "candidates": d.candidates}
        return {}

    def digest(self) -> str:
        """sha256 of the fields that change results (not out/device)."""
        d = self.model_dump(exclude={"out", "device"})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# fields a CLI flag maps to directly
FLAG_FIELDS = ("model", "dataset", "data_dir", "threat_model", "weights", "model_dir", "n", "seed", "batch_size",
               "device", "dtype", "attack", "attack_backend", "out")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config YAML (safe_load) and resolve its ``include`` chain."""
    if not path.is_file():
        alt = SHIPPED / path.name
        if path.parent == Path(".") and alt.is_file():
            path = alt
        else:
            raise RobcurveError(f"config file not found: {path}", fix=f"check the path; shipped configs are in {SHIPPED}")
    path = path.resolve()
    if path in seen:
        raise RobcurveError(f"config include loop: {' -> '.join(str(p) for p in (*seen, path))}", fix="remove the cyclic include")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise RobcurveError(f"bad YAML: {getattr(e, 'problem', None) or e}", where=where, fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise RobcurveError(f"{path} must hold a mapping of fields, not {type(data).__name__}", where=str(path),
                            fix="write field: value lines")
    inc = data.pop("include", None)
    if inc:
        incs = [inc] if isinstance(inc, str) else inc
        base: dict[str, Any] = {}
        for i in incs:
            p = Path(i)
            cand = path.parent / p
            base = merge(base, read_yaml(cand if cand.is_file() else p, (*seen, path)))
        data = merge(base, data)
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["pgd.eps=0.05", "n=100"]`` -> nested dict with YAML-typed values."""
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it:
            raise RobcurveError(f"--set {it!r} has no '='", fix="write --set section.field=value")
        key, _, raw = it.partition("=")
        try:
            val = yaml.safe_load(raw)
        except yaml.YAMLError:
            val = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = val
    return out


def format_validation_error(e: ValidationError, source: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            msg += f" (allowed: {ctx['expected']})"
        parts.append(f"{loc}: {msg} (got {err.get('input')!r})" if err["type"] != "extra_forbidden" else f"{loc}: {msg}")
    return f"invalid config in {source}: " + "; ".join(parts)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build a RunConfig from a YAML file (or the defaults) and overrides (flags, --set)."""
    data = read_yaml(Path(path)) if path else {}
    if overrides:
        data = merge(data, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        fields = sorted(RunConfig.model_fields)
        raise RobcurveError(format_validation_error(e, str(path or "flags")),
                            fix=f"check the field names and values; top-level fields are {', '.join(fields)}") from None
