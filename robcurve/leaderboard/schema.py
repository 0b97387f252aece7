"""Leaderboard entries: RobustBench's model_info fields plus a ``robcurve`` block, validated.

A RobustBench model_info file can be read as it is: its numbers written as strings
(``"94.78"``), ``eps`` as ``"8/255"`` or null, and its other fields (``corruptions_acc``,
``unreliable``, ``external``, ``footnote``, ``link`` ...) keep RobustBench's meaning:
``reported`` is the robust accuracy a paper reported, ``autoattack_acc`` RobustBench's own
AutoAttack evaluation; robcurve's PGD robust accuracy lives in the ``robcurve`` block only.
Accuracies are percentages in the RobustBench fields and fractions in the ``robcurve`` block.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

import robcurve
from robcurve.leaderboard.integrity import content_digest
from robcurve.naming import DatasetFamily, ThreatModel, dataset_family
from robcurve.run.config import MACHINE_FIELDS, portable_spec

if TYPE_CHECKING:  # pragma: no cover
    from robcurve.run.summary import RunSummary

THREAT_MODELS = tuple(t.value for t in ThreatModel)
DATASETS = tuple(d.value for d in DatasetFamily)
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$")


def as_number(v: Any, field: str) -> float | None:
    """RobustBench writes numbers as strings ("94.78", "8/255"); None/"" stay None."""
    if v is None or (isinstance(v, str) and v.strip() in ("", "null", "None")):
        return None
    if isinstance(v, bool):
        raise ValueError(f"{field} must be a number, not a boolean")
    if isinstance(v, int | float):
        f = float(v)
    elif isinstance(v, str):
        s = v.strip()
        try:
            f = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{field} must be a number (or a fraction like 8/255), got {v!r}") from None
    else:
        raise ValueError(f"{field} must be a number, got {type(v).__name__}")
    if not math.isfinite(f):
        raise ValueError(f"{field} must be finite, got {v!r}")
    return f


class MetricRow(BaseModel):
    """One robcurve metric: value with condition, interval (and its method), n and unit."""

    model_config = ConfigDict(extra="forbid")
    metric: str
    condition: str = ""
    value: float | None
    lo: float | None = None
    hi: float | None = None
    interval: str = "none"
    n: int | None = None
    unit: str = ""
    direction: Literal["higher", "lower", "none"] = "none"
    measurement: str = ""
    description: str = ""
    note: str = ""


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: list[int]
    batches: list[int] = Field(default_factory=list)
    measurements: list[str]
    compared: int
    mismatches: int
    tolerance: dict[str, float]
    skipped: list[str] = Field(default_factory=list)
    seed: int
    weights_sha256: str | None = None
    content_digest: str | None = None  # sha256 over every field that is not free text (integrity.content_digest)


class RobcurveBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    model: dict[str, Any]
    dataset: dict[str, Any] = Field(default_factory=dict)
    n: int = Field(ge=0)
    sample_ids: list[int] = Field(default_factory=list)
    metrics: list[MetricRow] = Field(default_factory=list)
    scale: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    attack_backend: str = "robcurve"
    config: dict[str, Any] = Field(default_factory=dict)
    config_digest: str = ""
    results_digest: str = ""
    compute_s: dict[str, float] = Field(default_factory=dict)
    verification: Verification | None = None
    series: dict[str, Any] | None = None  # {"of": "zoo:vit-fmnist", "epoch": 3} for a training checkpoint
    flags: list[str] = Field(default_factory=list)  # e.g. "below-chance" (submitted with --allow-below-chance)
    protocol: dict[str, str] | None = None  # the board's protocol the run followed: {"config": ..., "digest": ...}

    def row(self, metric: str, condition: str | None = None) -> MetricRow | None:
        for r in self.metrics:
            if r.metric == metric and (condition is None or r.condition == condition):
                return r
        return None


class Entry(BaseModel):
    """A leaderboard entry (RobustBench model_info fields; unknown RobustBench fields are kept)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    id: str | None = None  # file name of the entry (safe); defaults to the file's stem
    link: str | None = ""
    authors: str | None = ""
    venue: str | None = ""
    paper: str | None = ""
    architecture: str | None = ""
    dataset: str
    threat_model: str
    eps: float | None = None
    clean_acc: float | None = None
    reported: float | None = None
    autoattack_acc: float | None = None
    corruptions_acc: float | None = None
    external: float | None = None
    additional_data: bool = False
    number_forward_passes: int | None = 1
    unreliable: bool = False
    footnote: str | None = ""
    imported: bool = False  # a RobustBench row with no robcurve measurement yet
    source: str | None = None  # provenance of imported numbers: "robustbench"
    source_sha256: str | None = None  # sha256 of the imported RobustBench file
    robcurve: RobcurveBlock | None = None
    _raw: dict[str, Any] | None = PrivateAttr(default=None)  # the file's JSON as read (for the content digest)

    def __eq__(self, other: object) -> bool:  # the fields, not how the file was read
        return isinstance(other, Entry) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def status(self) -> str:
        """'verified' (robcurve entry whose content digest holds), 'imported' (RobustBench numbers with
        their provenance), or 'unverified' (anything else: never ranked among verified entries)."""
        if self.robcurve is None:
            return "imported" if self.source == "robustbench" and self.source_sha256 else "unverified"
        v = self.robcurve.verification
        if v is None or v.mismatches or not v.content_digest:
            return "unverified"
        raw = self._raw if self._raw is not None else self.model_dump(mode="json", exclude_unset=True)
        return "verified" if content_digest(raw) == v.content_digest else "unverified"

    @field_validator("eps", "clean_acc", "reported", "autoattack_acc", "corruptions_acc", "external", mode="before")
    @classmethod
    def _numbers(cls, v: Any, info: Any) -> float | None:
        return as_number(v, info.field_name)

    @field_validator("clean_acc", "reported", "autoattack_acc", "corruptions_acc")
    @classmethod
    def _percent(cls, v: float | None, info: Any) -> float | None:
        if v is not None and not 0 <= v <= 100:
            raise ValueError(f"{info.field_name} is a percentage in [0, 100], got {v}")
        return v

    @field_validator("threat_model")
    @classmethod
    def _threat(cls, v: str) -> str:
        if v not in THREAT_MODELS:
            raise ValueError(f"unknown threat model {v!r} (allowed: {', '.join(THREAT_MODELS)})")
        return v

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r} (allowed: {', '.join(DATASETS)})")
        return v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not SAFE_ID.fullmatch(v):
            raise ValueError(f"entry id {v!r} is not a safe file name (letters, digits, '.', '_', '-'; no '/' or '..')")
        if v is not None and ".." in v:
            raise ValueError(f"entry id {v!r} contains '..'")
        return v

    # -- derived --------------------------------------------------------------------------
    @property
    def family(self) -> str:
        if self.robcurve is not None:
            return str(self.robcurve.model.get("family") or "other")
        return str(getattr(self, "family_", None) or "other")

    def robust_acc(self) -> tuple[float | None, str]:
        """(robust accuracy in %, its source): AutoAttack if evaluated, else robcurve's PGD, else reported."""
        if self.threat_model.startswith("corruptions"):
            return self.corruptions_acc, "corruptions"
        if self.autoattack_acc is not None:
            return self.autoattack_acc, "AutoAttack"
        if self.robcurve is not None:
            r = self.robcurve.row("pgd_robust_acc")
            if r is not None and r.value is not None:
                return 100 * r.value, "PGD (robcurve)"
        if self.reported is not None:
            return self.reported, "reported"
        return None, ""


# -- the entry of a run ---------------------------------------------------------------------------
def public_model_info(info: dict) -> dict:
    """Model info without machine paths (a weights path keeps its file name only)."""
    d = dict(info)
    if d.get("weights"):
        d["weights"] = Path(str(d["weights"])).name
    spec = str(d.get("spec") or "")
    if spec.startswith("file:"):
        d["spec"] = "file:" + Path(spec[5:]).name
    return d


def entry_from_summary(s: RunSummary) -> Entry:
    """The leaderboard entry of a run (RobustBench model_info fields plus the ``robcurve`` block), the one
    place an entry is made: ``summarize`` writes it as entry.json, ``submit`` and ``verify`` rebuild it."""
    cfg = s.cfg
    info = public_model_info(s.model)
    clean, pgd = s.row("clean_acc"), s.row("pgd_robust_acc")
    backend = cfg.attack_backend
    block = RobcurveBlock(
        version=robcurve.__version__, model=info, dataset=s.dataset, n=s.n, sample_ids=s.sample_ids,
        metrics=[MetricRow(**r.to_dict()) for r in s.rows], scale=s.scale, notes=s.notes, attack_backend=backend,
        config={**cfg.model_dump(exclude=set(MACHINE_FIELDS)), "model": portable_spec(cfg.model)},
        config_digest=cfg.digest(), results_digest=s.results_digest,
        compute_s={k: round(v, 1) for k, v in sorted(s.compute_s.items())})
    return Entry(
        name=info.get("extra", {}).get("alias") or info.get("spec") or cfg.model,
        authors="", venue="", paper="", architecture=info.get("arch", ""),
        dataset=dataset_family(cfg.dataset), threat_model=cfg.threat_model,
        eps=cfg.pgd_eps() if cfg.threat_model != "corruptions" else None,
        clean_acc=round(100 * clean.value, 2) if clean is not None else None,
        reported=None, autoattack_acc=None, additional_data=False, number_forward_passes=1,
        footnote=(f"Robust accuracy: PGD-{cfg.pgd.steps} ({cfg.pgd.restarts} restart(s), {backend}) on {s.n} "
                  "samples, not AutoAttack." if pgd else ""),
        robcurve=block)


def entry_json(e: Entry) -> dict[str, Any]:
    """The entry as written to entry.json: the fields that were set, in the schema's order, strict JSON types."""
    return e.model_dump(mode="json", exclude_unset=True)
