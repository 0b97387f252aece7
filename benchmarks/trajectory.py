"""Trajectory cost on the zoo ViT: throughput against plain batched forwards, and peak memory.

    python benchmarks/trajectory.py                 # defaults: under 2 minutes on 2 busy CPU cores
    python benchmarks/trajectory.py --n 16 --t 201 --chunk-size 512 --repeats 7

(a) raw throughput: ``model(x)`` over N·T random images in chunks of ``--chunk-size``.
(b) trajectory throughput: ``trajectory(model, x, d, T=T)`` for N images (N·T images/s, same
    chunk size), and the ratio (b)/(a); METHOD.md §2 targets >= 0.9.
(c) peak memory as N·T grows tenfold at a fixed chunk size. Each setting runs in a fresh
    subprocess: after the model is built, the kernel's peak-RSS mark is reset (``5`` written
    to /proc/self/clear_refs, Linux), then ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` after
    the trajectory minus the resident set before it is the trajectory's peak working memory.
    (Where the reset is unavailable the import-time peak can hide it; the table says so.) The stored outputs (N·T·(D + K) floats) are printed beside it: they grow
    with N·T by design, the working memory should not. For contrast the largest N·T is also run
    unchunked (chunk = N·T), whose peak grows with N·T. On CUDA, torch.cuda.max_memory_allocated
    is reported too.

The model is ``load_model("zoo:vit-fmnist")`` when the zoo ships it, else the zoo ViT
architecture at random initialisation (``--random`` forces that); the cost does not depend on
the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_model(random_init: bool, device: str):
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.zoo.archs import build

    if not random_init:
        try:
            from robcurve.models import load_model

            return load_model("zoo:vit-fmnist", device=device), "zoo:vit-fmnist"
        except Exception as e:  # the zoo may not ship weights yet
            print(f"(zoo:vit-fmnist not available: {str(e).splitlines()[0][:100]}; using random init)")
    torch.manual_seed(0)
    return RobcurveModel(build("vit"), (0.286,), (0.353,)).to(device).eval(), "zoo vit architecture, random init"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(args: argparse.Namespace) -> None:
    from robcurve.geometry import get_direction, trajectory

    model, what = get_model(args.random, args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.n,), generator=g).to(args.device)
    d = get_direction(model, x, y)
    total = args.n * args.t
    chunks = [torch.rand(min(args.chunk_size, total - a), 1, 28, 28, generator=g).to(args.device)
              for a in range(0, total, args.chunk_size)]

    def raw() -> float:
        sync(args.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            for c in chunks:
                model(c)
        sync(args.device)
        return time.perf_counter() - t0

    def traj() -> float:
        sync(args.device)
        t0 = time.perf_counter()
        trajectory(model, x, d, T=args.t, E=0.1, chunk_size=args.chunk_size)
        sync(args.device)
        return time.perf_counter() - t0

    raw(), traj()  # warm-up
    t_raw, t_traj = [], []
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        t_raw.append(raw())
        t_traj.append(traj())
    r, t = total / min(t_raw), total / min(t_traj)
    paired = statistics.median(a / b for a, b in zip(t_raw, t_traj, strict=True))
    print(f"model: {what}; device {args.device}; torch threads {torch.get_num_threads()}")
    print(f"N={args.n} images x T={args.t} grid points = {total} forwards, chunk {args.chunk_size}, "
          f"{args.repeats} interleaved repeats")
    print(f"(a) raw batched forward : {r:9.1f} images/s best  (runs: {', '.join(f'{total / v:.0f}' for v in t_raw)})")
    print(f"(b) trajectory          : {t:9.1f} images/s best  (runs: {', '.join(f'{total / v:.0f}' for v in t_traj)})")
    print(f"    ratio (b)/(a)       : {t / r:9.3f} best-of, {paired:.3f} median of paired runs  (target >= 0.9)")


def current_rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> None:
    """One memory setting, in its own process: prints a JSON line."""
    from robcurve.geometry import trajectory

    model, _ = get_model(True, args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.n, 1, 28, 28, generator=g).to(args.device)
    d = (torch.randint(0, 2, x.shape, generator=g) * 2 - 1).float().to(args.device)
    with torch.no_grad():
        model(x[:1])
    try:  # reset the peak-RSS mark so ru_maxrss measures from here on
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    base = current_rss_kib() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tr = trajectory(model, x, d, T=args.t, chunk_size=args.chunk_size)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"base_kib": base, "peak_kib": peak, "seconds": dt, "reset": reset,
           "outputs_bytes": tr.features.numel() * tr.features.element_size() + tr.logits.numel() * tr.logits.element_size()}
    if args.device.startswith("cuda"):
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    print("RESULT " + json.dumps(out))


def memory(args: argparse.Namespace) -> None:
    print(f"(c) peak memory (ru_maxrss of a fresh process; T={args.t}; MiB)")
    print(f"    {'N':>5} {'N*T':>7} {'chunk':>6} {'outputs':>8} {'working peak':>13} {'seconds':>8}")
    settings = [(n, True) for n in args.mem_n] + [(max(args.mem_n), False)]  # contrast: largest N unchunked
    for n, chunked in settings:
        total = n * args.t
        cs = args.chunk_size if chunked else total
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--n", str(n), "--t", str(args.t),
               "--chunk-size", str(cs), "--device", args.device]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"    N={n}: child failed:\n{res.stderr[-2000:]}")
            continue
        r = json.loads(line[7:])
        work = (r["peak_kib"] - r["base_kib"]) / 1024
        extra = f"  cuda peak {r['cuda_peak_bytes'] / 2**20:.1f} MiB" if "cuda_peak_bytes" in r else ""
        print(f"    {n:>5} {total:>7} {cs:>6} {r['outputs_bytes'] / 2**20:>8.1f} {work:>13.1f} {r['seconds']:>8.1f}"
              f"{'' if chunked else '  (unchunked)'}{extra}{'' if r['reset'] else '  (peak not reset)'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=4, help="images for the throughput run (default 4)")
    p.add_argument("--t", type=int, default=201, help="grid points T (default 201)")
    p.add_argument("--chunk-size", type=int, default=512, help="images per forward (default 512)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved timing repeats (default 5)")
    p.add_argument("--mem-n", type=int, nargs="*", default=[2, 20], help="N values of the memory runs (default 2 20)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--random", action="store_true", help="use the random-init ViT even if the zoo has weights")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    throughput(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
