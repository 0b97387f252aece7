"""Train (or resume) every model of the population (issue 25) and ship each as it finishes.

    .venv/bin/python scripts/train_population.py [--threads 1] [--work runs/population] [--only NAME ...]

Each recipe trains in ``<work>/<name>`` (resumable checkpoints every 100 steps and at each
epoch end; an interrupted run continues exactly where it stopped), then its weights and model
card are written into ``robcurve/zoo`` (``zoo:pop-...``). A model whose card already exists
with the same recipe is skipped, so the script can be re-run across sessions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from robcurve.zoo import CARDS
from robcurve.zoo.card import finalize
from robcurve.zoo.recipes import POPULATION
from robcurve.zoo.train import train


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 leaves the other core free)")
    ap.add_argument("--work", type=Path, default=Path("runs/population"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    todo = [r for r in POPULATION if not args.only or r.name in args.only]
    for i, recipe in enumerate(todo, 1):
        card = CARDS / f"{recipe.name}.json"
        if card.is_file() and json.loads(card.read_text()).get("recipe") == recipe.to_dict():
            print(f"[{i}/{len(todo)}] {recipe.name}: shipped already", flush=True)
            continue
        t0 = time.time()
        print(f"[{i}/{len(todo)}] {recipe.name}: training {recipe.epochs} epochs of {recipe.arch}", flush=True)
        train(recipe, args.work / recipe.name, data_dir=args.data_dir, progress=sys.stderr.isatty())
        c = finalize(recipe, args.work / recipe.name, data_dir=args.data_dir)
        print(f"[{i}/{len(todo)}] {recipe.name}: test acc {100 * c['test_acc']:.2f}%, PGD acc "
              f"{c['robust_acc']['acc']}, train {c['training']['time_s']:.0f} s, wall {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
