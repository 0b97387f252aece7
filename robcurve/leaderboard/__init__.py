"""The robcurve leaderboard: validated entries, verified submissions, rendered tables and relations.

For papers::

    import robcurve.leaderboard as lb
    df = lb.load(dataset="fashion-mnist", threat="Linf")   # one row per model, metric columns with intervals
    lb.relations(df)                                        # Spearman(curvedness, ...) across models
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robcurve.leaderboard.io import DEFAULT_ROOT, load_entries, read_entry

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# imported on first use (pandas): `robcurve --help` and commands that do not read a board stay fast
_API = {"Entry": "robcurve.leaderboard.schema", "relations": "robcurve.leaderboard.render",
        "matched_pairs": "robcurve.leaderboard.render", "tidy": "robcurve.leaderboard.render"}

__all__ = ["Entry", "load", "load_entries", "read_entry", "relations", "matched_pairs", "tidy", "import_robustbench"]


def __getattr__(name: str) -> Any:
    if name in _API:
        obj = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'robcurve.leaderboard' has no attribute {name!r}")


def load(dataset: str | None = None, threat: str | None = None, root: str | Path = DEFAULT_ROOT) -> pd.DataFrame:
    """The leaderboard as a tidy DataFrame: one row per model (ranked), metric value/lo/hi/n columns."""
    # deferred: the lazy package API (importing the package loads nothing until a name is used)
    from robcurve.leaderboard.io import load_entries

    # deferred: the lazy package API (importing the package loads nothing until a name is used)
    from robcurve.leaderboard.render import tidy

    return tidy(load_entries(root, dataset, threat))


def import_robustbench(src: str | Path, root: str | Path = DEFAULT_ROOT, dataset: str | None = None,
                       threat: str | None = None, family: str | None = None) -> list[Path]:
    """Import RobustBench model_info JSON files (a file or a folder) as rows without robcurve measurements.

    Dataset and threat model come from the file, else from its folders (RobustBench's
    ``model_info/<dataset>/<threat>/<name>.json`` layout), else from the arguments. Every file
    is read (regular files only, bounded size and depth) and validated before anything is
    written; then all are written under the board's lock, or none. Two files whose ids collide
    (``My Model.json`` and ``My-Model.json``) are refused with both names. Each row keeps its
    provenance: ``source: robustbench`` and the sha256 of the file it came from.
    """
    # deferred: the lazy package API (importing the package loads nothing until a name is used)
    from robcurve.errors import RobcurveError

    # deferred: the lazy package API (importing the package loads nothing until a name is used)
    from robcurve.leaderboard.integrity import (
        MAX_IMPORT_BYTES,
        clean_staging,
        commit_files,
        loads,
        locked,
        read_bounded,
        sha256_bytes,
        staging_dir,
    )

    # deferred: the lazy package API (importing the package loads nothing until a name is used)
    from robcurve.leaderboard.io import entry_path, parse_entry

    # deferred: the lazy package API (importing the package loads nothing until a name is used)
    from robcurve.run.runner import slug

    src, root = Path(src), Path(root)
    if not src.exists():
        raise RobcurveError(f"no such file or folder {src}", where=str(src), fix="pass a RobustBench model_info file or folder")
    files = sorted(p for p in src.rglob("*.json") if not p.is_dir()) if src.is_dir() else [src]
    if not files:
        raise RobcurveError(f"no JSON files in {src}", where=str(src), fix="pass a RobustBench model_info file or folder")
    planned: dict[Path, tuple[Path, dict]] = {}
    for f in files:
        raw = read_bounded(f, MAX_IMPORT_BYTES, None, "RobustBench model_info file")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RobcurveError(f"{f} is not UTF-8 text", where=str(f), fix="pass RobustBench model_info JSON files") from None
        data = loads(text, str(f))
        if not isinstance(data, dict):
            raise RobcurveError(f"{f} must hold a JSON object", where=str(f), fix="pass RobustBench model_info JSON files")
        data = dict(data)
        data.setdefault("name", f.stem)
        ds = data.get("dataset") or dataset or (f.parts[-3] if len(f.parts) >= 3 else None)
        th = data.get("threat_model") or threat or (f.parts[-2] if len(f.parts) >= 2 else None)
        data["dataset"], data["threat_model"] = ds, th
        data["imported"] = True
        data["id"] = slug(f.stem)
        data["source"], data["source_sha256"] = "robustbench", sha256_bytes(raw)
        if family:
            data["family_"] = family
        data.pop("robcurve", None)
        e = parse_entry(data, str(f))
        p = entry_path(root, e.dataset, e.threat_model, e.id or slug(f.stem))
        if p in planned:
            raise RobcurveError(f"{planned[p][0]} and {f} would both become entry {p.name} (ids collide)", where=str(f),
                                fix="rename one of the two files; nothing was imported")
        if p.exists() or p.is_symlink():
            raise RobcurveError(f"{p} already exists (importing {f})", where=str(p),
                                fix="remove it first or rename the file to import; nothing was imported")
        planned[p] = (f, data)
    written = []
    with locked(root):
        clean_staging(root)
        stage = staging_dir(root)
        moves = []
        for i, (p, (_, data)) in enumerate(planned.items()):
            tmp = stage / f"{i:06d}.json"
            tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            moves.append((tmp, p))
        for _, p in moves:
            if p.exists():
                raise RobcurveError(f"{p} was written meanwhile by another process", where=str(p),
                                    fix="rerun the import; nothing was imported")
        commit_files(moves, stage)
        written = [p for _, p in moves]
    return written
