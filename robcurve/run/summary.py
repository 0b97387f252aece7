"""A run's summary, leaderboard entry, CSVs and plots, built from its result store alone.

Every number comes from a registered metric (:mod:`robcurve.run.metrics`) as a typed row:
value, condition, n, interval and its method, unit, direction. Markdown (``summary.md``),
CSV (``summary.csv``) and JSON (``summary.json``, and the ``robcurve`` block of
``entry.json``) show the same rows; JSON is strict (no NaN or Infinity: null plus a note).
Nothing here loads the model: ``robcurve summarize RUN_DIR`` rebuilds every output of a
finished run, byte for byte. Outputs are replaced atomically (temporary file, rename).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import robcurve
from robcurve.errors import RobcurveError
from robcurve.leaderboard.schema import entry_from_summary, entry_json
from robcurve.naming import grid_step
from robcurve.run.config import RunConfig
from robcurve.run.metrics import Row, compute_rows, rows_dataframe
from robcurve.run.store import Store, atomic_write_text, save_png


class RowSource:
    """Stored rows and meta held in memory (a submission's per-sample file): the read side of a Store."""

    def __init__(self, rows: list[tuple[int, int, str, int, dict]], meta: dict[str, Any], path: str = "<rows>"):
        self._rows = sorted(rows, key=lambda r: (r[2], r[0]))
        self._meta = meta
        self.path = Path(path)

    def rows(self, measurement: str | None = None) -> list[tuple[int, int, str, int, dict]]:
        return [r for r in self._rows if measurement is None or r[2] == measurement]

    def get_meta(self, key: str) -> Any:
        return self._meta.get(key)


def frames(store: Store | RowSource) -> dict[str, pd.DataFrame]:
    """One DataFrame per measurement, one row per sample (nested dicts flattened with '.')."""
    by: dict[str, list[tuple]] = {}
    for sample, split_index, m, label, value in store.rows():
        by.setdefault(m, []).append((sample, split_index, label, value))
    out = {}
    for m, rows in by.items():
        df = pd.json_normalize([r[3] for r in rows], sep=".", max_level=0 if m == "trajectory" else None)
        df.insert(0, "label", [r[2] for r in rows])
        df.insert(0, "split_index", [r[1] for r in rows])
        df.insert(0, "sample", [r[0] for r in rows])
        out[m] = df.set_index("sample").sort_index()
    return out


def results_digest(store: Store | RowSource) -> str:
    """sha256 over every stored row (sample, split index, measurement, label, values)."""
    h = hashlib.sha256()
    for sample, split_index, m, label, value in store.rows():
        h.update(json.dumps([sample, split_index, m, label, value], sort_keys=True).encode())
    return h.hexdigest()


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def scale_of(cfg: RunConfig) -> dict[str, Any]:
    t = cfg.trajectory
    return {"E": t.E, "T": t.T, "step": grid_step(t.T, t.E), "region": t.region, "ladder": list(t.ladder),
            "curved_threshold": t.curved_threshold, "direction": cfg.direction.kind, "clamp": cfg.direction.clamp}


def notes_of(fr: dict[str, pd.DataFrame], cfg: RunConfig) -> list[str]:
    """What the rows cannot show by themselves: omitted conditions, censoring, empty samples."""
    notes = []
    if "trajectory" in fr:
        tr = fr["trajectory"]
        for c in [c for c in tr.columns if c.startswith("feat_angle_h")]:
            if not pd.to_numeric(tr[c], errors="coerce").notna().any():
                notes.append(f"ladder step {c.removeprefix('feat_angle_')} omitted: the grid (T={cfg.trajectory.T}, "
                             f"E={cfg.trajectory.E:g}) cannot hold it")
    if "clean" in fr and not fr["clean"]["correct"].astype(bool).any():
        notes.append("no sample is classified correctly: curvature and distance statistics have n = 0")
    if "travel" in fr:
        n = int((fr["travel"]["censored"].astype(bool) & fr["travel"]["correct"].astype(bool)).sum())
        if n:
            notes.append(f"{n} travel distance(s) censored at eps_max={cfg.travel.eps_max:g}: ranked above every "
                         "finite distance, never dropped")
    return notes


@dataclass(frozen=True)
class RunSummary:
    """A run's summary, built from its store alone (:func:`build`): the typed rows of every registered
    metric with the frames they came from, the run's scale and notes, and what the store says about the
    model, the data and the compute. The leaderboard entry is made from it by the leaderboard schema
    (:meth:`entry`). Read access by key (``s["frames"]``) is kept for measurement figure hooks."""

    cfg: RunConfig
    frames: dict[str, pd.DataFrame]
    rows: list[Row]
    scale: dict[str, Any]
    notes: list[str]
    model: dict[str, Any]
    dataset: dict[str, Any]
    compute_s: dict[str, float]
    results_digest: str
    n: int
    sample_ids: list[int]

    @property
    def name(self) -> str:
        """The model's display name: its alias, else its spec."""
        return self.model.get("extra", {}).get("alias") or self.model.get("spec") or self.cfg.model

    def row(self, metric: str) -> Row | None:
        """The first row of ``metric`` (None when it was not measured)."""
        return next((r for r in self.rows if r.metric == metric), None)

    def entry(self) -> dict[str, Any]:
        """The leaderboard entry (strict-JSON form), made by the leaderboard schema."""
        return entry_json(entry_from_summary(self))

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass(frozen=True)
class Outputs:
    """What :func:`write_outputs` wrote: the summary, its table, the figures' file names, the entry and summary.md."""

    summary: RunSummary
    table: str
    plots: list[str]
    entry: dict[str, Any]
    markdown: str

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def build(store: Store | RowSource) -> RunSummary:
    """The run's summary from its store: rows, scale, notes, model, dataset, config, digests."""
    cfg_dict = store.get_meta("config")
    if cfg_dict is None:
        raise RobcurveError(f"{store.path} holds no run (no config stored)", where=str(store.path),
                            fix="run robcurve bench first")
    cfg = RunConfig.model_validate(cfg_dict)
    fr = frames(store)
    if "clean" not in fr:
        raise RobcurveError(f"{store.path} holds no clean predictions yet", where=str(store.path),
                            fix="let the run finish (rerun the same bench command to resume it)")
    rows = compute_rows(fr, cfg)
    return RunSummary(cfg=cfg, frames=fr, rows=rows, scale=scale_of(cfg), notes=notes_of(fr, cfg),
                      model=store.get_meta("model") or {}, dataset=store.get_meta("dataset") or {},
                      compute_s=store.get_meta("compute_s") or {}, results_digest=results_digest(store),
                      n=len(fr["clean"]), sample_ids=[int(i) for i in fr["clean"]["split_index"].tolist()])


def dumps(obj: Any) -> str:
    """Strict JSON (raises on NaN/inf), indented, with a final newline."""
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def table(rows: list[Row], fmt: str = "github") -> str:
    """The summary table: numbers only in the value, lo, hi and n columns."""
    from tabulate import tabulate

    body = [(r.metric, r.condition, _fmt(r.value), _fmt(r.lo), _fmt(r.hi), r.interval, "" if r.n is None else r.n,
             r.unit, r.description + (f" ({r.note})" if r.note else "")) for r in rows]
    return tabulate(body, headers=["metric", "condition", "value", "lo", "hi", "interval", "n", "unit", "what"],
                    tablefmt=fmt, disable_numparse=True)


def header(s: RunSummary) -> str:
    cfg: RunConfig = s.cfg
    sc = s.scale
    name = s.name
    lines = [f"# {name} on {cfg.dataset} (n={s.n})", "",
             f"- model: `{s.model.get('spec', cfg.model)}` ({s.model.get('family', '?')}), "
             f"config digest `{cfg.digest()}`, robcurve {robcurve.__version__}",
             f"- curvature scale: direction {sc['direction']}, grid T={sc['T']} over [-{sc['E']:g}, {sc['E']:g}] "
             f"(step {sc['step']:.3g}), region {sc['region']}, curved when 1 - R^2 > {sc['curved_threshold']:g}",
             f"- attacks: backend {cfg.attack_backend}; PGD {cfg.pgd.norm} eps={cfg.pgd_eps():g}, {cfg.pgd.steps} steps",
             "- intervals: 95%, method per row; curvature and distances use correctly classified samples, "
             "calibration every sample"]
    if s.compute_s:
        lines.append(f"- compute time: {sum(s.compute_s.values()):.0f} s in all")
    for n in s.notes:
        lines.append(f"- note: {n}")
    return "\n".join(lines)


def samples_frame(fr: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The per-sample table (probability rows and plot data left out), one column per field."""
    wide = None
    for meas, df in fr.items():
        drop = [c for c in df.columns if c.endswith("probs") or c == "plot" or c.startswith("plot.")]
        df2 = df.drop(columns=drop).add_prefix(f"{meas}.")
        wide = df2 if wide is None else wide.join(df2, how="outer")
    return wide


# -- plots ------------------------------------------------------------------------------------
def plots(s: RunSummary, out: Path) -> list[str]:
    """Every measurement's figures (its ``plot`` hook, in run order), then the reliability diagram (clean and the
    first three corruption conditions). Returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")

    # deferred: torch, needed only here
    from robcurve.calibration import calibration, reliability_diagram

    # deferred: torch, needed only here
    from robcurve.run.measures import MEASUREMENTS, ordered

    fr, cfg, name = s.frames, s.cfg, s.name
    made: list[str] = []
    for m in ordered([k for k in fr if k in MEASUREMENTS]):
        hook = MEASUREMENTS.get(m).plot
        if hook is not None:
            made += hook(s, out)
    clean = fr["clean"]
    res = {"clean": calibration(np.stack([np.asarray(p, float) for p in clean["probs"]]), clean["label"].to_numpy(),
                                n_bins=cfg.calibration.n_bins, probs=True)}
    if "corruptions" in fr:
        c = fr["corruptions"]
        for key in [k.removesuffix(".conf") for k in c.columns if k.endswith(".conf")][:3]:
            probs = np.stack([np.asarray(p, float) for p in c[key + ".probs"]])
            res[key] = calibration(probs, c["label"].to_numpy(), n_bins=cfg.calibration.n_bins, probs=True)
    save_png(reliability_diagram(res, title=name), out / "reliability.png")
    made.append("reliability.png")
    return made


def missing_rows(store: Store | RowSource) -> str | None:
    """None when every measurement of the config is stored for every sample of the run, else what is missing."""
    cfg_dict = store.get_meta("config")
    if cfg_dict is None:
        return "no config stored"
    cfg = RunConfig.model_validate(cfg_dict)
    n = (store.get_meta("dataset") or {}).get("n")
    counts: dict[str, int] = {}
    for _, _, m, _, _ in store.rows():
        counts[m] = counts.get(m, 0) + 1
    if not isinstance(n, int):
        n = max(counts.values(), default=0)
    gaps = [f"{m} {counts.get(m, 0)}/{n}" for m in cfg.all_measurements() if counts.get(m, 0) != n]
    return f"{len(gaps)} measurement(s) incomplete ({', '.join(gaps)} samples stored)" if gaps else None


def write_outputs(store: Store, out: Path, partial: bool = False, plots_on: bool = True) -> Outputs:
    """Write entry.json, summary.md/.csv/.json, samples.csv and the plots; return the summary.

    ``plots_on=False`` (``--no-plots``) skips the figures (about 3 s of a summary: matplotlib and drawing);
    summary.md then says so, and every other output is the same.

    An incomplete run (rows missing) is refused unless ``partial``: then the summary says so
    on its first line and no ``entry.json`` is written (an incomplete run cannot be submitted).
    """
    missing = missing_rows(store)
    if missing and not partial:
        raise RobcurveError(f"the run in {out} is incomplete: {missing}", where=str(out),
                            fix="rerun the same robcurve bench command to finish it, or pass --partial for a summary "
                                "marked incomplete")
    s = build(store)
    out = Path(out)
    e = s.entry()
    rows_df = rows_dataframe(s.rows)
    made = plots(s, out) if plots_on else []
    warn = f"**INCOMPLETE RUN: {missing}; not submittable.**\n\n" if missing else ""
    tab = table(s.rows)
    md = f"{warn}{header(s)}\n\n{tab}\n\nPlots: {', '.join(made) if plots_on else 'not drawn (--no-plots)'}\n"
    atomic_write_text(out / "summary.md", md)
    atomic_write_text(out / "summary.csv", rows_df.to_csv(index=False))
    atomic_write_text(out / "summary.json", dumps(e["robcurve"]["metrics"]))
    atomic_write_text(out / "samples.csv", samples_frame(s.frames).to_csv())
    if missing:
        (out / "entry.json").unlink(missing_ok=True)
    else:
        atomic_write_text(out / "entry.json", dumps(e))  # last: its presence marks a complete set of outputs
    return Outputs(s, tab, made, e, md)


def summarize(run_dir: str | Path, partial: bool = False, plots_on: bool = True) -> Outputs:
    """Rebuild every output of a run folder from its store (no model is loaded)."""
    run_dir = Path(run_dir)
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise RobcurveError(f"no result store in {run_dir}", where=str(db), fix="pass a run folder written by robcurve bench")
    store = Store(db)
    try:
        return write_outputs(store, run_dir, partial=partial, plots_on=plots_on)
    finally:
        store.close()
