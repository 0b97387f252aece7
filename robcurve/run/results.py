"""Loading a finished run for analysis and papers: ``robcurve.load_run(path)``.

Reads the run's store only (no model is loaded): the typed metric rows, a tidy DataFrame of
them and the per-sample DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from robcurve.errors import RobcurveError
from robcurve.run.config import RunConfig
from robcurve.run.metrics import Row, rows_dataframe
from robcurve.run.store import Store
from robcurve.run.summary import build, samples_frame


def find_row(rows: Iterable[Row | Mapping[str, Any]], metric: str, condition: str | None = None) -> Any:
    """The row of ``metric`` (with ``condition``; default: the only or first condition) or None."""
    for r in rows:
        name = r.metric if isinstance(r, Row) else r.get("metric")
        cond = r.condition if isinstance(r, Row) else r.get("condition", "")
        if name == metric and (condition is None or cond == condition):
            return r
    return None


def metric_value(rows: Iterable[Row | Mapping[str, Any]], metric: str, condition: str | None = None) -> float:
    """The value of ``metric`` (NaN when absent or null)."""
    r = find_row(rows, metric, condition)
    if r is None:
        return math.nan
    v = r.value if isinstance(r, Row) else r.get("value")
    return math.nan if v is None else float(v)


@dataclass
class RunResults:
    """A finished run: its config, typed metric rows, per-sample frames and entry."""

    path: Path
    config: RunConfig
    rows: list[Row]
    frames: dict[str, pd.DataFrame] = field(repr=False)
    samples: pd.DataFrame = field(repr=False)
    entry: dict[str, Any] = field(repr=False)
    notes: list[str] = field(default_factory=list)

    def value(self, metric: str, condition: str | None = None) -> float:
        """The value of ``metric`` under ``condition`` (NaN when the row's value is null).

        Raises RobcurveError for an unknown metric (with the closest names) and for a metric
        reported under several conditions when ``condition`` is not given (listing them).
        """
        import difflib

        names = list(dict.fromkeys(r.metric for r in self.rows))
        if metric not in names:
            close = difflib.get_close_matches(metric, names, n=3)
            raise RobcurveError(f"this run has no metric {metric!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
                                fix=f"choose one of: {', '.join(names)}")
        conds = [r.condition for r in self.rows if r.metric == metric]
        if condition is None and len(conds) > 1:
            raise RobcurveError(f"metric {metric!r} is reported under {len(conds)} conditions: "
                                f"{', '.join(repr(c) for c in conds)}",
                                fix=f"pass condition=..., e.g. value({metric!r}, condition={conds[0]!r})")
        if condition is not None and condition not in conds:
            raise RobcurveError(f"metric {metric!r} has no condition {condition!r}",
                                fix=f"choose one of: {', '.join(repr(c) for c in conds)}")
        return metric_value(self.rows, metric, condition)

    def row(self, metric: str, condition: str | None = None) -> Row | None:
        return find_row(self.rows, metric, condition)

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy metrics: metric, condition, value, lo, hi, interval, n, unit, direction, measurement, ..."""
        return rows_dataframe(self.rows)

    def summary(self) -> pd.DataFrame:
        """The same tidy table (every result type has ``summary()`` and ``to_dataframe()``)."""
        return self.to_dataframe()


def load_run(path: str | Path) -> RunResults:
    """Load a run folder written by ``robcurve bench`` (its ``results.sqlite``); no model is loaded."""
    p = Path(path)
    db = p / "results.sqlite" if p.is_dir() else p
    if not db.is_file():
        raise RobcurveError(f"no result store at {db}", where=str(p), fix="pass a run folder written by robcurve bench")
    store = Store(db)
    try:
        s = build(store)
    finally:
        store.close()
    return RunResults(db.parent, s.cfg, s.rows, s.frames, samples_frame(s.frames), s.entry(), s.notes)
