"""The whole pipeline against its forward/backward floor, and on a busy machine (issue 26).

    .venv/bin/python benchmarks/pipeline.py                      # zoo ViT, ResNet, Swin; leaderboard config, n = 8
    .venv/bin/python benchmarks/pipeline.py --models zoo-vit --n 16 --config configs/population-fmnist.yaml
    .venv/bin/python benchmarks/pipeline.py --busy               # + the slowdown next to a competing process
    .venv/bin/python benchmarks/pipeline.py --fixed              # + fixed cost (n = 1 run, summarize)

**Efficiency.** One in-process run of the config per model, with every image that enters the
model counted (a counter on the model's input normalisation: forwards = images through the
network, backwards = images whose input gradient was taken), per measurement (each registered
run function is wrapped; a pass shared through the batch cache is counted where it is first
made). The floor is what those passes cost in plain torch, measured in the same process right
before and right after the run (the faster counts: the machine's speed drifts), as sustained rates
(calls repeated for ``--floor-seconds`` per batch size, total time over total images; the fastest
single call's per-image time is printed beside it: on a shared machine it catches moments faster
than the speed a run sees over tens of seconds): the per-image time at the
best of batch sizes 16 / 64 / 256 of a no-grad forward (t_f) and of a forward + input-gradient
backward (t_fb), so floor = F·t_f + B·(t_fb − t_f). Efficiency =
floor / measured time of the measurement; "other" is the run's time outside the measurements
(loading, checks, the store, summary and plots).

**Busy machine.** The same config as a ``robcurve bench`` subprocess, first alone, then with one
competing CPU-bound process on the machine (``--hog loop``: a Python busy loop; ``--hog torch``:
torch matrix products on 2 threads, i.e. another torch job), for four thread settings: the
default (torch's threads = the CPUs allowed; robcurve sets ``OMP_WAIT_POLICY=PASSIVE`` itself when
other work keeps a CPU busy at start, see ``robcurve/cpu.py``), ``OMP_WAIT_POLICY=ACTIVE`` (the
default before that choice), ``OMP_WAIT_POLICY=PASSIVE`` always, and ``--threads 1``. Each setting's slowdown = busy wall / its own quiet wall; the last
column compares each busy wall with the default's quiet wall. Repeats are interleaved
(quiet and busy alternate per setting).

Nothing here is asserted: it prints what it measured (torch version, threads, load average at
the start). The README's "Performance" section quotes its output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, header, loadavg, parse_models, table  # noqa: E402

#: the competing process: a Python busy loop (one core), or torch matrix products with 2 threads (another
#: torch job, e.g. a second robcurve run: both sides spin in OpenMP barriers)
HOGS = {"loop": "while True: pass",
        "torch": "import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\nwhile True: a @ a"}
SPECS = {"zoo-vit": "zoo:vit-fmnist", "zoo-resnet": "zoo:resnet-fmnist", "zoo-swin": "zoo:swin-fmnist",
         "zoo-convnext": "zoo:convnext-fmnist"}


# -- counting --------------------------------------------------------------------------------------
class Passes:
    """Images through the network (forwards) and input gradients (backwards), per current measurement."""

    def __init__(self) -> None:
        self.current = "other"
        self.f: dict[str, int] = {}
        self.b: dict[str, int] = {}
        self.t: dict[str, float] = {}

    def install(self, model: torch.nn.Module) -> None:
        orig = model.normalize

        def counted(x: torch.Tensor) -> torch.Tensor:
            out = orig(x)
            k, n = self.current, int(x.shape[0])
            self.f[k] = self.f.get(k, 0) + n
            if out.requires_grad:
                out.register_hook(lambda g, k=k, n=n: self._back(k, n, g))
            return out

        model.normalize = counted  # type: ignore[method-assign]

    def _back(self, k: str, n: int, g: torch.Tensor) -> torch.Tensor:
        self.b[k] = self.b.get(k, 0) + n
        return g

    def wrap(self, name: str, fn):  # type: ignore[no-untyped-def]
        def run(*a, **kw):  # type: ignore[no-untyped-def]
            prev, self.current = self.current, name
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t
                self.current = prev

        return run


def floor_costs(model: torch.nn.Module, x: torch.Tensor, seconds: float = 1.0) -> tuple[float, float, int, int, float, float]:
    """(t_f, t_fb, best batch f, best batch fb, min t_f, min t_fb): seconds per image of a no-grad forward and of a
    forward + input-gradient backward, sustained: calls repeated for ``seconds`` per batch size (16 / 64 / 256), total
    time over total images, at the batch size with the best rate; and, for comparison, the fastest single call's
    per-image time (what a best-of-few-calls floor would use)."""
    def rate(fn, xb: torch.Tensor) -> tuple[float, float]:
        fn(xb)  # warm
        n, t0, fastest = 0, time.perf_counter(), float("inf")
        while True:
            t1 = time.perf_counter()
            fn(xb)
            fastest = min(fastest, time.perf_counter() - t1)
            n += len(xb)
            el = time.perf_counter() - t0
            if el >= seconds:
                return el / n, fastest / len(xb)

    def fwd(xb: torch.Tensor) -> None:
        with torch.no_grad():
            model(xb)

    def fwd_bwd(xb: torch.Tensor) -> None:
        xg = xb.clone().requires_grad_(True)
        torch.autograd.grad(model(xg).sum(), xg)

    best_f = best_fb = min_f = min_fb = float("inf")
    bf = bfb = 0
    for bs in (16, 64, 256):
        xb = x.repeat((bs + len(x) - 1) // len(x), 1, 1, 1)[:bs].contiguous()
        (tf, mf), (tfb, mfb) = rate(fwd, xb), rate(fwd_bwd, xb)
        min_f, min_fb = min(min_f, mf), min(min_fb, mfb)
        if tf < best_f:
            best_f, bf = tf, bs
        if tfb < best_fb:
            best_fb, bfb = tfb, bs
    return best_f, best_fb, bf, bfb, min_f, min_fb


def efficiency(name: str, args: argparse.Namespace) -> tuple[list[list[str]], tuple[float, float, float, float]]:
    import robcurve
    import robcurve.run.runner as R
    from robcurve.run.config import load_config
    from robcurve.run.measures import MEASUREMENTS, load_all

    spec = SPECS[name]
    model = robcurve.load_model(spec)
    model.eval().requires_grad_(False)
    x = robcurve.load_dataset("fashion-mnist-embedded", n=64, seed=0).images.float()
    t_f, t_fb, bf, bfb, min_f, min_fb = floor_costs(model, x, args.floor_seconds)
    passes = Passes()
    load_all()
    saved = {}
    for n in MEASUREMENTS.names():
        m = MEASUREMENTS.get(n)
        saved[n] = m
        MEASUREMENTS.add(n, dataclasses.replace(m, run=passes.wrap(n, m.run)), replace=True)
    orig_load = R.load_model

    def load_counted(*a, **kw):  # type: ignore[no-untyped-def]
        mdl = orig_load(*a, **kw)
        passes.install(mdl)
        return mdl

    R.load_model = load_counted
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(args.config, {"model": spec, "n": args.n, "batch_size": min(args.n, 25),
                                            "out": str(Path(tmp) / "run")})
            t0 = time.perf_counter()
            R.run(cfg, fresh=True, progress=False, verbose=False, summarize=True)
            wall = time.perf_counter() - t0
    finally:
        R.load_model = orig_load
        for n, m in saved.items():
            MEASUREMENTS.add(n, m, replace=True)
    # the floor again after the run (the machine's speed drifts): each cost is the faster of the two measurements
    t_f2, t_fb2, bf2, bfb2, min_f2, min_fb2 = floor_costs(model, x, args.floor_seconds)
    min_f, min_fb = min(min_f, min_f2), min(min_fb, min_fb2)
    if t_f2 < t_f:
        t_f, bf = t_f2, bf2
    if t_fb2 < t_fb:
        t_fb, bfb = t_fb2, bfb2
    rows = []
    tot_floor = tot_time = 0.0
    for k in sorted(set(passes.t) | set(passes.f), key=lambda k: -passes.t.get(k, 0.0)):
        f, b, t = passes.f.get(k, 0), passes.b.get(k, 0), passes.t.get(k, 0.0)
        fl = f * t_f + b * (t_fb - t_f)
        tot_floor += fl
        tot_time += t
        rows.append([name, k, f"{f / args.n:.0f}", f"{b / args.n:.0f}", f"{fl:.2f}", f"{t:.2f}",
                     f"{fl / t:.2f}" if t > 0 else "–"])
    other = wall - tot_time
    rows.append([name, "(outside measurements)", "", "", "", f"{other:.2f}", ""])
    rows.append([name, "**whole run**", f"{sum(passes.f.values()) / args.n:.0f}", f"{sum(passes.b.values()) / args.n:.0f}",
                 f"{tot_floor:.2f}", f"{wall:.2f}", f"**{tot_floor / wall:.2f}** (measurements only {tot_floor / tot_time:.2f})"])
    print(f"{name}: t_f {1e3 * t_f:.3f} ms/img (batch {bf}), t_fb {1e3 * t_fb:.3f} ms/img (batch {bfb}) sustained; "
          f"fastest single call {1e3 * min_f:.3f} / {1e3 * min_fb:.3f} ms/img; "
          f"n = {args.n}; load average now {loadavg()}", flush=True)
    nf, nb = sum(passes.f.values()), sum(passes.b.values())
    return rows, (tot_floor / wall, tot_floor / tot_time, wall, (nf * min_f + nb * (min_fb - min_f)) / wall)


# -- busy machine ------------------------------------------------------------------------------------
def bench_wall(spec: str, args: argparse.Namespace, env_extra: dict[str, str], extra: list[str], n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "robcurve", "bench", "--config", str(args.config), "--model", spec, "--n", str(n),
               "--batch-size", str(min(n, 25)), "--out", str(Path(tmp) / "run"), "--no-progress", *extra]
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env_extra
        t = time.perf_counter()
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if r.returncode != 0:
            raise SystemExit(f"bench failed ({' '.join(cmd)}):\n{r.stderr[-2000:]}")
        return wall


def busy(name: str, args: argparse.Namespace) -> list[list[str]]:
    spec = SPECS[name]
    settings = {"default (auto wait policy)": ({}, []), "OMP_WAIT_POLICY=ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
                "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, []), "--threads 1": ({}, ["--threads", "1"])}
    quiet: dict[str, list[float]] = {k: [] for k in settings}
    loaded: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(args.repeats):
        for k, (env, extra) in settings.items():
            quiet[k].append(bench_wall(spec, args, env, extra, args.busy_n))
            hog = subprocess.Popen([sys.executable, "-c", HOGS[args.hog]])
            try:
                time.sleep(0.5)
                loaded[k].append(bench_wall(spec, args, env, extra, args.busy_n))
            finally:
                hog.kill()
                hog.wait()
    ref = statistics.median(quiet["default (auto wait policy)"])
    rows = []
    for k in settings:
        q, b = statistics.median(quiet[k]), statistics.median(loaded[k])
        rows.append([name, k, f"{q:.1f} [{min(quiet[k]):.1f}-{max(quiet[k]):.1f}]",
                     f"{b:.1f} [{min(loaded[k]):.1f}-{max(loaded[k]):.1f}]", f"{b / q:.2f}", f"{b / ref:.2f}"])
    return rows


def fixed(name: str, args: argparse.Namespace) -> list[list[str]]:
    """Wall of ``bench --n 1``, ``summarize`` and ``--help`` as a user gets them: bytecode cached (a first, discarded
    round writes it even where PYTHONDONTWRITEBYTECODE is set), then 3 rounds; median [min-max]."""
    spec = SPECS[name]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    walls: dict[str, list[float]] = {"bench": [], "summarize": [], "help": []}
    for r in range(4):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmds = {"bench": ["bench", "--config", str(args.config), "--model", spec, "--n", "1", "--batch-size", "1",
                              "--out", str(out), "--no-progress"],
                    "summarize": ["summarize", str(out)], "help": ["--help"]}
            for k, c in cmds.items():
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "robcurve", *c], cwd=ROOT, env=env, capture_output=True,
                               check=True)
                if r:  # round 0 writes the bytecode
                    walls[k].append(time.perf_counter() - t)

    def fmt(v: list[float]) -> str:
        return f"{statistics.median(v):.1f} [{min(v):.1f}–{max(v):.1f}]"

    return [[name, fmt(walls["bench"]), fmt(walls["summarize"]), fmt(walls["help"])]]


def summarize_run(run: Path, repeats: int) -> list[str]:
    """Wall of `robcurve summarize` (with its figures) on a copy of a finished run folder, per repeat."""
    if not (run / "results.sqlite").is_file():
        raise SystemExit(f"pipeline.py: --summarize-run {run}: no results.sqlite there. Fix: pass a run folder "
                         "written by robcurve bench (e.g. runs/population-bench/pop-vit-s0)")
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(run, copy)
        for _ in range(repeats):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "robcurve", "summarize", str(copy)], cwd=ROOT, capture_output=True,
                           check=True)
            walls.append(time.perf_counter() - t)
    return [f"{statistics.median(walls):.2f}", f"{min(walls):.2f}-{max(walls):.2f}"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="zoo-vit,zoo-resnet,zoo-swin")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "leaderboard-fmnist.yaml")
    ap.add_argument("--n", type=int, default=8, help="samples of the efficiency run")
    ap.add_argument("--floor-seconds", type=float, default=1.0, help="seconds of repeated plain-torch calls per floor "
                    "batch size (before and after the run; the faster counts)")
    ap.add_argument("--eff-repeats", type=int, default=1, help="repeats of the efficiency run per model (interleaved)")
    ap.add_argument("--busy", action="store_true", help="also the busy-machine comparison (subprocesses)")
    ap.add_argument("--busy-n", type=int, default=4, help="samples of each busy-machine run")
    ap.add_argument("--repeats", type=int, default=2, help="repeats of each busy-machine setting (interleaved)")
    ap.add_argument("--hog", choices=sorted(HOGS), default="loop", help="the competing process (see HOGS)")
    ap.add_argument("--fixed", action="store_true", help="also the fixed cost: n = 1 run, summarize, --help")
    ap.add_argument("--no-efficiency", action="store_true")
    ap.add_argument("--summarize-run", type=Path, default=None,
                    help="a finished run folder of shipped size (e.g. a population run, n = 200): time summarize on it")
    args = ap.parse_args(argv)
    models = parse_models(args.models)
    bad = [m for m in models if m not in SPECS]
    if bad:
        raise SystemExit(f"pipeline.py measures the zoo models only ({', '.join(SPECS)}), not {bad}")
    header(f"pipeline: {args.config.name}", 0)
    if not args.no_efficiency:
        last: dict[str, list[list[str]]] = {}
        summ: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in models}
        for _ in range(args.eff_repeats):  # repeats interleaved across the models
            for m in models:
                last[m], one = efficiency(m, args)
                summ[m].append(one)
        print()
        print(table([r for m in models for r in last[m]], ["model", "measurement", "forwards / img", "backwards / img",
                                                           "floor s", "measured s", "efficiency"]))
        def spread(v: list[float], fmt: str) -> str:
            return f"{statistics.median(v):{fmt}} [{min(v):{fmt}}–{max(v):{fmt}}]"

        print(f"\n(the table above: the last of {args.eff_repeats} repeat(s); over all of them, median [min–max]; the "
              "last column against a floor from the fastest single calls instead of sustained rates:)")
        print(table([[m, spread([r[0] for r in summ[m]], ".2f"), spread([r[1] for r in summ[m]], ".2f"),
                      spread([r[2] for r in summ[m]], ".1f"), spread([r[3] for r in summ[m]], ".2f")] for m in models],
                    ["model", "whole-run efficiency", "measurements only", "whole-run wall s",
                     "whole run vs fastest-call floor"]))
    if args.fixed:
        rows = []
        for m in models:
            rows += fixed(m, args)
        print()
        print(table(rows, ["model", "bench --n 1 wall s", "summarize wall s", "--help wall s"]))
    if args.summarize_run is not None:
        med, spread = summarize_run(args.summarize_run, max(args.repeats, 3))
        print(f"\nsummarize of {args.summarize_run} (with figures): median {med} s [min-max {spread}] over "
              f"{max(args.repeats, 3)} runs")
    if args.busy:
        rows = []
        for m in models:
            rows += busy(m, args)
        print()
        print(f"busy machine: n = {args.busy_n}, {args.repeats} interleaved repeats, competing process: {args.hog}, "
              f"{os.cpu_count()} cores")
        print(table(rows, ["model", "threads", "quiet wall s", "busy wall s", "slowdown (own quiet)",
                           "busy / default quiet"]))


if __name__ == "__main__":
    main()
