"""Speed and agreement of robcurve's attacks against torchattacks and foolbox, per architecture.

    python benchmarks/attacks.py                      # every model, 32 images, 5 repeats (PGD 25)
    python benchmarks/attacks.py --quick              # 3 models, 16 images, 2 repeats (< 2 min)
    python benchmarks/attacks.py --models zoo-swin,timm-vit-tiny --repeats 7 --threads 2

Per model (benchmarks/_common.py: zoo ViT, ResNet, ConvNeXt, Swin at 28 px; untrained timm
ResNet-18 and ViT-Tiny/4 at 32 px x 3 channels), on the same images for every library:

* **DeepFool L2** (50 steps, overshoot 0.02, 10 candidates): robcurve (default: candidate
  restriction after the first step; all images in one batch: the runner's default batch is
  100) against foolbox and torchattacks (which loops over images and takes all
  classes) on the same images (``--ta-n``: fewer for torchattacks, default all); the largest
  per-sample relative difference of the L2 distances to foolbox's; once, robcurve with every
  candidate at every step (``restrict=None``) for the restriction's own speed-up and equality.
  torchattacks' DeepFool stops at the first iterate that a one-image forward misclassifies,
  within ~1e-6 of the boundary, so a batched forward often classifies it correctly again:
  its success rate is printed as measured by a batched forward and by one-image forwards.
* **PGD L∞-10 without early stop** (torchattacks' algorithm; eps 0.1 at 28 px, 8/255 at 32 px,
  step 2.5 eps/10, seeded random start) with the clean logits passed in as a benchmark run
  does (``clean_logits=``). robcurve returns the adversarial images *and* the predictions at
  them (10 forward+backward passes, then 1 forward at the final iterate), so it is compared
  like for like against ``torchattacks.PGD`` followed by the forward its user needs for
  robust accuracy (``model(adv)``), and against the raw cost of the same output: 10
  forward+backward passes of the batch (cross-entropy gradient w.r.t. the input) plus one
  no-grad forward. These ratios are near 1, and identical runs of one model vary by 5-20% on
  a shared 2-core machine (printed), so the verdict comes from each contender's *own* cost per
  call (everything but the model's passes: step arithmetic, bookkeeping, building the result),
  timed on a linear model where it is not drowned (200 interleaved calls), set against the
  model's fastest raw + check: ratio = (raw + check + their own cost) / (raw + check + ours).
  The timed ratios (fastest runs; median [min-max] per repeat, ``--pgd-repeats``, default 25)
  are printed beside it. Also printed: the ratio to the raw 10 forward+backward alone and its
  ceiling ``raw / (raw + 1 forward)`` (a PGD that also returns predictions cannot beat it).
  The largest pixel difference to torchattacks' images and whether the predictions agree.
  Also PGD with early stop (the default) against torchattacks + check.

Fixed for every contender: the images and labels, the torch thread count, frozen parameters
(``requires_grad_(False)``; robcurve freezes them during an attack anyway, the peers then do
not compute weight gradients either), interleaved repeats. Ratios are speed-ups (peer time /
robcurve time, or raw time / robcurve time), shown as median [min-max] over the repeats.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    m = min(args.ta_n or args.n, args.n)
    xs, ys = x[:m], y[:m]
    t_ours_s: list[float] = []
    t_ta: list[float] = []
    for _ in range(max(1, args.ta_repeats)):  # interleaved: ours, torchattacks, ours, ...
        t, r_ours_s = timed(lambda: deepfool(model, xs, ys, candidates=10, **dk))
        t_ours_s.append(t)
        t, r_ta = timed(lambda: run_attack("deepfool", model, xs, ys, backend="torchattacks", candidates=None, **dk))
        t_ta.append(t)
    out["df_ta"] = ratios(t_ta, t_ours_s)
    out["df_ta_n"] = m
    ok_ta = r_ta.clean_correct & r_ta.success & r_ours_s.success
    out["df_ta_rel"] = max_rel(r_ours_s.l2, r_ta.l2, ok_ta)
    with torch.no_grad():
        single = torch.cat([model(r_ta.x_adv[i:i + 1]).argmax(1) for i in range(m)])
    one_img = float(((single != ys) & r_ta.clean_correct).double().sum() / r_ta.clean_correct.double().sum().clamp_min(1))
    out["df_ta_success"] = (float(r_ta.success_rate), one_img, float(r_ours_s.success_rate))
    if not args.quick:
        t_full, full = timed(lambda: deepfool(model, x, y, candidates=10, restrict=None, **dk))
        out["df_restrict_speedup"] = t_full / min(times["ours"])
        out["df_restrict_rel"] = max_rel(ours.l2, full.l2, ours.clean_correct & ours.success)
        out["df_backwards"] = (float(ours.backwards.double().mean()), float(full.backwards.double().mean()))
    out["df_time"] = (min(times["ours"]), min(times["foolbox"]))
    out["df_median_l2"] = (ours.median_distance("L2"), fb.median_distance("L2"))
    print(f"DeepFool L2: ours {spread(times['ours'])} s, foolbox {spread(times['foolbox'])} s -> "
          f"{spread(out['df_fb'])}x; per-sample L2 max rel diff to foolbox {out['df_fb_rel']:.1e}; "
          f"torchattacks on {m}: {spread(out['df_ta'])}x (its success {out['df_ta_success'][0]:.0%} by a batched forward, "
          f"{out['df_ta_success'][1]:.0%} by one-image forwards; ours {out['df_ta_success'][2]:.0%}; max rel L2 diff where "
          f"both succeed {out['df_ta_rel']:.1e}: a different overshoot rule)")
    if "df_restrict_speedup" in out:
        print(f"  restriction: {out['df_restrict_speedup']:.2f}x faster than every candidate at every step, "
              f"max rel diff {out['df_restrict_rel']:.1e}; backward passes per image {out['df_backwards'][0]:.1f} "
              f"vs {out['df_backwards'][1]:.1f}")


def pgd_eps(x: torch.Tensor) -> float:
    """The PGD budget of the benchmark: 0.1 at 28 px grey, 8/255 at 32 px colour."""
    return 0.1 if x.shape[1] == 1 else 8 / 255


def pgd_contenders(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor) -> dict[str, Callable[[], Any]]:
    """The PGD-10 contenders on one model and batch (the same images, budget, step and start for each).

    ``ours`` / ``ours_es``: robcurve without / with early stop, clean logits passed;
    ``torchattacks``: torchattacks.PGD alone; ``torchattacks+check``: it and the forward its user
    needs for robust accuracy; ``raw``: 10 forward+backward passes; ``raw+check``: and 1 forward.
    """
    import torchattacks

    from robcurve.attacks import pgd

    eps = pgd_eps(x)
    pk = dict(eps=eps, norm="Linf", steps=10, seed=0)
    ta = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / 10, steps=10, random_start=True)

    def ta_direct() -> torch.Tensor:
        torch.manual_seed(0)  # the draw robcurve's seeded generator makes (bit-identical on the CPU)
        return ta(x, y)

    def ta_checked() -> tuple[torch.Tensor, torch.Tensor]:
        adv = ta_direct()
        with torch.no_grad():
            return adv, model(adv)

    def raw_checked() -> None:
        raw_fb(model, x, y, 10)
        with torch.no_grad():
            model(x)

    return {
        "ours": lambda: pgd(model, x, y, early_stop=False, clean_logits=clean, **pk),
        "torchattacks+check": ta_checked,
        "raw+check": raw_checked,
        "torchattacks": ta_direct,
        "raw": lambda: raw_fb(model, x, y, 10),
        "ours_es": lambda: pgd(model, x, y, clean_logits=clean, **pk),
    }


def pgd_overhead(x: torch.Tensor, y: torch.Tensor, k: int, repeats: int = 200) -> dict[str, float]:
    """Milliseconds per call of ``ours``, ``raw+check`` and ``torchattacks+check`` (:func:`pgd_contenders`)
    on a linear model over ``x``'s shape, medians of ``repeats`` interleaved calls.

    The model costs next to nothing, so the differences are each contender's own cost per call
    (step arithmetic, bookkeeping, the result), timed precisely where the real models' ratios
    lie within their run-to-run noise.
    """
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), k)).eval().requires_grad_(False)
    with torch.no_grad():
        clean = lin(x)
    every = pgd_contenders(lin, x, y, clean)
    times, _ = interleaved({c: every[c] for c in ("ours", "raw+check", "torchattacks+check")}, repeats)
    return {c: 1e3 * statistics.median(v) for c, v in times.items()}


def bench_model(name: str, args: argparse.Namespace) -> dict:
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
        eps = pgd_eps(x)
        raw_fb(model, x, y, calls=1)
        times, last = interleaved(pgd_contenders(model, x, y, clean), args.pgd_repeats)
        out["pgd_ta"] = ratios(times["torchattacks+check"], times["ours"])
        out["pgd_raw"] = ratios(times["raw+check"], times["ours"])
        out["pgd_ta_fastest"] = min(times["torchattacks+check"]) / min(times["ours"])
        out["pgd_raw_fastest"] = min(times["raw+check"]) / min(times["ours"])
        out["pgd_ta_alone"] = ratios(times["torchattacks"], times["ours"])
        out["pgd_raw_alone"] = ratios(times["raw"], times["ours"])
        out["pgd_raw_alone_fastest"] = min(times["raw"]) / min(times["ours"])
        out["pgd_ceiling"] = ratios(times["raw"], times["raw+check"])
        out["pgd_ceiling_fastest"] = min(times["raw"]) / min(times["raw+check"])
        out["pgd_es_ta"] = ratios(times["torchattacks+check"], times["ours_es"])
        out["pgd_noise"] = statistics.pstdev(times["raw+check"]) / statistics.mean(times["raw+check"])
        oh = pgd_overhead(x, y, int(clean.shape[1]))
        own, base, ta_own = oh["ours"] - oh["raw+check"], min(times["raw+check"]), oh["torchattacks+check"] - oh["raw+check"]
        out["pgd_own_ms"], out["pgd_ta_own_ms"] = own, ta_own
        out["pgd_raw_implied"] = base / (base + own / 1e3)
        out["pgd_ta_implied"] = (base + ta_own / 1e3) / (base + own / 1e3)
        out["pgd_diff"] = float((last["ours"].x_adv - last["torchattacks+check"][0]).abs().max())
        out["pgd_pred_same"] = bool((last["ours"].pred_adv == last["torchattacks+check"][1].argmax(1)).all())
        out["pgd_robust"] = (last["ours"].robust_accuracy, last["ours_es"].robust_accuracy)
        print(f"PGD L∞ {eps:.4g}, 10 steps, no early stop, clean logits passed ({args.pgd_repeats} repeats): ours "
              f"{spread(times['ours'])} s, torchattacks.PGD + check {spread(times['torchattacks+check'])} s, raw 10 f+b "
              f"+ 1 f {spread(times['raw+check'])} s (identical runs vary by {out['pgd_noise']:.0%}, coefficient of "
              f"variation of raw + check) -> fastest runs {out['pgd_ta_fastest']:.2f}x torchattacks + check, "
              f"{out['pgd_raw_fastest']:.2f}x raw + check; per repeat {spread(out['pgd_ta'])}x, {spread(out['pgd_raw'])}x; "
              f"max pixel diff to torchattacks {out['pgd_diff']:.1e}, same predictions {out['pgd_pred_same']}; "
              f"robust acc {out['pgd_robust'][0]:.1%}")
        print(f"  own cost beyond the model passes, per call (on a linear model, medians of 200: ours {oh['ours']:.2f} ms, "
              f"torchattacks + check {oh['torchattacks+check']:.2f} ms, raw + check {oh['raw+check']:.2f} ms): robcurve "
              f"{own:.2f} ms, torchattacks {ta_own:.2f} ms; with this model's fastest raw + check ({base:.3f} s) that is "
              f"{out['pgd_raw_implied']:.3f}x raw + check and {out['pgd_ta_implied']:.3f}x torchattacks + check")
        print(f"  without the check: {spread(out['pgd_ta_alone'])}x torchattacks.PGD alone, raw 10 f+b fastest runs "
              f"{out['pgd_raw_alone_fastest']:.2f}x, per repeat {spread(out['pgd_raw_alone'])}x; its ceiling raw / (raw + 1 f) "
              f"{out['pgd_ceiling_fastest']:.3f} (fastest runs), {spread(out['pgd_ceiling'])} per repeat")
        print(f"  early stop (default): {spread(out['pgd_es_ta'])}x torchattacks + check, robust acc {out['pgd_robust'][1]:.1%}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all", help="comma list (benchmarks/_common.py) or 'all'")
    ap.add_argument("--n", type=int, default=32, help="images (default 32)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    ap.add_argument("--ta-n", type=int, default=0, help="images for torchattacks' DeepFool (0: all --n; default 0)")
    ap.add_argument("--ta-repeats", type=int, default=2, help="repeats of the torchattacks DeepFool comparison (default 2)")
    ap.add_argument("--pgd-repeats", type=int, default=25, help="interleaved repeats of the PGD comparison (default 25: its ratios are near 1, single runs vary by ~7%%)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; default 1)")
    ap.add_argument("--only", choices=["all", "deepfool", "pgd"], default="all", help="run one part only")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_MODELS}, 16 images, 2 repeats, 4 torchattacks images")
    args = ap.parse_args(argv)
    if args.quick:
        args.models = args.models if args.models != "all" else QUICK_MODELS
        args.n, args.repeats, args.ta_n = min(args.n, 16), min(args.repeats, 2), min(args.ta_n or 4, 4)
        args.ta_repeats, args.pgd_repeats = 1, min(args.pgd_repeats, 3)
    setup_threads(args.threads)
    header("robcurve attacks vs torchattacks / foolbox", args.threads)
    print("fixed: same images and labels, thread count, frozen parameters for every library; ratios = speed-ups, "
          "median [min-max] over interleaved repeats")
    res = [bench_model(m, args) for m in parse_models(args.models)]
    def col(r: dict, key: str, fmt: str = "{:.2f}") -> str:
        v = r.get(key)
        if v is None:
            return "-"
        return spread(v) if isinstance(v, list) else fmt.format(v)

    rows = []
    for r in res:
        rows.append([r["model"], col(r, "df_fb"), col(r, "df_fb_rel", "{:.1e}"),
                     f"{col(r, 'df_ta')} ({r['df_ta_n']} img)" if "df_ta" in r else "-", col(r, "df_restrict_speedup"),
                     f"{col(r, 'pgd_ta_fastest')}; {col(r, 'pgd_ta')}" if "pgd_ta" in r else "-",
                     f"{col(r, 'pgd_raw_fastest')}; {col(r, 'pgd_raw')}" if "pgd_raw" in r else "-",
                     f"{col(r, 'pgd_own_ms')} / {col(r, 'pgd_ta_own_ms')} ms -> {col(r, 'pgd_raw_implied', '{:.3f}')} / "
                     f"{col(r, 'pgd_ta_implied', '{:.3f}')}" if "pgd_own_ms" in r else "-",
                     f"{col(r, 'pgd_raw_alone_fastest')} (ceiling {col(r, 'pgd_ceiling_fastest', '{:.3f}')})"
                     if "pgd_raw" in r else "-", col(r, "pgd_noise", "{:.0%}"), col(r, "pgd_diff", "{:.0e}"),
                     col(r, "pgd_es_ta")])
    print()
    print(table(rows, ["model", "DeepFool vs foolbox (x)", "max rel L2 diff", "vs torchattacks", "restriction speed-up",
                       "PGD-10 vs torchattacks + check: fastest; per repeat", "PGD-10 vs raw 10 f+b + 1 f: fastest; per repeat",
                       "own cost per call: robcurve / torchattacks -> vs raw + check / torchattacks + check",
                       "PGD-10 vs raw 10 f+b alone: fastest", "run-to-run variation", "max pixel diff",
                       "PGD early stop vs torchattacks + check"]))
    print(f"\nload average at end {loadavg()}; goals: DeepFool >= 3x foolbox and >= 10x torchattacks (medians); PGD >= "
          "0.96x torchattacks + check and raw + check (the same output: images and predictions), judged from the own "
          "costs per call measured on a linear model (precise) over the model's passes: identical runs of a real model vary "
          "by the printed run-to-run variation, more than the 4% the goal allows, so its timed ratios are shown beside it "
          "as a cross-check")
    for r in res:
        print(f"  {r['model']}: {goal_verdict(r)}")


def goal_verdict(r: dict) -> str:
    """'met' or 'NOT met (...)' for the goals this model was measured on."""
    goals = [("df_fb", 3.0, "DeepFool vs foolbox (median)"), ("df_ta", 10.0, "DeepFool vs torchattacks (median)"),
             ("pgd_ta_implied", 0.96, "PGD vs torchattacks + check (from the own costs)"),
             ("pgd_raw_implied", 0.96, "PGD vs raw + check (from the own costs)")]

    def value(v: float | list[float]) -> float:
        return statistics.median(v) if isinstance(v, list) else v

    missed = [f"{what} {value(r[k]):.2f} < {g}" for k, g, what in goals if k in r and value(r[k]) < g]
    measured = [what for k, _, what in goals if k in r]
    if not measured:
        return "no goal measured"
    return "met" if not missed else "NOT met (" + "; ".join(missed) + ")"


if __name__ == "__main__":
    main()
