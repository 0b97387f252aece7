"""Peak memory of `robcurve bench` against n and the memory budget (issue #15).

Each run is a fresh subprocess that loads the model and the data, records its memory, runs
the benchmark in-process (batch size = the smaller n, so the larger n is ten batches) and
records the peak: on CPU the peak resident set size
(``ru_maxrss``) minus the resident size after loading (the model, the data and the imports);
on CUDA ``torch.cuda.max_memory_allocated`` minus the allocation after loading. For every
model the same config runs at n and at 10 n, at the default budget and at ``--budget``, and a
run of the ``clean`` measurement alone gives the fixed cost that the budget does not govern; what
the comparison holds fixed: the config (batch size, measurements, T), the thread count, the
machine. Expected: the working memory does not grow with n (batches are stored as they
finish) and stays below the budget (the budget bounds robcurve's chunks and attack
sub-batches; its estimate is conservative).

    python benchmarks/memory.py                       # zoo ViT, ResNet, Swin; n = 20 and 200
    python benchmarks/memory.py --quick               # ViT and ResNet, n = 10 and 100
    python benchmarks/memory.py --device cuda         # on the GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from _common import FAMILY, header, table

MEASUREMENTS = "clean,trajectory,travel,pgd,deepfool"


def child(args: argparse.Namespace) -> None:
    import torch

    from robcurve.memory import budget_bytes, set_memory_budget
    from robcurve.run.config import load_config
    from robcurve.run.runner import prepare, run

    torch.set_num_threads(args.threads)
    over = {"model": f"zoo:{args.model[4:]}-fmnist", "n": args.n, "batch_size": args.batch, "device": args.device,
            "measurements": args.measurements.split(","), "attack": "pgd", "out": args.out, "deepfool": {"steps": 20}}
    if args.budget:
        over["max_memory"] = args.budget
    cfg = load_config(None, over)
    prepare(cfg, verbose=False)  # load once: imports, model, data; the run loads them again (same size)
    import matplotlib.pyplot as plt  # the summary's libraries, loaded before the baseline

    import robcurve.run.summary  # noqa: F401

    plt.figure()
    plt.close("all")
    set_memory_budget(cfg.max_memory)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss()
    t = time.perf_counter()
    run(cfg, progress=False, summarize=False)  # the measuring phase
    sec = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    from robcurve.run.store import Store
    from robcurve.run.summary import write_outputs

    store = Store(os.path.join(args.out, "results.sqlite"))
    write_outputs(store, args.out)  # the summary (tables, bootstraps, plots), after it
    store.close()
    total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"base": base, "peak": peak, "total_peak": total,
                      "budget": budget_bytes(args.device), "seconds": sec}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="zoo-vit,zoo-resnet,zoo-swin")
    ap.add_argument("--n", type=int, default=20, help="the smaller n (the larger is 10x); also the batch size")
    ap.add_argument("--budget", default="64MiB", help="the explicit budget compared with the default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="zoo ViT and ResNet, n = 10 and 100")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--measurements", default=MEASUREMENTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.models, args.n = "zoo-vit,zoo-resnet", 10
    header(f"peak working memory of robcurve bench ({MEASUREMENTS}; batch {args.n}; T = 201) on {args.device}",
           args.threads)
    rows = []
    for name in [m.strip() for m in args.models.split(",")]:
        for budget in ("", args.budget):
            for n in (args.n, 10 * args.n):
                r = {}
                for meas in ("clean", MEASUREMENTS):
                    with tempfile.TemporaryDirectory() as tmp:
                        cmd = [sys.executable, __file__, "--child", "--model", name, "--n", str(n), "--device", args.device,
                               "--threads", str(args.threads), "--out", os.path.join(tmp, "run"), "--budget", budget,
                               "--batch", str(args.n), "--measurements", meas]
                        out = subprocess.run(cmd, capture_output=True, text=True)
                        if out.returncode:
                            raise SystemExit(f"{name} n={n}: child failed:\n{out.stderr[-2000:]}")
                        r[meas] = json.loads(out.stdout.strip().splitlines()[-1])
                full, ref = r[MEASUREMENTS], r["clean"]
                over = (ref["peak"] - ref["base"]) / 2**20
                peak = (full["peak"] - full["base"]) / 2**20
                work = peak - over
                rows.append([FAMILY[name], n, budget or "default", f"{full['budget'] / 2**20:.0f}",
                             f"{full['base'] / 2**20:.0f}", f"{over:.0f}", f"{peak:.0f}", f"{work:.0f}",
                             "yes" if work * 2**20 <= full["budget"] else "NO",
                             f"{(full['total_peak'] - full['base']) / 2**20:.0f}", f"{full['seconds']:.0f}"])
                print(" | ".join(map(str, rows[-1])), flush=True)
    print()
    print(table(rows, ["model", "n", "--max-memory", "budget MiB", "after load MiB", "clean-only run MiB",
                       "full run MiB", "working MiB", "within budget", "with summary MiB", "measuring s"]))
    print("\nclean-only / full run = peak of the measuring phase above the memory after loading model and data, for a "
          "run of the clean measurement only (the fixed cost: the run's own load, the clean forwards) and for the full "
          "run; working = full - clean-only: what the budget governs (trajectory chunks, travel, attack sub-batches). "
          "With summary: the full run's peak after the summary (tables, bootstraps, plots; a fixed cost outside the "
          "budget). Flat in n: it does not grow with the number of samples.")


if __name__ == "__main__":
    main()
