"""Two versions of robcurve on the same run, interleaved: wall time and whether the rows agree (issue 26).

    .venv/bin/python benchmarks/versions.py --before 1564aef               # vs the working tree
    .venv/bin/python benchmarks/versions.py --before 1564aef --n 20 --repeats 2 --models zoo-vit,zoo-resnet,zoo-swin

Each version is a ``git worktree`` of its commit (``--after`` defaults to this checkout). Both run
``python -m robcurve bench`` with the *same* config file (``--config``, default the leaderboard
config of the working tree) and model, in that version's folder (so ``-m robcurve`` imports that
version), on a quiet machine, alternating before / after per repeat; bytecode caching on (as on a
user's machine). The table gives the median and range of the end-to-end wall (imports, model,
measurements, summary with figures) and, per version pair, whether every per-sample row of every
measurement both versions stored is the same (``identical``), equal within 1e-6 relative, or
differs: the reuse of shared passes must not change a number. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import header, parse_models, table

ROOT = Path(__file__).resolve().parents[1]
SPECS = {"zoo-vit": "zoo:vit-fmnist", "zoo-resnet": "zoo:resnet-fmnist", "zoo-swin": "zoo:swin-fmnist",
         "zoo-convnext": "zoo:convnext-fmnist"}


def worktree(ref: str, where: Path) -> Path:
    r = subprocess.run(["git", "worktree", "add", "--detach", "-f", str(where), ref], cwd=ROOT, capture_output=True,
                       text=True)
    if r.returncode:
        raise SystemExit(f"versions.py: cannot check out {ref!r} ({r.stderr.strip().splitlines()[-1]}). "
                         "Fix: pass a commit, tag or branch of this repository (git log --oneline)")
    return where


def bench(code: Path, spec: str, cfg: Path, n: int, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    cmd = [sys.executable, "-m", "robcurve", "bench", "--config", str(cfg), "--model", spec, "--n", str(n),
           "--out", str(out), "--no-progress", "--fresh"]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"versions.py: robcurve bench failed in {code} for {spec}:\n{r.stderr.strip()[-2000:]}")
    return time.perf_counter() - t


def rows(db: Path) -> dict[tuple[str, int], dict]:
    con = sqlite3.connect(db)
    try:
        return {(m, s): json.loads(v) for s, m, v in con.execute("select sample, measurement, value from results")}
    finally:
        con.close()


def close(a, b, rel: float = 1e-6) -> bool:  # type: ignore[no-untyped-def]
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return a == b or abs(a - b) <= rel * max(abs(a), abs(b))
    return a == b


def compare(a: Path, b: Path) -> str:
    ra, rb = rows(a), rows(b)
    common = sorted(set(ra) & set(rb))
    same = sum(ra[k] == rb[k] for k in common)
    near = sum(close(ra[k], rb[k]) for k in common)
    ms = sorted({m for m, _ in common})
    return f"{same}/{len(common)} identical, {near}/{len(common)} within 1e-6 ({', '.join(ms)})"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git ref of the earlier version")
    ap.add_argument("--after", default=None, help="git ref of the later version (default: this checkout)")
    ap.add_argument("--models", default="zoo-vit,zoo-resnet,zoo-swin")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "leaderboard-fmnist.yaml")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    header(f"versions: {args.before} vs {args.after or 'working tree'}, {args.config.name}, n = {args.n}", 0)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        codes = {"before": worktree(args.before, t / "before"),
                 "after": worktree(args.after, t / "after") if args.after else ROOT}
        try:
            out_rows = []
            for m in parse_models(args.models):
                walls: dict[str, list[float]] = {"before": [], "after": []}
                for _ in range(args.repeats):
                    for v in ("before", "after"):
                        walls[v].append(bench(codes[v], SPECS[m], args.config.resolve(), args.n, t / f"{m}-{v}"))
                        print(f"  {m} {v}: {walls[v][-1]:.1f} s", file=sys.stderr, flush=True)
                agree = compare(t / f"{m}-before" / "results.sqlite", t / f"{m}-after" / "results.sqlite")
                med = {v: statistics.median(w) for v, w in walls.items()}
                out_rows.append([m, f"{med['before']:.1f} [{min(walls['before']):.1f}-{max(walls['before']):.1f}]",
                                 f"{med['after']:.1f} [{min(walls['after']):.1f}-{max(walls['after']):.1f}]",
                                 f"{med['before'] / med['after']:.2f}", agree])
            print(table(out_rows, ["model", "before wall s", "after wall s", "speed-up", "rows"]))
        finally:
            for v in ("before", "after"):
                if codes[v] != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(codes[v])], cwd=ROOT,
                                   capture_output=True)


if __name__ == "__main__":
    main()
