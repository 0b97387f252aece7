"""How much autocast (bf16 / fp16) moves curvature and distances (issue #15).

For each model the same images, direction (FGSM, computed once in float32) and settings run
with the model's forwards in float32 and under ``torch.autocast`` (``--autocast bf16`` on CPU;
bf16 and fp16 on CUDA), and the script prints, per statistic, the float32 value, the autocast
value and the median per-sample absolute difference. The curvature statistics are taken at
the default grid (T = 201 over [-0.1, 0.1], h0 = 1e-3) and at a coarser step (10 h0), since
the rounding of half precision (bf16 keeps ~3 significant digits) acts on the differences of
nearby points, i.e. at the smallest scales first. Also timed: each setting's trajectory
(interleaved, min of repeats).

    python benchmarks/autocast.py                  # zoo ViT, ResNet, Swin, ConvNeXt; 32 images
    python benchmarks/autocast.py --quick          # ViT and ResNet, 16 images
    python benchmarks/autocast.py --device cuda
"""

from __future__ import annotations

import argparse

import torch
from _common import FAMILY, build_model, header, images, interleaved, setup_threads, table


def stats(model, x, y, d, dtype) -> dict[str, torch.Tensor]:
    from robcurve.attacks import deepfool
    from robcurve.geometry import curvature, trajectory, travel_distance

    model.autocast_dtype = dtype
    try:
        tr = trajectory(model, x, d, T=201, E=0.1, y=y)
        c = curvature(tr, ladder=(1, 10))
        tv = travel_distance(model, x, y, d, h=1e-3, tol=1e-6, eps_max=1.0)
        df = deepfool(model, x, y, steps=50, candidates=10)
    finally:
        model.autocast_dtype = None
    out = {"curvedness (1-R^2)": c.curvedness.double()}
    for j, h in enumerate(c.ladder_steps):
        out[f"turning angle deg, h={h:.3g}"] = c.features.ladder_angle[:, j].double()
    out["travel (Linf eps)"] = tv.eps.double()
    out["DeepFool L2"] = df.l2.double()
    return out


def bench_model(name: str, args: argparse.Namespace) -> list[list[str]]:
    from robcurve.geometry import get_direction, trajectory

    model = build_model(name).to(args.device)
    x, y, _ = images(name, model, args.n)
    x, y = x.to(args.device), y.to(args.device)
    d = get_direction(model, x, y, "fgsm")
    kinds = {"bf16": torch.bfloat16} if args.device == "cpu" else {"bf16": torch.bfloat16, "fp16": torch.float16}
    ref = stats(model, x, y, d, None)
    rows = []
    for label, dt in kinds.items():
        got = stats(model, x, y, d, dt)
        for k, v in ref.items():
            w = got[k]
            ok = torch.isfinite(v) & torch.isfinite(w)
            diff = (w[ok] - v[ok]).abs()
            rows.append([FAMILY[name], label, k, f"{float(v[ok].median()):.4g}", f"{float(w[ok].median()):.4g}",
                         f"{float(diff.median()):.3g}" if len(diff) else "n/a", int(ok.sum())])

    def timed(dt):
        def f():
            model.autocast_dtype = dt
            try:
                return trajectory(model, x, d, T=201, E=0.1, chunk_size=256)
            finally:
                model.autocast_dtype = None
        return f

    times, _ = interleaved({"float32": timed(None), **{k: timed(v) for k, v in kinds.items()}}, args.repeats)
    t32 = min(times["float32"])
    for k in kinds:
        rows.append([FAMILY[name], k, "trajectory time vs float32 (min of repeats)", f"{t32:.2f} s",
                     f"{min(times[k]):.2f} s", f"x{t32 / min(times[k]):.2f} speed", args.n])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="zoo-vit,zoo-resnet,zoo-swin,zoo-convnext")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.models, args.n, args.repeats = "zoo-vit,zoo-resnet", 16, 1
    setup_threads(args.threads)
    header(f"autocast vs float32 on {args.device}: {args.n} embedded images, FGSM direction, T = 201 over [-0.1, 0.1]",
           args.threads)
    rows = []
    for name in [m.strip() for m in args.models.split(",")]:
        rows += bench_model(name, args)
    print(table(rows, ["model", "autocast", "statistic", "float32 median", "autocast median",
                       "median |per-sample difference|", "n"]))


if __name__ == "__main__":
    main()
