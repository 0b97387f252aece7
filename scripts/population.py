"""Measure and submit every shipped population model to the population board; resumable.

    .venv/bin/python scripts/population.py [--threads 1] [--only NAME ...] [--render]

For each ``zoo:pop-*`` model whose card is shipped (scripts/train_population.py ships them as
they finish): ``robcurve bench --config configs/population-fmnist.yaml`` into
``runs/population-bench/<name>`` (a stopped run resumes), then ``robcurve submit`` to
``leaderboards/population`` with id ``<name>`` (seed 0, 4 samples re-measured). An entry that
is already on the board is skipped. ``--render`` re-renders the board's pages at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from robcurve.cli import main as cli
from robcurve.zoo import card, zoo_names

ROOT = Path("leaderboards/population")
CONFIG = "configs/population-fmnist.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--render", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in zoo_names() if card(n).get("population") and (not args.only or n in args.only)]
    for i, name in enumerate(names, 1):
        if (ROOT / "fashion-mnist" / "Linf" / f"{name}.json").is_file():
            print(f"[{i}/{len(names)}] {name}: on the board already", flush=True)
            continue
        t0 = time.time()
        out = Path("runs/population-bench") / name
        rc = cli(["bench", "--config", CONFIG, "--model", f"zoo:{name}", "--out", str(out), "--no-progress",
                  "--threads", str(args.threads)])
        if rc:
            print(f"[{i}/{len(names)}] {name}: bench failed ({rc})", file=sys.stderr, flush=True)
            continue
        rc = cli(["submit", str(out), "--root", str(ROOT), "--id", name, "--seed", "0", "--verify-n", "4"])
        print(f"[{i}/{len(names)}] {name}: {'submitted' if rc == 0 else f'submit failed ({rc})'} in "
              f"{time.time() - t0:.0f} s", flush=True)
    if args.render:
        return cli(["leaderboard", "render", "--root", str(ROOT)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
