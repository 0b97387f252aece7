"""Speed and agreement of robcurve's attacks against torchattacks and foolbox, per architecture.

    python benchmarks/attacks.py                      # every model, 32 images, 5 repeats
    python benchmarks/attacks.py --quick              # 3 models, 16 images, 2 repeats (< 2 min)
    python benchmarks/attacks.py --models zoo-swin,timm-vit-tiny --repeats 7 --threads 2

Per model (benchmarks/_common.py: zoo ViT, ResNet, ConvNeXt, Swin at 28 px; untrained timm
ResNet-18 and ViT-Tiny/4 at 32 px x 3 channels), on the same images for every library:

* **DeepFool L2** (50 steps, overshoot 0.02, 10 candidates): robcurve (default: candidate
  restriction after the first step) against foolbox on all images, and against torchattacks
  (which loops over images and takes all classes) on the first ``--ta-n`` images; the largest
  per-sample relative difference of the L2 distances to foolbox's; once, robcurve with every
  candidate at every step (``restrict=None``) for the restriction's own speed-up and equality.
* **PGD L∞-10 without early stop** (torchattacks' algorithm; eps 0.1 at 28 px, 8/255 at 32 px,
  step 2.5 eps/10, seeded random start) with the clean logits passed in as a benchmark run
  does (``clean_logits=``), against ``torchattacks.PGD`` called directly (the library alone:
  10 forward and 10 backward passes, no success check) and against the raw cost: 10
  forward+backward passes of the batch (cross-entropy gradient w.r.t. the input). robcurve
  makes 11 forwards (the last, at the final iterate, checks success), so ~0.96 is the ceiling.
  The largest pixel difference to torchattacks' images. Also PGD with early stop (the default).

Fixed for every contender: the images and labels, the torch thread count, frozen parameters
(``requires_grad_(False)``; robcurve freezes them during an attack anyway, the peers then do
not compute weight gradients either), interleaved repeats. Ratios are speed-ups (peer time /
robcurve time, or raw time / robcurve time), shown as median [min-max] over the repeats.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

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
    timed,
)

QUICK_MODELS = "zoo-vit,zoo-convnext,timm-resnet18"


def raw_fb(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, calls: int = 10) -> None:
    """``calls`` forward+backward passes of the batch: the raw cost of PGD's steps."""
    for _ in range(calls):
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y), xi)


def max_rel(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    if not mask.any():
        return math.nan
    return float(((a - b).abs() / b.abs().clamp_min(1e-12))[mask].max())


def bench_deepfool(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, out: dict) -> None:
    from robcurve.attacks import deepfool, run_attack

    dk = dict(norm="L2", steps=50, overshoot=0.02)
    deepfool(model, x[:2], y[:2], **dk)  # warm-up
    times, last = interleaved({
        "ours": lambda: deepfool(model, x, y, candidates=10, **dk),
        "foolbox": lambda: run_attack("deepfool", model, x, y, backend="foolbox", candidates=10, **dk),
    }, args.repeats)
    ours, fb = last["ours"], last["foolbox"]
    both = ours.clean_correct & ours.success & fb.success
    out["df_fb"] = ratios(times["foolbox"], times["ours"])
    out["df_fb_rel"] = max_rel(ours.l2, fb.l2, both)
    m = min(args.ta_n, args.n)
    xs, ys = x[:m], y[:m]
    t_ours_s, r_ours_s = [], None
    t_ta: list[float] = []
    for _ in range(max(1, args.ta_repeats)):
        t, r_ours_s = timed(lambda: deepfool(model, xs, ys, candidates=10, **dk))
        t_ours_s.append(t)
        t, r_ta = timed(lambda: run_attack("deepfool", model, xs, ys, backend="torchattacks", candidates=None, **dk))
        t_ta.append(t)
    out["df_ta"] = ratios(t_ta, t_ours_s)
    ok_ta = r_ta.clean_correct & r_ta.success & r_ours_s.success
    out["df_ta_rel"] = max_rel(r_ours_s.l2, r_ta.l2, ok_ta)
    out["df_ta_success"] = (float(r_ta.success_rate), float(r_ours_s.success_rate))
    if not args.quick:
        t_full, full = timed(lambda: deepfool(model, x, y, candidates=10, restrict=None, **dk))
        out["df_restrict_speedup"] = t_full / min(times["ours"])
        out["df_restrict_rel"] = max_rel(ours.l2, full.l2, ours.clean_correct & ours.success)
        out["df_backwards"] = (float(ours.backwards.double().mean()), float(full.backwards.double().mean()))
    out["df_time"] = (min(times["ours"]), min(times["foolbox"]))
    out["df_median_l2"] = (ours.median_distance("L2"), fb.median_distance("L2"))
    print(f"DeepFool L2: ours {spread(times['ours'])} s, foolbox {spread(times['foolbox'])} s -> "
          f"{spread(out['df_fb'])}x; per-sample L2 max rel diff to foolbox {out['df_fb_rel']:.1e}; "
          f"torchattacks on {m}: {spread(out['df_ta'])}x (success {out['df_ta_success'][0]:.0%} vs ours "
          f"{out['df_ta_success'][1]:.0%}, max rel diff where both succeed {out['df_ta_rel']:.1e})")
    if "df_restrict_speedup" in out:
        print(f"  restriction: {out['df_restrict_speedup']:.2f}x faster than every candidate at every step, "
              f"max rel diff {out['df_restrict_rel']:.1e}; backward passes per image {out['df_backwards'][0]:.1f} "
              f"vs {out['df_backwards'][1]:.1f}")


def bench_model(name: str, args: argparse.Namespace) -> dict:
    from robcurve.attacks import pgd

    model = build_model(name)
    x, y, what = images(name, model, args.n)
    with torch.no_grad():
        clean = model(x)
    print(f"\n## {name} ({FAMILY[name]}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params): {what}; "
          f"clean accuracy {100 * float((clean.argmax(1) == y).double().mean()):.0f}%; load {loadavg()}")
    out: dict = {"model": name}

    # -- DeepFool ------------------------------------------------------------------------------------
    if args.only in ("all", "deepfool"):
        bench_deepfool(model, x, y, args, out)
    # -- PGD ------------------------------------------------------------------------------------------
    if args.only in ("all", "pgd"):
        import torchattacks

        eps = 0.1 if x.shape[1] == 1 else 8 / 255
        pk = dict(eps=eps, norm="Linf", steps=10, seed=0)
        ta = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)

        def ta_direct() -> torch.Tensor:
            torch.manual_seed(0)  # the draw robcurve's seeded generator makes (bit-identical on the CPU)
            return ta(x, y)

        raw_fb(model, x, y, calls=1)
        times, last = interleaved({
            "ours": lambda: pgd(model, x, y, early_stop=False, clean_logits=clean, **pk),
            "torchattacks": ta_direct,
            "raw": lambda: raw_fb(model, x, y, 10),
            "ours_es": lambda: pgd(model, x, y, clean_logits=clean, **pk),
        }, args.repeats)
        out["pgd_ta"] = ratios(times["torchattacks"], times["ours"])
        out["pgd_raw"] = ratios(times["raw"], times["ours"])
        out["pgd_es_ta"] = ratios(times["torchattacks"], times["ours_es"])
        out["pgd_diff"] = float((last["ours"].x_adv - last["torchattacks"]).abs().max())
        out["pgd_robust"] = (last["ours"].robust_accuracy, last["ours_es"].robust_accuracy)
        print(f"PGD L∞ {eps:.4g}, 10 steps, no early stop, clean logits passed: ours {spread(times['ours'])} s, "
              f"torchattacks.PGD {spread(times['torchattacks'])} s, raw 10 f+b {spread(times['raw'])} s -> "
              f"{spread(out['pgd_ta'])}x torchattacks, {spread(out['pgd_raw'])}x raw; max pixel diff to torchattacks "
              f"{out['pgd_diff']:.1e}; robust acc {out['pgd_robust'][0]:.1%}")
        print(f"  early stop (default): {spread(out['pgd_es_ta'])}x torchattacks, robust acc {out['pgd_robust'][1]:.1%}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all", help="comma list (benchmarks/_common.py) or 'all'")
    ap.add_argument("--n", type=int, default=32, help="images (default 32)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    ap.add_argument("--ta-n", type=int, default=8, help="images for torchattacks' DeepFool (slow; default 8)")
    ap.add_argument("--ta-repeats", type=int, default=1, help="repeats of the torchattacks DeepFool comparison")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; default 1)")
    ap.add_argument("--only", choices=["all", "deepfool", "pgd"], default="all", help="run one part only")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_MODELS}, 16 images, 2 repeats, 4 torchattacks images")
    args = ap.parse_args(argv)
    if args.quick:
        args.models = args.models if args.models != "all" else QUICK_MODELS
        args.n, args.repeats, args.ta_n = min(args.n, 16), min(args.repeats, 2), min(args.ta_n, 4)
    setup_threads(args.threads)
    header("robcurve attacks vs torchattacks / foolbox", args.threads)
    print("fixed: same images and labels, thread count, frozen parameters for every library; ratios = speed-ups, "
          "median [min-max] over interleaved repeats")
    res = [bench_model(m, args) for m in parse_models(args.models)]
    rows = []
    for r in res:
        rows.append([r["model"], spread(r["df_fb"]) if "df_fb" in r else "-",
                     f"{r['df_fb_rel']:.1e}" if "df_fb_rel" in r else "-", spread(r["df_ta"]) if "df_ta" in r else "-",
                     f"{r['df_restrict_speedup']:.2f}" if "df_restrict_speedup" in r else "-",
                     spread(r["pgd_ta"]) if "pgd_ta" in r else "-", spread(r["pgd_raw"]) if "pgd_raw" in r else "-",
                     f"{r['pgd_diff']:.0e}" if "pgd_diff" in r else "-", spread(r["pgd_es_ta"]) if "pgd_es_ta" in r else "-"])
    print()
    print(table(rows, ["model", "DeepFool vs foolbox (x)", "max rel L2 diff", f"vs torchattacks ({min(args.ta_n, args.n)} img)",
                       "restriction speed-up", "PGD-10 vs torchattacks", "PGD-10 vs raw f+b", "max pixel diff",
                       "PGD early stop vs torchattacks"]))
    print(f"\nload average at end {loadavg()}; goals: DeepFool >= 3x foolbox and >= 10x torchattacks, PGD >= 0.96x "
          "torchattacks and raw")


if __name__ == "__main__":
    main()
