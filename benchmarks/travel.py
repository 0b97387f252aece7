"""Travel-distance search: forwards per image against the minimum for the rule, per architecture.

    python benchmarks/travel.py                 # every model, 32 images, FGSM direction
    python benchmarks/travel.py --quick         # 3 models, 16 images, 1 repeat (< 2 min)

The rule (METHOD.md §3): the first point of the grid ε_k = k·h (h = 1e-3, up to eps_max = 1)
where the label has flipped, then bisection of (ε_{k-1}, ε_k] to tol = 1e-6. Its minimum cost
per image is 1 (clean) + k + ⌈log2(h / tol)⌉ forwards (1 + ⌈eps_max / h⌉ when censored, 1 when
misclassified): every grid point up to the first flip must be seen, and the bisection is
fixed. Compared per model:

* robcurve's search (coarse stride 4, the cells behind the frontier filled as it advances):
  forwards per image, their ratio to the minimum, wall time;
* the previous search (fine grid in rounds of 16, 32, 64, … points per sample, then the same
  bisection), re-implemented here as the reference: forwards, time, and whether the distances
  are identical (they must be: the same rule).

Fixed: the same images, labels, directions (FGSM) and settings, the thread count, frozen
parameters; times are median [min-max] over interleaved repeats.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
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
    setup_threads,
    spread,
    table,
)

QUICK_MODELS = "zoo-vit,zoo-convnext,timm-resnet18"


def previous_search(model, x, y, d, h=1e-3, tol=1e-6, eps_max=1.0, chunk=4096):
    """The search robcurve used before (same rule): fine grid in doubling rounds, then bisection.

    Returns (eps (N,) float64, NaN = censored, 0 = misclassified; forwards (N,)).
    """
    n = len(x)
    view = (-1,) + (1,) * (x.dim() - 1)

    def preds(rows: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for a in range(0, len(rows), chunk):
                r = rows[a:a + chunk]
                out.append(model(torch.addcmul(x[r], eps[a:a + chunk].to(x.dtype).view(view), d[r])).argmax(1))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    fwd = torch.ones(n, dtype=torch.long)
    correct = preds(torch.arange(n), torch.zeros(n, dtype=torch.float64)) == y
    n_steps = max(1, math.ceil(eps_max / h - 1e-9))
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.full((n,), math.nan, dtype=torch.float64)
    active = correct.clone()
    k0, grow = 1, 16
    while active.any() and k0 <= n_steps:
        ids = active.nonzero().flatten()
        m = min(max(1, chunk // len(ids)), grow, n_steps - k0 + 1)
        grow *= 2
        ks = torch.arange(k0, k0 + m)
        rows = ids.repeat_interleave(m)
        eps = torch.clamp(ks.double() * h, max=eps_max).repeat(len(ids))
        p = preds(rows, eps).view(len(ids), m)
        fwd += torch.bincount(rows, minlength=n)
        flip = p != y[ids].view(-1, 1)
        has = flip.any(1)
        kf = ks[flip.int().argmax(1)[has]]
        hi[ids[has]] = torch.clamp(kf.double() * h, max=eps_max)
        lo[ids[has]] = torch.clamp((kf - 1).double() * h, max=eps_max)
        active[ids[has]] = False
        k0 += m
    fl = (correct & ~hi.isnan()).nonzero().flatten()
    if len(fl):
        width = float((hi[fl] - lo[fl]).max())
        for _ in range(max(0, math.ceil(math.log2(width / tol))) if width > tol else 0):
            mid = (lo[fl] + hi[fl]) / 2
            f = preds(fl, mid) != y[fl]
            fwd[fl] += 1
            hi[fl] = torch.where(f, mid, hi[fl])
            lo[fl] = torch.where(f, lo[fl], mid)
    return torch.where(correct, hi, torch.zeros(n, dtype=torch.float64)), fwd


def minimum(td) -> torch.Tensor:
    """Per sample, the fewest forwards the rule allows (see the module docstring)."""
    n_steps = max(1, math.ceil(td.eps_max / td.h - 1e-9))
    k = torch.ceil(td.eps / td.h - 1e-9).nan_to_num(0).long()
    fl = td.correct & ~td.censored
    iters = max(0, math.ceil(math.log2(td.h / td.tol))) if fl.any() else 0
    return torch.where(~td.correct, 1, torch.where(td.censored, 1 + n_steps, 1 + k + iters))


def bench_model(name: str, args: argparse.Namespace) -> dict:
    from robcurve.geometry import get_direction, travel_distance

    model = build_model(name)
    x, y, what = images(name, model, args.n)
    d = get_direction(model, x, y)
    print(f"\n## {name} ({FAMILY[name]}): {what}; load {loadavg()}")
    times, last = interleaved({
        "ours": lambda: travel_distance(model, x, y, d, chunk=4096),
        "previous": lambda: previous_search(model, x, y, d),
    }, args.repeats)
    td = last["ours"]
    prev_eps, prev_fwd = last["previous"]
    mn = minimum(td)
    out = {"model": name, "ours": float(td.forwards.double().mean()), "min": float(mn.double().mean()),
           "prev": float(prev_fwd.double().mean()), "t_ours": times["ours"], "t_prev": times["previous"],
           "equal": bool(torch.equal(td.eps.nan_to_num(-1), prev_eps.nan_to_num(-1))),
           "censored": int(td.n_censored), "correct": int(td.correct.sum()),
           "worst": float((td.forwards.double() / mn.double()).max())}
    out["ratio"] = out["ours"] / out["min"]
    print(f"forwards per image: ours {out['ours']:.1f}, minimum {out['min']:.1f} -> {out['ratio']:.3f}x "
          f"(worst sample {out['worst']:.2f}x); previous search {out['prev']:.1f} ({out['prev'] / out['min']:.2f}x); "
          f"distances identical to the previous search: {out['equal']}; time ours {spread(times['ours'])} s, "
          f"previous {spread(times['previous'])} s; {out['correct']} correct, {out['censored']} censored; "
          f"median travel {td.median():.4g}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all")
    ap.add_argument("--n", type=int, default=32, help="images (default 32)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default; default 1)")
    ap.add_argument("--quick", action="store_true", help=f"{QUICK_MODELS}, 16 images, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.models = args.models if args.models != "all" else QUICK_MODELS
        args.n, args.repeats = min(args.n, 16), 1
    setup_threads(args.threads)
    header("robcurve travel-distance search: forwards per image vs the rule's minimum", args.threads)
    print("rule: first flip on the grid h = 1e-3 up to eps_max = 1, then bisection to tol = 1e-6; "
          "direction FGSM; chunk 4096 for both searches")
    res = [bench_model(m, args) for m in parse_models(args.models)]
    rows = [[r["model"], f"{r['ours']:.1f}", f"{r['min']:.1f}", f"{r['ratio']:.3f}", f"{r['prev']:.1f}",
             f"{r['prev'] / r['min']:.2f}", r["equal"], spread(r["t_ours"]), spread(r["t_prev"])] for r in res]
    print()
    print(table(rows, ["model", "forwards/img", "minimum", "ratio", "previous search", "previous ratio",
                       "identical distances", "time ours (s)", "time previous (s)"]))
    print(f"\nmean ratio {statistics.mean(r['ratio'] for r in res):.3f}; load average at end {loadavg()}; "
          "goal: <= 1.15x the minimum")


if __name__ == "__main__":
    main()
