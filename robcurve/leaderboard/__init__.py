"""The robcurve leaderboard: validated entries, verified submissions, rendered tables and relations.

For papers::

    import robcurve.leaderboard as lb
    df = lb.load(dataset="fashion-mnist", threat="Linf")   # one row per model, metric columns with intervals
    lb.relations(df)                                        # Spearman(curvedness, ...) across models
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from robcurve.leaderboard.io import DEFAULT_ROOT, load_entries, read_entry
from robcurve.leaderboard.render import matched_pairs, relations, tidy
from robcurve.leaderboard.schema import Entry

__all__ = ["Entry", "load", "load_entries", "read_entry", "relations", "matched_pairs", "tidy", "import_robustbench"]


def load(dataset: str | None = None, threat: str | None = None, root: str | Path = DEFAULT_ROOT) -> pd.DataFrame:
    """The leaderboard as a tidy DataFrame: one row per model (ranked), metric value/lo/hi/n columns."""
    return tidy(load_entries(root, dataset, threat))


def import_robustbench(src: str | Path, root: str | Path = DEFAULT_ROOT, dataset: str | None = None,
                       threat: str | None = None, family: str | None = None) -> list[Path]:
    """Import RobustBench model_info JSON files (a file or a folder) as rows without robcurve measurements.

    Dataset and threat model come from the file, else from its folders (RobustBench's
    ``model_info/<dataset>/<threat>/<name>.json`` layout), else from the arguments.
    """
    import json

    from robcurve.errors import RobcurveError
    from robcurve.leaderboard.io import entry_path, parse_entry, write_json
    from robcurve.run.runner import slug

    src = Path(src)
    files = sorted(src.rglob("*.json")) if src.is_dir() else [src]
    if not files:
        raise RobcurveError(f"no JSON files in {src}", where=str(src), fix="pass a RobustBench model_info file or folder")
    written = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise RobcurveError(f"{f} is not a JSON file ({type(e).__name__})", where=str(f),
                                fix="pass RobustBench model_info JSON files") from None
        if not isinstance(data, dict):
            raise RobcurveError(f"{f} must hold a JSON object", where=str(f), fix="pass RobustBench model_info JSON files")
        data = dict(data)
        data.setdefault("name", f.stem)
        ds = data.get("dataset") or dataset or (f.parts[-3] if len(f.parts) >= 3 else None)
        th = data.get("threat_model") or threat or (f.parts[-2] if len(f.parts) >= 2 else None)
        data["dataset"], data["threat_model"] = ds, th
        data["imported"] = True
        data["id"] = slug(f.stem)
        if family:
            data["family_"] = family
        data.pop("robcurve", None)
        e = parse_entry(data, str(f))
        p = entry_path(Path(root), e.dataset, e.threat_model, e.id or slug(f.stem))
        if p.exists():
            old = read_entry(p)
            if old.robcurve is not None:
                raise RobcurveError(f"{p} already holds a measured entry", where=str(p),
                                    fix="remove it first, or import under another name")
        write_json(p, data)
        written.append(p)
    return written
