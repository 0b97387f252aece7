"""``robcurve track``: the same measurements on every checkpoint of a training series (METHOD.md §7).

Each checkpoint is one ordinary bench run (:func:`robcurve.run.runner.run`) with the same
config except the model, in ``<out>/<series>/epoch_<k>/``; an interrupted track therefore
resumes where it stopped, and every checkpoint sees the same seeded samples and the same
direction rule. The runs are read back with :func:`robcurve.load_run` and tabulated as metric
rows with condition ``epoch=k`` (the condition the metric was measured under, e.g. its
curvature scale, is kept in ``measured_at``).

Series are named on the command line as:

* ``zoo:NAME`` — the whole shipped training series of a zoo model (``robcurve zoo list``);
* ``zoo:NAME@0,5,15`` — those epochs of it (``zoo:NAME@3`` one checkpoint);
* a folder — every ``*.safetensors`` / ``*.pt`` / ``*.pth`` file in it, each with its JSON
  sidecar (``file:`` models) or, with ``arch``, loaded as ``arch`` plus that weights file;
  the epoch is the last number in the file name (``epoch_005.safetensors`` → 5);
* any other model specs (``file:ckpt_3.pt``, ``timm:...``): gathered, in the given order, into
  one series ``checkpoints`` with the epoch taken from the name (else the position).
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robcurve.errors import RobcurveError
from robcurve.run.config import RunConfig
from robcurve.run.results import load_run
from robcurve.run.store import atomic_write_text, save_png

CKPT_SUFFIXES = (".safetensors", ".pt", ".pth")

#: (metric, condition prefix or None) drawn against epoch and shown in the Markdown table
TRACKED: tuple[tuple[str, str | None], ...] = (
    ("clean_acc", None), ("curvedness_median", None), ("curved_share", None), ("logit_curvedness_median", None),
    ("angle_mean", "h="), ("travel_median", None), ("spearman_curvedness_travel", None), ("sece", None), ("ece", None),
)


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of a series: ``model`` is the spec a bench run loads (``weights`` for timm: archs)."""

    series: str
    epoch: int
    model: str
    weights: str | None = None

    @property
    def folder(self) -> str:
        return f"epoch_{self.epoch:03d}"


@dataclass
class TrackResult:
    """A finished track: its folder, the per-checkpoint run folders, the tidy table and the files written."""

    out: Path
    runs: list[tuple[Checkpoint, Path]]
    table: pd.DataFrame = field(repr=False)
    families: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def value(self, series: str, epoch: int, metric: str, measured_at: str | None = None) -> float:
        """The value of ``metric`` at checkpoint ``epoch`` of ``series`` (NaN when absent)."""
        t = self.table
        sel = (t["series"] == series) & (t["epoch"] == epoch) & (t["metric"] == metric)
        if measured_at is not None:
            sel &= t["measured_at"] == measured_at
        v = t.loc[sel, "value"]
        return float(v.iloc[0]) if len(v) and v.iloc[0] is not None else math.nan

    def trends(self, metrics: tuple[tuple[str, str | None], ...] | None = None, seed: int = 0) -> pd.DataFrame:
        """The trend test of METHOD.md §7, per series and tracked metric: Spearman of the per-checkpoint
        value with the epoch over the checkpoints from epoch 1 (the initialisation is shown, not tested
        against), exact permutation p (up to 9 checkpoints, else seeded draws), Holm over the rows;
        and, per metric, the Transformer − CNN difference of the series' rho (descriptive: one series
        per model)."""
        # deferred: scipy, needed only here
        from robcurve import acrossmodels as A

        recs = []
        for s, g in self.table.groupby("series", sort=False):
            for m, pre in metrics or TRACKED:
                sub = _pick(g, m, pre)
                sub = sub[(sub["epoch"] >= 1) & sub["value"].notna()].sort_values("epoch")
                if len(sub) < 3:
                    continue
                tt = A.spearman_test(sub["epoch"].to_numpy(float), sub["value"].to_numpy(float), seed)
                recs.append({"series": s, "family": self.families.get(s, ""), "metric": m, "checkpoints": len(sub),
                             "epochs": f"{int(sub['epoch'].min())}-{int(sub['epoch'].max())}", "rho": tt.rho,
                             "p": tt.p, "p_min": tt.p_min, "method": tt.method})
        df = pd.DataFrame(recs)
        if not df.empty:
            df["p_holm"] = A.adjust(df["p"].tolist(), "holm")
        return df


def _epoch_of(name: str, default: int) -> int:
    nums = re.findall(r"\d+", Path(name).stem)
    return int(nums[-1]) if nums else default


def _zoo_series(name: str, epochs: str | None) -> list[Checkpoint]:
    # deferred: safetensors, torch, needed only here
    from robcurve.zoo import card

    c = card(name)
    shipped = [int(s["epoch"]) for s in c.get("series", [])]
    if epochs is None:
        if not shipped:
            raise RobcurveError(f"zoo model {name!r} ships no training series",
                                fix="name one with a series (robcurve zoo list, column 'series'), or list checkpoints")
        chosen = shipped
    else:
        try:
            chosen = [int(e) for e in epochs.split(",") if e.strip()]
        except ValueError:
            raise RobcurveError(f"bad epochs {epochs!r} in zoo:{name}@{epochs}", fix="write zoo:NAME@0,5,15") from None
        missing = [e for e in chosen if e not in shipped]
        if missing:
            raise RobcurveError(f"zoo model {name!r} has no checkpoint of epoch(s) {missing}",
                                fix=f"choose from {', '.join(map(str, shipped)) or 'none'}")
    return [Checkpoint(name, e, f"zoo:{name}@{e}") for e in sorted(dict.fromkeys(chosen))]


def _folder_series(folder: Path, arch: str | None) -> list[Checkpoint]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in CKPT_SUFFIXES)
    if not files:
        raise RobcurveError(f"no checkpoint files ({', '.join(CKPT_SUFFIXES)}) in {folder}", where=str(folder),
                            fix="pass a folder of checkpoints, or the checkpoints themselves")
    out = []
    for i, f in enumerate(files):
        ep = _epoch_of(f.name, i)
        if f.with_suffix(".json").is_file():
            out.append(Checkpoint(folder.name, ep, f"file:{f}"))
        elif arch:
            out.append(Checkpoint(folder.name, ep, arch, str(f)))
        else:
            raise RobcurveError(f"checkpoint {f} has no JSON sidecar {f.with_suffix('.json').name}", where=str(f),
                                fix="write the sidecar (see `robcurve models`, source file) or pass --arch timm:<arch>")
    eps = [c.epoch for c in out]
    if len(set(eps)) != len(eps):
        raise RobcurveError(f"two checkpoints in {folder} have the same epoch number", where=str(folder),
                            fix="name the files with distinct epoch numbers, e.g. epoch_003.safetensors")
    return sorted(out, key=lambda c: c.epoch)


def parse_series(args: list[str], arch: str | None = None) -> list[Checkpoint]:
    """The checkpoints named by the command-line arguments (see the module docstring), series by series."""
    if not args:
        raise RobcurveError("no series given", fix="e.g. robcurve track zoo:vit-fmnist zoo:resnet-fmnist")
    out: list[Checkpoint] = []
    loose: list[str] = []
    for a in args:
        p = Path(a)
        if a.startswith("zoo:"):
            name, _, eps = a[4:].partition("@")
            out += _zoo_series(name, eps or None)
        elif p.is_dir():
            out += _folder_series(p, arch)
        else:
            loose.append(a)
    for i, a in enumerate(loose):
        tail = a.split(":", 1)[-1]
        ep = _epoch_of(tail, i)
        if ep in [c.epoch for c in out if c.series == "checkpoints"]:
            ep = i
        out.append(Checkpoint("checkpoints", ep, a))
    keys = [(c.series, c.epoch) for c in out]
    if len(set(keys)) != len(keys):
        raise RobcurveError("a checkpoint is named twice (same series and epoch)", fix="name each checkpoint once")
    return out


def checkpoint_config(cfg: RunConfig, ck: Checkpoint, run_dir: Path) -> RunConfig:
    """``cfg`` with the model (and weights) of ``ck`` and ``run_dir`` as its folder; everything else the same."""
    d = cfg.model_dump()
    d.update(model=ck.model, weights=ck.weights, out=str(run_dir))
    return RunConfig.model_validate(d)


def track(series: list[Checkpoint] | list[str], cfg: RunConfig, out: str | Path, *, arch: str | None = None,
          fresh: bool = False, progress: bool | None = None, verbose: bool = True, summarize: bool = True
          ) -> TrackResult:
    """Measure ``cfg`` on every checkpoint (resumable) and write ``track.csv/.md/.json/.png`` into ``out``.

    Args:
        series: checkpoints (:func:`parse_series`) or the command-line strings naming them.
        cfg: the run config; only its model (and weights, out) change per checkpoint.
        out: the track folder; checkpoint runs go to ``<out>/<series>/epoch_<k>/``.
        summarize: write each checkpoint run's own summary and plots (the track reads the stores either way).
    """
    # deferred: safetensors, torch, needed only here
    from robcurve.run.runner import run, slug

    t0 = time.time()
    cks = parse_series(series, arch) if series and isinstance(series[0], str) else list(series)  # type: ignore[arg-type]
    out = Path(out)
    runs = []
    for i, ck in enumerate(cks):
        run_dir = out / slug(ck.series) / ck.folder
        if verbose:
            print(f"robcurve track: [{i + 1}/{len(cks)}] {ck.series} epoch {ck.epoch} ({ck.model}) -> {run_dir}",
                  file=sys.stderr)
        run(checkpoint_config(cfg, ck, run_dir), fresh=fresh, progress=progress, verbose=verbose, summarize=summarize)
        runs.append((ck, run_dir))
    res = load_track(out, runs)
    res.files = write_outputs(res)
    res.elapsed_s = time.time() - t0
    return res


def load_track(out: str | Path, runs: list[tuple[Checkpoint, Path]] | None = None) -> TrackResult:
    """Read a track folder back (from its ``track.json`` index, or the given runs) with :func:`robcurve.load_run`."""
    out = Path(out)
    if runs is None:
        idx = out / "track.json"
        if not idx.is_file():
            raise RobcurveError(f"{out} holds no track (no track.json)", where=str(out), fix="run robcurve track first")
        data = json.loads(idx.read_text(encoding="utf-8"))
        runs = [(Checkpoint(r["series"], int(r["epoch"]), r["model"], r.get("weights")), out / r["run"])
                for r in data["checkpoints"]]
    recs = []
    families: dict[str, str] = {}
    for ck, run_dir in runs:
        r = load_run(run_dir)
        fam = (r.entry.get("robcurve", {}).get("model") or {}).get("family", "other")
        families.setdefault(ck.series, fam)
        for row in r.rows:
            recs.append({"series": ck.series, "family": fam, "epoch": ck.epoch, "model": ck.model,
                         "metric": row.metric, "condition": f"epoch={ck.epoch}", "measured_at": row.condition,
                         "value": row.value, "lo": row.lo, "hi": row.hi, "interval": row.interval, "n": row.n,
                         "unit": row.unit, "direction": row.direction, "run": str(run_dir)})
    cols = ["series", "family", "epoch", "model", "metric", "condition", "measured_at", "value", "lo", "hi",
            "interval", "n", "unit", "direction", "run"]
    return TrackResult(out, list(runs), pd.DataFrame(recs, columns=cols), families)


def _pick(t: pd.DataFrame, metric: str, prefix: str | None) -> pd.DataFrame:
    sub = t[t["metric"] == metric]
    if prefix is not None and len(sub):
        conds = [c for c in dict.fromkeys(sub["measured_at"]) if str(c).startswith(prefix)]
        sub = sub[sub["measured_at"] == conds[0]] if conds else sub.iloc[0:0]
    return sub


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown(res: TrackResult) -> str:
    """One row per checkpoint: the tracked metrics with their 95% intervals; the scale each was measured at below."""
    t = res.table
    head = ["series", "family", "epoch"]
    body = []
    scales: dict[str, str] = {}
    for (s, e), g in t.groupby(["series", "epoch"], sort=False):
        row = [s, res.families.get(s, ""), str(e)]
        for m, pre in TRACKED:
            sub = _pick(g, m, pre)
            if not len(sub):
                row.append("")
                continue
            r = sub.iloc[0]
            if r["measured_at"]:
                scales[m] = str(r["measured_at"])
            ci = f" [{_fmt(r['lo'])}, {_fmt(r['hi'])}]" if r["lo"] is not None and not pd.isna(r["lo"]) else ""
            row.append(f"{_fmt(r['value'])}{ci}")
        body.append(row)
    names = [m if pre is None else f"{m} ({scales.get(m, pre)})" for m, pre in TRACKED]
    keep = [i for i in range(len(TRACKED)) if any(b[3 + i] for b in body)]
    from tabulate import tabulate

    tab = tabulate([b[:3] + [b[3 + i] for i in keep] for b in body], headers=head + [names[i] for i in keep],
                   tablefmt="github", disable_numparse=True)
    notes = [f"- `{m}` measured at: {c}" for m, c in scales.items()]
    tr = res.trends()
    if not tr.empty:
        notes += ["", "Trends over training (METHOD.md §7): Spearman of each checkpoint's value with the epoch, "
                  "from epoch 1 (the initialisation is shown above, never tested against), exact permutation p, "
                  "Holm over these rows; the unit is the checkpoint of one training run.", "",
                  tabulate([[r["series"], r["family"], r["metric"], r["epochs"], _fmt(r["rho"]), _fmt(r["p"]),
                             _fmt(r["p_holm"])] for _, r in tr.iterrows()],
                           headers=["series", "family", "metric", "epochs", "rho", "exact p", "Holm p"],
                           tablefmt="github", disable_numparse=True)]
    n = t["n"].dropna()
    return ("# robcurve track\n\n" + f"{len(res.runs)} checkpoints; values with 95% intervals (method per metric: "
            "`robcurve metrics`); n per checkpoint in track.csv"
            + (f" (clean n = {int(n.max())})" if len(n) else "") + ".\n\n" + tab + "\n\n" + "\n".join(notes) + "\n")


def figure(res: TrackResult) -> Any:
    """Each tracked statistic against epoch, one line per series (Transformer and CNN series on one figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t = res.table
    present = [(m, pre) for m, pre in TRACKED if len(_pick(t, m, pre))]
    cols = 3
    rows = max(1, math.ceil(len(present) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    styles = {"transformer": "-", "cnn": "--"}
    for ax, (m, pre) in zip(axes.flat, present, strict=False):
        sub_all = _pick(t, m, pre)
        for s in dict.fromkeys(t["series"]):
            sub = sub_all[sub_all["series"] == s].sort_values("epoch")
            if not len(sub):
                continue
            x = sub["epoch"].to_numpy(float)
            y = pd.to_numeric(sub["value"], errors="coerce").to_numpy(float)
            fam = res.families.get(s, "")
            line = ax.plot(x, y, styles.get(fam, ":"), marker="o", ms=3, label=f"{s} ({fam})")[0]
            lo = pd.to_numeric(sub["lo"], errors="coerce").to_numpy(float)
            hi = pd.to_numeric(sub["hi"], errors="coerce").to_numpy(float)
            if np.isfinite(lo).any():
                ax.fill_between(x, np.where(np.isfinite(lo), lo, np.nan), np.where(np.isfinite(hi), hi, np.nan),
                                color=line.get_color(), alpha=0.15)
        cond = sub_all["measured_at"].iloc[0] if len(sub_all) else ""
        ax.set_title(f"{m}" + (f"\n({cond})" if cond else ""), fontsize=8)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    if present:
        axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_outputs(res: TrackResult) -> list[str]:
    """``track.csv`` (tidy rows), ``track.md``, ``track.png`` and ``track.json`` (the index) in the track folder."""
    out = res.out
    atomic_write_text(out / "track.csv", res.table.to_csv(index=False))
    atomic_write_text(out / "track.md", markdown(res))
    save_png(figure(res), out / "track.png")
    index = {"checkpoints": [{"series": c.series, "epoch": c.epoch, "model": c.model, "weights": c.weights,
                              "family": res.families.get(c.series, ""), "run": str(Path(p).relative_to(out))
                              if Path(p).is_relative_to(out) else str(p)} for c, p in res.runs]}
    atomic_write_text(out / "track.json", json.dumps(index, indent=2) + "\n")
    return ["track.csv", "track.md", "track.png", "track.json"]
