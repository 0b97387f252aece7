"""Throughput on a device against the raw model on that device, and against the CPU (issue #15).

For each model: (1) raw no-grad forwards of the trajectory's own inputs at the fastest batch
size of a sweep, and robcurve's ``trajectory`` (default settings, automatic batch size) on the
same inputs: images per second and their ratio; (2) raw forward+backward (gradient of the
cross-entropy with respect to the input) on the batch, and robcurve's PGD-10 without early
stop (10 forward+backward per image plus its clean forward): image-steps per second and the
ratio; (3) DeepFool L2 (50 steps, 10 candidates): images per second. The same code runs on
the CPU on fewer images (``--cpu-n``) and the last column gives device / CPU throughput.
Timings: CUDA synchronised, one warm-up, min of ``--repeats`` interleaved repeats; parameters
frozen; the same images for every contender.

    python benchmarks/gpu.py --device cuda           # zoo ViT, ResNet, Swin + timm ResNet-18, ViT-Tiny/4
    python benchmarks/gpu.py --device cpu --quick    # the script itself, on a CPU machine
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from _common import FAMILY, build_model, header, images, setup_threads, table


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _best(fn, repeats: int, dev: torch.device) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def measure(name: str, dev: torch.device, n: int, T: int, repeats: int) -> dict[str, float]:
    from robcurve.attacks import deepfool, pgd
    from robcurve.geometry import get_direction, trajectory
    from robcurve.geometry.trajectory import eps_grid, grid_inputs

    model = build_model(name).to(dev)
    x, y, _ = images(name, model.cpu(), n)
    model.to(dev)
    x, y = x.to(dev), y.to(dev)
    d = get_direction(model, x, y)
    grid = eps_grid(T, 0.1)
    flat = grid_inputs(x, d, grid, 0, n * T)
    out: dict[str, float] = {}

    def raw_fwd(b: int) -> None:
        with torch.no_grad():
            for a in range(0, len(flat), b):
                model.logits_and_features(flat[a:a + b])

    sizes = [b for b in (64, 256, 1024, 4096) if b <= len(flat)] or [len(flat)]
    t_raw = min(_best(lambda b=b: raw_fwd(b), 1, dev) for b in sizes)
    t_tr = _best(lambda: trajectory(model, x, d, T=T, E=0.1), repeats, dev)
    out["fwd"] = len(flat) / t_raw
    out["traj"] = len(flat) / t_tr

    def raw_fb() -> None:
        xx = x.clone().requires_grad_(True)
        for _ in range(10):
            loss = F.cross_entropy(model(xx), y)
            (g,) = torch.autograd.grad(loss, xx)
            xx = (xx + 1e-3 * g.sign()).detach().requires_grad_(True)

    t_fb = _best(raw_fb, repeats, dev)
    t_pgd = _best(lambda: pgd(model, x, y, eps=0.03, steps=10, early_stop=False), repeats, dev)
    out["fwdbwd"] = 10 * n / t_fb
    out["pgd"] = 10 * n / t_pgd
    t_df = _best(lambda: deepfool(model, x, y, steps=50, candidates=10), max(1, repeats - 1), dev)
    out["deepfool"] = n / t_df
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="zoo-vit,zoo-resnet,zoo-swin,timm-resnet18,timm-vit-tiny")
    ap.add_argument("--n", type=int, default=256, help="images on the device")
    ap.add_argument("--cpu-n", type=int, default=16, help="images on the CPU (0: no CPU comparison)")
    ap.add_argument("--t", type=int, default=201)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU torch threads (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="zoo ViT and ResNet, n = 32, cpu-n = 8, T = 101")
    args = ap.parse_args()
    if args.quick:
        args.models, args.n, args.cpu_n, args.t, args.repeats = "zoo-vit,zoo-resnet", 32, 8, 101, 2
    setup_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device here; run with --device cpu")
        gpu = torch.cuda.get_device_name(dev)
    else:
        gpu = "cpu"
    header(f"device throughput on {args.device} ({gpu}); T = {args.t}; {args.n} images on the device, "
           f"{args.cpu_n} on the CPU", args.threads)
    rows = []
    for name in [m.strip() for m in args.models.split(",")]:
        r = measure(name, dev, args.n, args.t, args.repeats)
        c = measure(name, torch.device("cpu"), args.cpu_n, args.t, 1) if args.cpu_n and dev.type != "cpu" else None

        def vs_cpu(k: str, r: dict = r, c: dict | None = c) -> str:
            return f"x{r[k] / c[k]:.0f}" if c else "-"

        rows += [[FAMILY[name], "raw forward (best batch)", f"{r['fwd']:.0f} img/s", "", vs_cpu("fwd")],
                 [FAMILY[name], "trajectory (default)", f"{r['traj']:.0f} img/s", f"{r['traj'] / r['fwd']:.2f} x raw",
                  vs_cpu("traj")],
                 [FAMILY[name], "raw forward+backward", f"{r['fwdbwd']:.0f} img-steps/s", "", vs_cpu("fwdbwd")],
                 [FAMILY[name], "PGD-10, no early stop", f"{r['pgd']:.0f} img-steps/s", f"{r['pgd'] / r['fwdbwd']:.2f} x raw",
                  vs_cpu("pgd")],
                 [FAMILY[name], "DeepFool L2 (50 steps, 10 cand.)", f"{r['deepfool']:.1f} img/s", "", vs_cpu("deepfool")]]
        print(" | ".join(rows[-1]), flush=True)
    print()
    print(table(rows, ["model", "what", f"throughput on {args.device}", "vs raw on the device", "device / CPU"]))


if __name__ == "__main__":
    main()
