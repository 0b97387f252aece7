"""Where entries live: ``<root>/<dataset>/<threat_model>/<id>.json`` (+ ``<id>.samples.jsonl.gz``).

Entry ids are safe file names; a path that would leave the leaderboard folder is refused.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from robcurve.errors import RobcurveError
from robcurve.leaderboard.integrity import (
    MAX_ENTRY_BYTES,
    check_regular,
    gunzip_bounded,
    loads,
    read_text,
)
from robcurve.leaderboard.schema import SAFE_ID, Entry
from robcurve.run.store import atomic_write_bytes, atomic_write_text

DEFAULT_ROOT = Path("leaderboards")
SAMPLES_SUFFIX = ".samples.jsonl.gz"


def check_id(entry_id: str) -> str:
    if not isinstance(entry_id, str) or not SAFE_ID.fullmatch(entry_id) or ".." in entry_id:
        import re

        if isinstance(entry_id, str) and ("/" in entry_id or "\\" in entry_id or ".." in entry_id or entry_id.startswith(".")):
            why = "it could leave the leaderboard folder"
        else:
            why = "an id is a file name of letters, digits, '.', '_' and '-' (at most 120, starting with a letter or digit)"
        suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", str(entry_id)).strip("-._")[:120].replace("..", ".")
        raise RobcurveError(f"entry id {entry_id!r} is not a safe file name: {why}",
                            fix=(f"use e.g. --id {suggestion}" if suggestion else "use e.g. --id my-model")
                            + " (letters, digits, '.', '_' and '-' only; no '/', no '..')")
    return entry_id


def entry_path(root: Path, dataset: str, threat: str, entry_id: str) -> Path:
    """The entry file's path, checked to lie inside ``root``."""
    check_id(entry_id)
    for part, what in ((dataset, "dataset"), (threat, "threat model")):
        if not SAFE_ID.fullmatch(part) or ".." in part:
            raise RobcurveError(f"{what} {part!r} is not a safe folder name", fix="use a known dataset / threat model")
    root = Path(root)
    p = root / dataset / threat / f"{entry_id}.json"
    if root.resolve() not in p.resolve().parents:
        raise RobcurveError(f"entry path {p} would leave {root}", fix="choose a plain entry id")
    return p


def format_errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(entry)"
        msg = "missing field" if err["type"] == "missing" else err["msg"]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_entry(data: Any, where: str) -> Entry:
    if not isinstance(data, dict):
        raise RobcurveError(f"{where} must hold a JSON object, not {type(data).__name__}", where=where,
                            fix="write the entry as a JSON object")
    try:
        return Entry.model_validate(data)
    except ValidationError as e:
        raise RobcurveError(f"invalid leaderboard entry: {format_errors(e)}", where=where,
                            fix="correct the field(s) named (see robcurve/leaderboard/schema.py)") from None


def read_entry(path: str | Path, root: str | Path | None = None) -> Entry:
    """Read and validate one entry file: a regular file (inside ``root`` when given), bounded in size and depth."""
    p = Path(path)
    text = read_text(p, MAX_ENTRY_BYTES, Path(root) if root is not None else None, "leaderboard entry")
    data = raw = loads(text, str(p))
    if isinstance(data, dict):  # RobustBench's layout <dataset>/<threat>/<name>.json names what the file may not
        data = dict(data)
        data.setdefault("threat_model", p.parent.name)
        data.setdefault("dataset", p.parent.parent.name)
    e = parse_entry(data, str(p))
    if e.id is None:
        e.id = p.name.removesuffix(".json")
    e._raw = raw  # the file's JSON as written (data above is a copy with the folder's defaults)
    return e


def entry_files(root: Path, dataset: str | None = None, threat: str | None = None) -> tuple[list[Path], list[str]]:
    """The entry files under ``root`` (sorted) and, separately, what was passed over (non-regular files)."""
    files, passed = [], []
    for p in sorted(Path(root).glob("*/*/*.json")):
        if dataset and p.parts[-3] != dataset or threat and p.parts[-2] != threat:
            continue
        try:
            check_regular(p, root, "leaderboard entry")
        except RobcurveError as e:
            passed.append(str(e))
            continue
        files.append(p)
    return files, passed


def load_entries(root: str | Path = DEFAULT_ROOT, dataset: str | None = None, threat: str | None = None) -> list[Entry]:
    """Every entry under ``root`` (optionally one dataset / threat model), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise RobcurveError(f"no leaderboard folder {root}", where=str(root),
                            fix="run from the repository root, or pass --root DIR (command line) / root=DIR "
                                "(robcurve.leaderboard.load)")
    files, passed = entry_files(root, dataset, threat)
    for msg in passed:
        print(f"robcurve: warning: not read: {msg}", file=sys.stderr)
    out = []
    for p in files:
        e = read_entry(p, root)
        if e.dataset != p.parts[-3] or e.threat_model != p.parts[-2]:
            raise RobcurveError(f"{p} says dataset {e.dataset!r} / threat model {e.threat_model!r} but lies in "
                                f"{p.parts[-3]}/{p.parts[-2]}", where=str(p), fix="move it to the matching folder")
        out.append(e)
    return out


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_samples(path: Path, rows: list[tuple[int, int, str, int, dict]], meta: dict[str, Any]) -> None:
    atomic_write_bytes(path, samples_bytes(rows, meta))


def samples_bytes(rows: list[tuple[int, int, str, int, dict]], meta: dict[str, Any]) -> bytes:
    """The per-sample rows (and the store's meta) as gzip'd JSON lines, deterministic bytes."""
    lines = [json.dumps({"meta": meta}, sort_keys=True)]
    lines += [json.dumps([s, si, m, lab, v], sort_keys=True) for s, si, m, lab, v in rows]
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def read_samples(path: Path, root: Path | None = None) -> tuple[list[tuple[int, int, str, int, dict]], dict[str, Any]]:
    if not path.exists() and not path.is_symlink():
        raise RobcurveError(f"the per-sample results of this entry are missing: {path}", where=str(path),
                            fix="submit with robcurve submit, which writes them next to the entry")
    data = gunzip_bounded(path, root)

    def damaged(why: str) -> RobcurveError:
        return RobcurveError(f"the per-sample file {path} is damaged ({why})", where=str(path), fix="submit the run again")

    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise damaged("not UTF-8") from None
    if not lines:
        raise damaged("empty")
    head = loads(lines[0], f"{path} line 1")
    if not isinstance(head, dict) or not isinstance(head.get("meta"), dict):
        raise damaged("its first line is not the meta record")
    rows = []
    for i, ln in enumerate(lines[1:], 2):
        if not ln:
            continue
        r = loads(ln, f"{path} line {i}")
        if not (isinstance(r, list) and len(r) == 5 and isinstance(r[0], int) and isinstance(r[1], int)
                and isinstance(r[2], str) and isinstance(r[3], int) and isinstance(r[4], dict)):
            raise damaged(f"line {i} is not a [sample, index, measurement, label, values] row")
        rows.append(tuple(r))
    return rows, head["meta"]  # type: ignore[return-value]
