"""Where entries live: ``<root>/<dataset>/<threat_model>/<id>.json`` (+ ``<id>.samples.jsonl.gz``).

Entry ids are safe file names; a path that would leave the leaderboard folder is refused.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from robcurve.errors import RobcurveError
from robcurve.leaderboard.schema import SAFE_ID, Entry

DEFAULT_ROOT = Path("leaderboards")
SAMPLES_SUFFIX = ".samples.jsonl.gz"


def check_id(entry_id: str) -> str:
    if not isinstance(entry_id, str) or not SAFE_ID.fullmatch(entry_id) or ".." in entry_id:
        raise RobcurveError(f"entry id {entry_id!r} is not a safe file name: it could leave the leaderboard folder",
                            fix="use letters, digits, '.', '_' and '-' only (no '/', no '..'), e.g. --id my-model")
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


def read_entry(path: str | Path) -> Entry:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RobcurveError(f"no entry file {p}", where=str(p), fix="check the path") from None
    except UnicodeDecodeError:
        raise RobcurveError(f"{p} is not UTF-8 text", where=str(p), fix="pass a JSON entry file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RobcurveError(f"{p} is not valid JSON: {e.msg}", where=f"{p}:{e.lineno}:{e.colno}",
                            fix="fix the JSON syntax") from None
    if isinstance(data, dict):  # RobustBench's layout <dataset>/<threat>/<name>.json names what the file may not
        data = dict(data)
        data.setdefault("threat_model", p.parent.name)
        data.setdefault("dataset", p.parent.parent.name)
    e = parse_entry(data, str(p))
    if e.id is None:
        e.id = p.name.removesuffix(".json")
    return e


def load_entries(root: str | Path = DEFAULT_ROOT, dataset: str | None = None, threat: str | None = None) -> list[Entry]:
    """Every entry under ``root`` (optionally one dataset / threat model), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise RobcurveError(f"no leaderboard folder {root}", where=str(root),
                            fix="run from the repository root or pass --root")
    out = []
    for p in sorted(root.glob("*/*/*.json")):
        if dataset and p.parts[-3] != dataset or threat and p.parts[-2] != threat:
            continue
        e = read_entry(p)
        if e.dataset != p.parts[-3] or e.threat_model != p.parts[-2]:
            raise RobcurveError(f"{p} says dataset {e.dataset!r} / threat model {e.threat_model!r} but lies in "
                                f"{p.parts[-3]}/{p.parts[-2]}", where=str(p), fix="move it to the matching folder")
        out.append(e)
    return out


def write_json(path: Path, obj: Any) -> None:
    from robcurve.run.store import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_samples(path: Path, rows: list[tuple[int, int, str, int, dict]], meta: dict[str, Any]) -> None:
    """The per-sample rows (and the store's meta) as gzip'd JSON lines, deterministic bytes."""
    from robcurve.run.store import atomic_write_bytes

    lines = [json.dumps({"meta": meta}, sort_keys=True)]
    lines += [json.dumps([s, si, m, lab, v], sort_keys=True) for s, si, m, lab, v in rows]
    data = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    atomic_write_bytes(path, data)


def read_samples(path: Path) -> tuple[list[tuple[int, int, str, int, dict]], dict[str, Any]]:
    if not path.is_file():
        raise RobcurveError(f"the per-sample results of this entry are missing: {path}", where=str(path),
                            fix="submit with robcurve submit, which writes them next to the entry")
    try:
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        meta = json.loads(lines[0])["meta"]
        rows = [tuple(json.loads(ln)) for ln in lines[1:] if ln]
    except (OSError, EOFError, ValueError, KeyError, IndexError) as e:
        raise RobcurveError(f"the per-sample file {path} is damaged ({type(e).__name__})", where=str(path),
                            fix="submit the run again") from None
    return [tuple(r) for r in rows], meta  # type: ignore[misc]
