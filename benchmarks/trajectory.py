"""Trajectory cost per architecture: throughput against raw forwards at their best batch size,
the batch size robcurve chooses, and peak working memory.

    python benchmarks/trajectory.py                     # every model, N = 32, T = 201, 5 repeats
    python benchmarks/trajectory.py --quick             # 3 models, N = 8, 2 repeats, no memory runs (< 2 min)
    python benchmarks/trajectory.py --models zoo-swin --threads 2 --repeats 7

Per model (benchmarks/_common.py), on N images along their FGSM directions, T grid points:

(a) **raw forwards**: ``model.logits_and_features`` over the same N·T inputs (built beforehand,
    so raw pays nothing for building them), at every candidate batch size (16 … 4096, one
    timing of at least ``--sweep-images`` images each); the three fastest are timed again in
    every repeat and the fastest of them is the reference (raw at its best batch size).
(b) **trajectory, default** (no flag: the batch size measured on first use and cached):
    the first call (the measurement happens during it, on its own chunks) and then the cached
    choice, interleaved with (a) at its best batch size; ratio = raw time / trajectory time.
(c) **trajectory at chunk 4096** (the old default), for reference.
(d) **peak working memory** (``--memory``; a fresh process per setting): the kernel's peak-RSS
    mark is reset (``5`` to /proc/self/clear_refs), then the peak (VmHWM) after the trajectory
    minus the resident set before it; at the default (auto, budget 512 MiB; the measurement on
    first use runs the candidates up to the cap, so this includes them) and at chunk 4096.

Fixed: the same images, directions and grid for every contender, the thread count, frozen
parameters; timings interleaved; ratios shown as median [min-max] over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    FAMILY,
    build_model,
    header,
    images,
    interleaved,
    loadavg,
    parse_models,
    ratios,
    setup_threads,
    spread,
    table,
)

QUICK_MODELS = "zoo-vit,zoo-resnet,timm-resnet18"


def inputs(name: str, n: int, t: int):
    from robcurve.geometry import get_direction

    model = build_model(name)
    x, y, what = images(name, model, n)
    d = get_direction(model, x, y)
    return model, x, y, d, what


def bench_model(name: str, args: argparse.Namespace) -> dict:
    from robcurve.geometry.trajectory import eps_grid, grid_inputs, trajectory
    from robcurve.memory import AUTO_CANDIDATES, clear_chunk_cache

    model, x, y, d, what = inputs(name, args.n, args.t)
    grid = eps_grid(args.t, 0.1)
    total = args.n * args.t
    flat = grid_inputs(x, d, grid, 0, total)
    print(f"\n## {name} ({FAMILY[name]}): {what}; N*T = {total}; load {loadavg()}")

    def raw(b: int, limit: int | None = None) -> None:
        stop = total if limit is None else min(total, limit)
        with torch.no_grad():
            for a in range(0, stop, b):
                model.logits_and_features(flat[a:min(a + b, stop)])

    # (a) sweep: images per second at each batch size
    sweep = {}
    for b in [c for c in AUTO_CANDIDATES if c <= total]:
        n_img = max(args.sweep_images, 2 * b)
        raw(b, b)  # warm-up at this shape
        t0 = time.perf_counter()
        raw(b, n_img)
        sweep[b] = min(n_img, total) / (time.perf_counter() - t0)
    top = sorted(sweep, key=sweep.get, reverse=True)[:3]  # the sweep is one timing each: keep three
    print("raw forwards, images/s by batch size: " + ", ".join(f"{b}: {r:.0f}" for b, r in sweep.items())
          + f"  -> best {top[0]}; the repeats time raw at {sorted(top)} and take the fastest each time")

    # (b) the default: first call measures, later calls use the cached choice
    clear_chunk_cache()
    t0 = time.perf_counter()
    first = trajectory(model, x, d, T=args.t, E=0.1)
    t_first = time.perf_counter() - t0
    choice = first.meta["chunk_choice"]
    top = sorted(set(top) | {choice["size"]})  # raw at the chosen size too, for the equal-chunk ratio
    contenders = {f"raw{b}": (lambda b=b: raw(b)) for b in top}
    contenders.update({
        "traj": lambda: trajectory(model, x, d, T=args.t, E=0.1),
        "traj_4096": lambda: trajectory(model, x, d, T=args.t, E=0.1, chunk_size=4096),
    })
    times, _ = interleaved(contenders, args.repeats)
    raw_t = [min(ts) for ts in zip(*(times[f"raw{b}"] for b in top), strict=True)]  # raw at its best, per repeat
    best_b = min(top, key=lambda b: min(times[f"raw{b}"]))
    times["raw"] = raw_t
    out = {"model": name, "best_b": best_b, "chosen": choice["size"], "rates": choice["rates"],
           "r_default": ratios(times["raw"], times["traj"]),
           "r_4096": ratios(times["raw"], times["traj_4096"]), "first": min(times["raw"]) / t_first,
           "t_first": t_first, "per_image": choice["per_image_bytes"], "cap": choice["cap"]}
    out["r_eq_same"] = ratios(times[f"raw{choice['size']}"], times["traj"])  # the default runs at the chosen size
    print(f"chosen batch size {choice['size']} (measured rates " + ", ".join(f"{b}: {r:.0f}" for b, r in sorted(choice['rates'].items()))
          + f" img/s; memory estimate {choice['per_image_bytes'] / 1024:.0f} KiB/image, cap {choice['cap']})")
    print(f"trajectory/raw at its best ({best_b}): default (cached) {spread(out['r_default'])}x, raw at the chosen "
          f"chunk {choice['size']} vs trajectory at it {spread(out['r_eq_same'])}x, "
          f"at chunk 4096 {spread(out['r_4096'])}x; first call (with the measurement) {out['first']:.2f}x "
          f"({t_first:.1f} s)")
    if args.memory:
        out["mem"] = {}
        for label, cs in (("auto", "auto"), ("4096", "4096")):
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--models", name, "--n", str(args.n),
                   "--t", str(args.t), "--chunk", cs, "--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"memory child failed: {res.stderr[-1500:]}")
                continue
            r = json.loads(line[7:])
            out["mem"][label] = r
        if out["mem"]:
            print("peak working memory (MiB): " + ", ".join(
                f"{k}: {v['work_mib']:.0f} (chunk {v['chunk']}, outputs {v['outputs_mib']:.0f})" for k, v in out["mem"].items()))
    return out


def child(args: argparse.Namespace) -> None:
    """One memory setting in a fresh process; prints a JSON line."""
    from robcurve.geometry.trajectory import trajectory

    name = args.models
    model, x, _, d, _ = inputs(name, args.n, args.t)
    with torch.no_grad():
        model(x[:1])
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False

    def status_kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith(field + ":"):
                    return int(ln.split()[1])
        return 0

    # VmHWM (reset by clear_refs) rather than ru_maxrss, which may keep a peak from before the reset
    base = status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cs = None if args.chunk == "auto" else int(args.chunk)
    tr = trajectory(model, x, d, T=args.t, E=0.1, chunk_size=cs)
    peak = status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outputs = tr.features.numel() * tr.features.element_size() + tr.logits.numel() * tr.logits.element_size()
    print("RESULT " + json.dumps({"work_mib": (peak - base) / 1024, "outputs_mib": outputs / 2**20,
                                  "chunk": tr.chunk_size, "reset": reset}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--n", type=int, default=32, help="images (default 32)")
    ap.add_argument("--t", type=int, default=201, help="grid points (default 201)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sweep-images", type=int, default=1024, help="images timed per batch size in the raw sweep")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; default 1)")
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True, help="peak-memory runs (subprocesses)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_MODELS}, N = 8, 2 repeats, no memory runs")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--chunk", default="auto", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    setup_threads(args.threads)
    if args.child:
        child(args)
        return
    if args.quick:
        args.models = args.models if args.models != "all" else QUICK_MODELS
        args.n, args.repeats, args.memory, args.sweep_images = min(args.n, 8), min(args.repeats, 2), False, 512
    header("robcurve trajectory vs raw forwards", args.threads)
    print("fixed: same inputs (N images x T grid points along the FGSM direction), thread count, frozen parameters; "
          "ratio = raw time at raw's best batch size / trajectory time, median [min-max] over interleaved repeats")
    res = [bench_model(m, args) for m in parse_models(args.models)]
    rows = [[r["model"], r["best_b"], r["chosen"], spread(r["r_default"]), f"{r['first']:.2f}", spread(r["r_eq_same"]),
             spread(r["r_4096"]),
             ", ".join(f"{k} {v['work_mib']:.0f}" for k, v in r.get("mem", {}).items()) or "-"] for r in res]
    print()
    print(table(rows, ["model", "raw best batch", "chosen batch", "default vs raw best (x)", "first call (x)",
                       "equal chunk: raw/traj (x)", "chunk 4096 (x)", "peak working MiB"]))
    print(f"\nload average at end {loadavg()}; goal: default >= 0.95x raw at its best batch size")


if __name__ == "__main__":
    main()
