"""Speed and agreement of robcurve's attacks against torchattacks and foolbox.

    python benchmarks/attacks.py [--n 32] [--model vit] [--weights FILE] [--threads 1]

One run, one model, the same samples for every library:
  * DeepFool L2 (50 steps, overshoot 0.02, all 10 classes): robcurve, foolbox, torchattacks.
    torchattacks' DeepFool loops over images and builds a full Jacobian per step, so it runs on
    the first ``--ta-deepfool-n`` samples only (default 8), and robcurve is timed again on
    that subset for the ratio (``ours vs torchattacks``).
  * PGD L∞, 10 steps, eps 0.1 (METHOD.md's Fashion-MNIST default), step 2.5·eps/steps, seeded
    random start: robcurve with early stop (default) and without (torchattacks' algorithm),
    torchattacks, foolbox.
  * The model's raw forward+backward throughput (cross-entropy gradient w.r.t. the input of
    the whole batch) against robcurve's PGD throughput (image-steps per second); the ratio
    without early stop measures the attack's overhead (target >= 0.9).
Times are the minimum over ``--repeat`` interleaved runs (the CPUs may be shared).

Model: the zoo architecture (``robcurve.zoo.archs.build``), with weights from
``robcurve/zoo/weights/<arch>-fmnist.safetensors`` (or ``--weights``) when the file exists,
else timm's random initialisation; a random-init model is ~10% accurate, so by default its
own predictions are the labels (``--labels auto``), which makes every sample clean-correct.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robcurve.attacks import deepfool, pgd, run_attack  # noqa: E402
from robcurve.attacks.base import AttackResult  # noqa: E402


def load_model(arch: str, weights: str | None) -> tuple[torch.nn.Module, str]:
    from robcurve.models.wrapper import RobcurveModel
    from robcurve.zoo.archs import build

    net = build(arch)
    path = Path(weights) if weights else ROOT / "robcurve" / "zoo" / "weights" / f"{arch}-fmnist.safetensors"
    if path.exists():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(path)))
        used = f"weights {path}"
    elif weights:
        raise SystemExit(f"weights file not found: {path}")
    else:
        used = f"random init (no {path.relative_to(ROOT)})"
    return RobcurveModel(net, (0.286,), (0.353,)), used


def timed(fn, repeat: int) -> tuple[float, AttackResult]:
    best, res = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t)
    return best, res


def raw_fb_time(model, x, y, calls: int, repeat: int) -> float:
    """Seconds for ``calls`` forward+backward passes of the batch (min over repeats)."""

    def once():
        for _ in range(calls):
            xi = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xi), y)
            torch.autograd.grad(loss, xi)

    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - t)
    return best


def row(name, t, r: AttackResult, norm: str, n: int) -> list:
    return [name, n, f"{t:.2f}", f"{r.median_distance(norm):.4f}", f"{100 * r.success_rate:.1f}%",
            f"{100 * r.robust_accuracy:.1f}%", f"{float(r.queries.double().mean()):.0f}"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=32, help="samples (default 32)")
    ap.add_argument("--model", default="vit", help="zoo architecture: vit, swin, resnet, convnext")
    ap.add_argument("--weights", default=None, help="safetensors state dict for the architecture")
    ap.add_argument("--labels", choices=["auto", "true", "pred"], default="auto",
                    help="auto: true labels with weights, the model's predictions at random init")
    ap.add_argument("--eps", type=float, default=0.1, help="PGD L∞ budget (default 0.1)")
    ap.add_argument("--ta-deepfool-n", type=int, default=8, help="samples for torchattacks' DeepFool (slow)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the minimum is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--grad-modes", action="store_true", help="also time DeepFool's grad_mode loop vs vmap")
    args = ap.parse_args(argv)

    from tabulate import tabulate

    import robcurve.data.fashion_mnist  # noqa: F401
    from robcurve.data.base import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, used = load_model(args.model, args.weights)
    ds = load_dataset("fashion-mnist-embedded", n=args.n, seed=0)
    x = ds.images
    with torch.no_grad():
        pred = model(x).argmax(1)
    use_pred = args.labels == "pred" or (args.labels == "auto" and used.startswith("random"))
    y = pred if use_pred else ds.labels
    n_par = sum(p.numel() for p in model.parameters())
    print(f"model: zoo {args.model} ({n_par / 1e6:.2f}M params), {used}")
    print(f"data: fashion-mnist-embedded, n={args.n}, labels={'model predictions' if use_pred else 'true'}, "
          f"clean accuracy {100 * float((pred == y).double().mean()):.1f}%")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; times are min over {args.repeat} runs\n")

    # -- DeepFool L2 ---------------------------------------------------------------------------
    df_kw = dict(norm="L2", steps=50, overshoot=0.02)
    t_ours, r_ours = timed(lambda: deepfool(model, x, y, candidates=10, **df_kw), args.repeat)
    t_fb, r_fb = timed(lambda: run_attack("deepfool", model, x, y, backend="foolbox", candidates=10, **df_kw), args.repeat)
    m = min(args.ta_deepfool_n, args.n)
    xs, ys = x[:m], y[:m]
    t_ours_s, r_ours_s = timed(lambda: deepfool(model, xs, ys, candidates=10, **df_kw), args.repeat)
    t_ta, r_ta = timed(lambda: run_attack("deepfool", model, xs, ys, backend="torchattacks", **df_kw), 1)
    rows = [row("robcurve", t_ours, r_ours, "L2", args.n), row("foolbox", t_fb, r_fb, "L2", args.n),
            row("robcurve (subset)", t_ours_s, r_ours_s, "L2", m), row("torchattacks (subset)", t_ta, r_ta, "L2", m)]
    hdr = ["DeepFool L2", "n", "time s", "median L2", "success", "robust acc", "queries/img"]
    print(tabulate(rows, headers=hdr, tablefmt="github"))
    d_fb = r_ours.median_distance("L2") / r_fb.median_distance("L2") - 1
    d_ta = r_ours_s.median_distance("L2") / r_ta.median_distance("L2") - 1
    print(f"\nDeepFool ours vs foolbox:      {t_fb / t_ours:.2f}x faster (target >= 1.5x), median L2 {100 * d_fb:+.2f}%")
    print(f"DeepFool ours vs torchattacks: {t_ta / t_ours_s:.2f}x faster (target >= 5x), median L2 {100 * d_ta:+.2f}% "
          f"(torchattacks on the first {m} samples only, ours timed on the same {m})")
    bad = (r_ours.success & (r_ours.pred_adv == y)).sum()
    with torch.no_grad():
        really = model(r_ours.x_adv).argmax(1) != y
    print(f"every successful robcurve example re-checked misclassified: {bool(really[r_ours.success].all())} "
          f"({int(bad)} inconsistent)")

    if args.grad_modes:
        t_vmap, _ = timed(lambda: deepfool(model, x, y, grad_mode="vmap", **df_kw), args.repeat)
        print(f"DeepFool grad_mode: loop {t_ours:.2f} s, vmap {t_vmap:.2f} s")

    # -- PGD L∞ ---------------------------------------------------------------------------------------
    pk = dict(eps=args.eps, norm="Linf", steps=10, seed=0)
    t_es, r_es = timed(lambda: pgd(model, x, y, **pk), args.repeat)
    t_ex, r_ex = timed(lambda: pgd(model, x, y, early_stop=False, **pk), args.repeat)
    t_tap, r_tap = timed(lambda: run_attack("pgd", model, x, y, backend="torchattacks", **pk), args.repeat)
    t_fbp, r_fbp = timed(lambda: run_attack("pgd", model, x, y, backend="foolbox", **pk), args.repeat)
    print()
    rows = [row("robcurve (early stop)", t_es, r_es, "Linf", args.n),
            row("robcurve (no early stop)", t_ex, r_ex, "Linf", args.n),
            row("torchattacks", t_tap, r_tap, "Linf", args.n), row("foolbox", t_fbp, r_fbp, "Linf", args.n)]
    hdr[0], hdr[3] = f"PGD L∞ {args.eps:g}, 10 steps", "median L∞"
    print(tabulate(rows, headers=hdr, tablefmt="github"))
    print(f"\nPGD ours (no early stop) vs torchattacks: {t_tap / t_ex:.2f}x, vs foolbox: {t_fbp / t_ex:.2f}x; "
          f"robust accuracy {100 * r_ex.robust_accuracy:.1f}% vs {100 * r_tap.robust_accuracy:.1f}% / "
          f"{100 * r_fbp.robust_accuracy:.1f}%")
    print(f"PGD ours (early stop) vs torchattacks: {t_tap / t_es:.2f}x")

    # -- throughput: raw f+b and PGD without early stop, interleaved ---------------------------------
    t_raw, t_pgd = float("inf"), float("inf")
    raw_fb_time(model, x, y, calls=1, repeat=1)  # warm-up
    for _ in range(max(5, args.repeat)):
        t_raw = min(t_raw, raw_fb_time(model, x, y, calls=10, repeat=1))
        t = time.perf_counter()
        pgd(model, x, y, early_stop=False, **pk)
        t_pgd = min(t_pgd, time.perf_counter() - t)
    raw_tp = 10 * args.n / t_raw
    print(f"\nraw forward+backward: {raw_tp:.0f} images/s ({1000 * t_raw / 10:.1f} ms per batch of {args.n})")
    print(f"PGD throughput, no early stop: {10 * args.n / t_pgd:.0f} image-steps/s = {t_raw / t_pgd:.2f}x raw "
          f"(target >= 0.9x; includes the clean forward and the final check, 2 of its 32 pass-equivalents)")
    print(f"PGD throughput, early stop:    {10 * args.n / t_es:.0f} nominal image-steps/s = {t_raw / t_es:.2f}x raw")

if __name__ == "__main__":
    main()
