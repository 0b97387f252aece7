"""``robcurve reproduce``: the findings of Kim et al. (AAAI 2024) as verdicts, from shipped per-sample files.

The report is a function of files (issue 24, METHOD.md §6–8): the verified entries of one
leaderboard folder (every model measured under the board's protocol, per-sample results
beside each entry) and the training series measured with the same protocol's window
measurement. :func:`reproduce` measures what is missing (the training series, as ``robcurve
track`` runs, resumable), exports each checkpoint's per-sample rows next to the report, lists
every input with its sha256 in ``inputs.json`` and writes the report;
:func:`robcurve.reproduce.study.build_report` (``robcurve reproduce --from-files DIR``) rebuilds
it from those files alone. The models themselves are measured and submitted to the board
beforehand (``scripts/population.py`` for the population board, ``robcurve bench`` +
``robcurve submit`` for any board of your own).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from robcurve.errors import RobcurveError
from robcurve.leaderboard.io import write_samples
from robcurve.leaderboard.submit import board_protocol, protocol_digest, shipped_rows
from robcurve.run.config import SHIPPED, RunConfig, load_config
from robcurve.run.store import Store

DEFAULT_BOARD = "leaderboards/population"
DEFAULT_CONFIG = "population-fmnist.yaml"  # the population board's protocol
DEFAULT_SERIES = ("zoo:vit-fmnist", "zoo:resnet-fmnist")
TRACK_MEASUREMENTS = ["clean", "travel", "window"]
QUICK_N = 16


def track_config(cfg: RunConfig, n: int | None = None, device: str | None = None) -> RunConfig:
    """The training-series config: the protocol's samples and window; clean, travel and window only."""
    d = cfg.model_dump()  # the protocol's sections (options: window settings) are kept
    d.update(measurements=list(TRACK_MEASUREMENTS), attack="none", out=None)
    if n is not None:
        d.update(n=n, batch_size=min(d.get("batch_size") or n, n))
    if device is not None:
        d["device"] = device
    return RunConfig.model_validate(d)


def series_specs(series: list[str] | None, quick: bool) -> list[str]:
    """The zoo series from epoch 1 (the initialisation is not a trained model): every shipped checkpoint, or in the
    quick mode the first, a middle and the last."""
    # deferred: safetensors, torch, needed only here
    from robcurve.zoo import card, zoo_names

    if series is not None:
        return [s for s in series if s.lower() != "none"]
    out = []
    for spec in DEFAULT_SERIES:
        name = spec.removeprefix("zoo:")
        if name not in zoo_names():
            continue
        eps = [int(s["epoch"]) for s in card(name).get("series", []) if int(s["epoch"]) >= 1]
        if quick and len(eps) > 3:
            eps = [eps[0], eps[len(eps) // 2], eps[-1]]
        if len(eps) >= 3:
            out.append(f"zoo:{name}@{','.join(map(str, eps))}")
    return out


def export_run(run_dir: Path, path: Path) -> None:
    """A finished run's per-sample rows and public meta as a ``.samples.jsonl.gz`` (the leaderboard's format)."""
    # deferred: pandas, needed only here
    from robcurve.run.summary import missing_rows

    store = Store(Path(run_dir) / "results.sqlite")
    try:
        missing = missing_rows(store)
        if missing:
            raise RobcurveError(f"the run {run_dir} is not finished: {missing}", where=str(run_dir),
                                fix="rerun robcurve reproduce to complete it")
        rows, meta = shipped_rows(store)
    finally:
        store.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_samples(path, rows, meta)


def reproduce(*, board: str | Path = DEFAULT_BOARD, dataset: str = "fashion-mnist", threat: str = "Linf",
              report_dir: str | Path | None = None, out: str | Path | None = None, series: list[str] | None = None,
              config: str | Path | None = None, n: int | None = None, quick: bool = False, device: str | None = None,
              fresh: bool = False, progress: bool | None = None, verbose: bool = True) -> dict[str, Any]:
    """Measure the training series (resumable), export every input, write ``inputs.json`` and the report.

    Returns :func:`robcurve.reproduce.study.build_report`'s dict plus ``elapsed_s``.
    """
    # deferred: pandas, scipy, needed only here
    from robcurve.reproduce.study import build_report, write_manifest

    # deferred: pandas, needed only here
    from robcurve.reproduce.track import parse_series, track

    # deferred: safetensors, torch, needed only here
    from robcurve.run.runner import slug

    t0 = time.time()
    board = Path(board)
    if not (board / dataset / threat).is_dir():
        raise RobcurveError(f"no leaderboard at {board / dataset / threat}", where=str(board),
                            fix="pass --board FOLDER holding <dataset>/<threat>/ entries (default leaderboards/population)")
    proto = board_protocol(board, dataset, threat)
    cfg_path = Path(config) if config else SHIPPED / (Path(proto["config"]).name if proto else DEFAULT_CONFIG)
    cfg = load_config(cfg_path)
    if proto is not None and proto.get("digest") and proto["digest"] != _protocol_digest(cfg):
        raise RobcurveError(f"{cfg_path} is not the protocol of {board} (digest {proto['digest']})", where=str(cfg_path),
                            fix="pass --config with the board's protocol config")
    rdir = Path(report_dir) if report_dir else Path("runs") / ("reproduce-quick" if quick else "reproduce") / "report"
    out = Path(out) if out else Path("runs") / ("reproduce-quick" if quick else "reproduce") / "track"
    tn = n or (QUICK_N if quick else None)
    tcfg = track_config(cfg, tn, device)
    specs = series_specs(series, quick)
    track_inputs: list[dict[str, Any]] = []
    if specs:
        if verbose:
            print(f"robcurve reproduce: training series {', '.join(specs)} (n = {tcfg.n}) -> {out}",
                  file=sys.stderr)
        res = track(parse_series(specs), tcfg, out, fresh=fresh, progress=progress, verbose=verbose,
                    summarize=False)
        for ck, run_dir in res.runs:
            f = rdir / "track" / slug(ck.series) / f"{ck.folder}.samples.jsonl.gz"
            export_run(run_dir, f)
            track_inputs.append({"series": ck.series, "family": res.families.get(ck.series, ""), "epoch": ck.epoch,
                                 "model": ck.model, "file": str(f)})
    settings = {"protocol": cfg_path.name, "protocol_digest": proto.get("digest") if proto else _protocol_digest(cfg),
                "track_n": tcfg.n, "series": specs}
    write_manifest(rdir, board, dataset, threat, track_inputs, settings)
    res2 = build_report(rdir)
    res2["elapsed_s"] = time.time() - t0
    return res2


def _protocol_digest(cfg: RunConfig) -> str:
    return protocol_digest(cfg.model_dump())
