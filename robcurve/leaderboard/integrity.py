"""What keeps a leaderboard folder trustworthy: content digests, bounded reads, locks, atomic pairs.

- **Content digest.** A verified entry is signed by its content: ``verification.content_digest``
  is a sha256 over every field that is not free text (:data:`FREE_TEXT`): the ranking
  fields (``clean_acc``, ``autoattack_acc``, ``reported`` ...), ``n``, the model block (family,
  spec, weights' sha256), the series marker, dataset, threat model, eps, config, sample ids,
  every metric row and the rest of the verification record. Changing any of them after
  verification (adding ``"autoattack_acc": 99.9``, flipping the family) breaks the digest.
- **Bounded reads.** Only regular files (no symlinks, FIFOs or devices) inside the
  leaderboard root are read, with size limits; gzip'd samples are decompressed in a stream
  and refused past a cap; JSON nesting is limited.
- **Locks and atomic pairs.** ``submit`` and ``import`` hold ``<root>/.lock`` (``fcntl``), write
  into ``<root>/.staging/`` and move files into place samples first, entry last, so an entry
  never exists without its samples; a leftover staging folder is cleaned (and reported) by the
  next writer holding the lock.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robcurve.errors import RobcurveError

#: Entry fields that are free text (display only): not signed, never ranked on.
FREE_TEXT = ("name", "authors", "venue", "link", "paper", "footnote", "id")
MAX_ENTRY_BYTES = 8 << 20  # an entry JSON (the shipped ones are 30-60 kB)
MAX_IMPORT_BYTES = 1 << 20  # a RobustBench model_info file (theirs are < 2 kB)
MAX_SAMPLES_BYTES = 256 << 20  # decompressed per-sample file (the shipped ones are 1-3 MB)
SAMPLES_RATIO = 200  # and at most this many times the compressed size (gzip of JSON reaches ~10-20x)
MAX_DEPTH = 64  # JSON nesting (entries need 6)


def content_digest(entry: dict[str, Any]) -> str:
    """sha256 over every field of an entry dict except free text and the digest itself."""
    d = {k: v for k, v in entry.items() if k not in FREE_TEXT}
    rb = dict(d.get("robcurve") or {})
    ver = dict(rb.get("verification") or {})
    ver.pop("content_digest", None)
    if rb:
        rb["verification"] = ver or None
        d["robcurve"] = rb
    return hashlib.sha256(json.dumps(d, sort_keys=True, allow_nan=False).encode()).hexdigest()


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to exhaust)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict | list):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _nesting_of_text(text: str) -> int:
    """The bracket depth of JSON text without parsing it (strings skipped), so deep text is refused first."""
    depth = best = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


def loads(text: str, where: str) -> Any:
    """``json.loads`` with a nesting limit and one clear error (no RecursionError, no traceback)."""
    if _nesting_of_text(text) > MAX_DEPTH:
        raise RobcurveError(f"{where} nests JSON deeper than {MAX_DEPTH} levels (an entry needs 6)", where=where,
                            fix="pass a leaderboard entry or RobustBench model_info file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RobcurveError(f"{where} is not valid JSON: {e.msg}", where=f"{where}:{e.lineno}:{e.colno}",
                            fix="fix the JSON syntax") from None
    except RecursionError:  # pragma: no cover - the text check above refuses it first
        raise RobcurveError(f"{where} nests JSON too deeply", where=where, fix="pass a leaderboard entry") from None


def check_regular(path: Path, root: Path | None = None, what: str = "file") -> os.stat_result:
    """Refuse anything but a regular file (a symlink, FIFO, device, folder), and files outside ``root``."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise RobcurveError(f"no {what} {path}", where=str(path), fix="check the path") from None
    if stat.S_ISLNK(st.st_mode):
        raise RobcurveError(f"{path} is a symbolic link: leaderboard files must be regular files", where=str(path),
                            fix="replace the link by the file itself (links can point outside the folder or at devices)")
    if not stat.S_ISREG(st.st_mode):
        kind = "folder" if stat.S_ISDIR(st.st_mode) else "FIFO" if stat.S_ISFIFO(st.st_mode) else "device or special file"
        raise RobcurveError(f"{path} is a {kind}, not a regular {what}", where=str(path), fix="pass a regular JSON file")
    if root is not None:
        r = Path(root).resolve()
        if r not in path.resolve().parents:
            raise RobcurveError(f"{path} lies outside the leaderboard folder {root}", where=str(path),
                                fix="keep entries inside the leaderboard folder")
    return st


def read_bounded(path: Path, limit: int, root: Path | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (checked before and while reading)."""
    st = check_regular(path, root, what)
    if st.st_size > limit:
        raise RobcurveError(f"{path} is {st.st_size:,} bytes, more than the {limit:,} a {what} may have",
                            where=str(path), fix=f"a {what} is small; check that this is the right file")
    with open(path, "rb") as f:  # the size can change between stat and read: read at most limit + 1
        data = f.read(limit + 1)
    if len(data) > limit:
        raise RobcurveError(f"{path} grew past {limit:,} bytes while being read", where=str(path), fix="retry")
    return data


def read_text(path: Path, limit: int, root: Path | None = None, what: str = "file") -> str:
    data = read_bounded(path, limit, root, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RobcurveError(f"{path} is not UTF-8 text", where=str(path), fix="pass a JSON file") from None


def gunzip_bounded(path: Path, root: Path | None = None) -> bytes:
    """Decompress a gzip file in a stream, refusing past min(cap, ratio x compressed size)."""
    st = check_regular(path, root, "per-sample file")
    limit = min(MAX_SAMPLES_BYTES, max(1 << 20, SAMPLES_RATIO * st.st_size))
    out = bytearray()
    try:
        with gzip.open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 16)
                if not chunk:
                    break
                out += chunk
                if len(out) > limit:
                    raise RobcurveError(f"{path} decompresses to more than {limit:,} bytes ({st.st_size:,} compressed): "
                                        "refused as a decompression bomb", where=str(path),
                                        fix="per-sample files are written by robcurve submit; submit the run again")
    except (OSError, EOFError) as e:
        raise RobcurveError(f"the per-sample file {path} is damaged ({type(e).__name__})", where=str(path),
                            fix="submit the run again") from None
    return bytes(out)


# -- writing -------------------------------------------------------------------------------------
@contextlib.contextmanager
def locked(root: Path, timeout: float = 600.0) -> Iterator[None]:
    """Hold ``<root>/.lock`` (an exclusive ``fcntl`` lock): concurrent writers run one after the other."""
    import fcntl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > timeout:
                    raise RobcurveError(f"another robcurve process holds {root / '.lock'} for more than {timeout:.0f} s",
                                        where=str(root), fix="wait for it to finish, or remove a stale lock file") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def clean_staging(root: Path) -> list[str]:
    """Remove leftover staging folders (call with the lock held); return what was removed."""
    st = Path(root) / ".staging"
    removed = []
    if st.is_dir():
        for p in sorted(st.iterdir()):
            removed.append(p.name)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    return removed


def staging_dir(root: Path) -> Path:
    d = Path(root) / ".staging" / uuid.uuid4().hex[:12]
    d.mkdir(parents=True)
    return d


def commit_files(pairs: list[tuple[Path, Path]], stage: Path) -> None:
    """Move staged files into place in the order given (samples before entries), then drop ``stage``."""
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    shutil.rmtree(stage, ignore_errors=True)


def append_history(root: Path, record: dict[str, Any]) -> Path:
    """One JSON line per replaced entry in ``<root>/history.jsonl`` (what was replaced, by digest)."""
    p = Path(root) / "history.jsonl"
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return p


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
