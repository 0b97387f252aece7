"""The result store: one SQLite file per run (WAL mode), one row per (sample, measurement).

A row is written in the same transaction as the other rows of its (batch, measurement), so a
run killed at any point (Ctrl-C or SIGKILL) leaves only whole batches behind, and the same
command continues where it stopped. The run's config digest and code version are stored in
``meta``; a run whose config changed refuses to mix results.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from robcurve.errors import RobcurveError
from robcurve.run.config import PERFORMANCE_FIELDS, config_changes, dotted_get

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    sample INTEGER NOT NULL,        -- position in the run's sample selection
    split_index INTEGER NOT NULL,   -- index into the dataset's official split
    measurement TEXT NOT NULL,
    label INTEGER NOT NULL,
    value TEXT NOT NULL,            -- JSON object of the measurement's per-sample fields
    config_digest TEXT NOT NULL,
    code_version TEXT NOT NULL,
    PRIMARY KEY (sample, measurement)
);
"""


def json_safe(v: Any) -> Any:
    """JSON-safe: NaN/inf become None (never a sentinel number)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


_clean = json_safe


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = sqlite3.connect(str(self.path), timeout=30)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise RobcurveError(f"cannot open the result store {self.path}: {e}", where=str(self.path),
                                fix="move the damaged file away or rerun with --fresh") from None

    def close(self) -> None:
        self.con.close()

    # -- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> Any:
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, **items: Any) -> None:
        with self.con:
            self.con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, json.dumps(_clean(v), sort_keys=True)) for k, v in items.items()])

    def bind(self, digest: str, config: dict, code_version: str) -> None:
        """Tie the store to one config; refuse a different one."""
        old = self.get_meta("config_digest")
        if old is not None and old != digest:
            old_cfg = self.get_meta("config") or {}
            changed = config_changes(old_cfg, config)
            fix = "rerun with --fresh to start over, or choose another --out"
            perf = [c for c in changed if c in PERFORMANCE_FIELDS]
            if changed and len(perf) == len(changed):  # e.g. a new default chunk size: setting it back resumes
                sets = " ".join(f"--set {c.removeprefix('options.')}={json.dumps(dotted_get(old_cfg, c))}" for c in perf)
                fix = f"to resume with the stored setting, add {sets}; or {fix}"
            raise RobcurveError(f"the run in {self.path.parent} was made with a different config (changed: "
                                f"{', '.join(changed) or '?'})", where=str(self.path), fix=fix)
        self.set_meta(config_digest=digest, config=config, code_version=code_version)

    # -- rows ------------------------------------------------------------------------------
    def done(self, measurement: str, samples: Iterable[int]) -> set[int]:
        s = list(samples)
        if not s:
            return set()
        q = f"SELECT sample FROM results WHERE measurement=? AND sample IN ({','.join('?' * len(s))})"
        return {r[0] for r in self.con.execute(q, (measurement, *s))}

    def write(self, measurement: str, rows: list[tuple[int, int, int, dict]], digest: str, code_version: str,
              seconds: float | None = None) -> None:
        """rows: (sample, split_index, label, value dict); one transaction (with the compute time, if given)."""
        with self.con:
            self.con.executemany(
                "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(s, si, measurement, lab, json.dumps(_clean(v), sort_keys=True), digest, code_version) for s, si, lab, v in rows])
            if seconds is not None:
                row = self.con.execute("SELECT value FROM meta WHERE key='compute_s'").fetchone()
                acc = json.loads(row[0]) if row else {}
                acc[measurement] = round(acc.get(measurement, 0.0) + seconds, 3)
                self.con.execute("INSERT OR REPLACE INTO meta VALUES ('compute_s', ?)", (json.dumps(acc, sort_keys=True),))

    def count(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def rows(self, measurement: str | None = None) -> list[tuple[int, int, str, int, dict]]:
        q = "SELECT sample, split_index, measurement, label, value FROM results"
        args: tuple = ()
        if measurement:
            q += " WHERE measurement=?"
            args = (measurement,)
        q += " ORDER BY measurement, sample"
        out = []
        for a, b, c, d, e in self.con.execute(q, args):
            try:
                v = json.loads(e)
            except (TypeError, ValueError, RecursionError):
                v = None
            if not isinstance(v, dict):
                raise RobcurveError(f"the result store {self.path} holds a damaged row ({c} of sample {a}: not a JSON "
                                    "object)", where=str(self.path),
                                    fix="delete that row or rerun with --fresh (robcurve bench recomputes missing rows)")
            out.append((a, b, c, d, v))
        return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it over ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def png_bytes(fig: Any, dpi: int = 110) -> bytes:
    """A matplotlib figure as PNG bytes, then closed. No version string goes in the file (``Software``
    metadata left out): a figure depends on the results only, so rebuilt outputs are byte-stable."""
    import io
    import sys

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:  # a pyplot figure is registered there until closed (robcurve's own figures are not)
        plt.close(fig)
    return buf.getvalue()


def save_png(fig: Any, path: Path, dpi: int = 110) -> None:
    """Write a matplotlib figure as a PNG atomically (:func:`png_bytes`) and close it."""
    atomic_write_bytes(path, png_bytes(fig, dpi))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    import os
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def run_lock(folder: Path, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its ``.lock`` file) or refuse, naming the holder's pid."""
    import fcntl
    import os

    lock = Path(folder) / name
    fd = os.open(str(lock), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise RobcurveError(f"the run folder {folder} is in use by another robcurve process (pid {holder})",
                                where=str(folder), fix="wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)
