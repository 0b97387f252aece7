"""Print the compact Markdown tables the README quotes from the committed boards (run after rendering).

    .venv/bin/python scripts/readme_tables.py leaderboards          # the zoo board
    .venv/bin/python scripts/readme_tables.py leaderboards/population
"""

from __future__ import annotations

import sys

from tabulate import tabulate

import robcurve.leaderboard as lb
from robcurve.leaderboard.render import (
    CURVATURE,
    _cell,
    _f,
    family_contrasts,
    mixed_relations,
    relations,
    relations_table,
    robust_label,
)

COLS = [(CURVATURE, "curvedness [0, t]"), ("travel_median", "travel (L∞)"), ("deepfool_l2_median", "DeepFool L2"),
        ("pgd_distance_median", "PGD dist (L∞)"), ("sece", "sECE"), ("spearman_bw_curvedness_travel", "ρ(curv, t) within"),
        ("ablation_attention_ratio_median", "attn-frozen ratio"), ("ablation_gates_ratio_median", "gates-frozen ratio"),
        ("ajo_ratio_minus_null_median", "jump ratio − null")]


def main(root: str) -> None:
    entries = lb.load_entries(root)
    df = lb.tidy(entries)
    cols = [(c, h) for c, h in COLS if c in df and df[c].notna().any()]
    body = [[r["rank"], r["id"] + (" †" if r["series"] else ""), r["family"], _f(r["clean_acc"], 4),
             _f(100 * r["test_acc_full"], 4) if r["test_acc_full"] == r["test_acc_full"] and r["test_acc_full"] is not None else "–",
             robust_label(r), *[_cell(r, c) for c, _ in cols]] for _, r in df.iterrows()]
    print(tabulate(body, headers=["#", "model", "family", "clean % (n)", "test % (10k)", "robust %", *[h for _, h in cols]],
                   tablefmt="github", disable_numparse=True))
    print()
    rels = relations(df)
    print(relations_table(rels))
    print()
    cons = family_contrasts(df)
    if cons:
        print(tabulate([[c["metric"], f"{c['a']} − {c['b']}", f"{c['n_a']} vs {c['n_b']}", _f(c["diff"]), _f(c["p"]),
                         _f(c["p_holm"])] for c in cons],
                       headers=["statistic", "families", "models", "difference of medians", "exact p", "Holm p"],
                       tablefmt="github", disable_numparse=True))
        print()
    for r in mixed_relations(entries, root):
        if "coef" in r:
            print(f"- mixed model: {r['x']} -> {r['y']}: {r['coef']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}], p = {r['p']:.2g}, "
                  f"{r['n_samples']} samples of {r['n_models']} models ({r['formula']})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "leaderboards")
