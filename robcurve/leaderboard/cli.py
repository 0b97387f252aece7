"""``robcurve submit``, ``robcurve leaderboard ...`` and ``robcurve cite``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from robcurve.errors import RobcurveError

lb_app = typer.Typer(no_args_is_help=False, invoke_without_command=True,
                     help="Show, render, verify and import leaderboard entries (leaderboards/).")
ROOT_OPT = typer.Option("--root", help="leaderboard folder (default: ./leaderboards)")


@lb_app.callback()
def show(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="only this dataset, e.g. fashion-mnist")] = None,
    threat: Annotated[str | None, typer.Option(help="only this threat model: Linf | L2 | corruptions")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | markdown | csv | latex | html | json")] = "table",
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Print the ranking (RobustBench's rule: robust, then clean accuracy) and the relations across models."""
    if ctx.invoked_subcommand is not None:
        return
    from robcurve.leaderboard import load_entries
    from robcurve.leaderboard.render import (
        html_page,
        latex,
        matched_pairs,
        matched_verdict,
        relations,
        relations_table,
        text_table,
        tidy,
    )

    df = tidy(load_entries(root, dataset, threat))
    if df.empty:
        raise RobcurveError(f"no entries in {root}" + (f" for {dataset}/{threat}" if dataset or threat else ""),
                            fix="submit a run with robcurve submit RUN_DIR")
    if fmt == "csv":
        typer.echo(df.to_csv(index=False), nl=False)
    elif fmt == "latex":
        typer.echo(latex(df), nl=False)
    elif fmt == "json":
        typer.echo(df.to_json(orient="records", indent=2))
    elif fmt == "html":
        typer.echo(html_page(df, {k: relations(s) for k, s in df.groupby(["dataset", "threat_model"])}, {}), nl=False)
    elif fmt in ("table", "markdown"):
        tf = "github" if fmt == "markdown" else "simple"
        for (ds, th), sub in df.groupby(["dataset", "threat_model"], sort=True):
            typer.echo(f"\n{ds} / {th}: ranked by robust accuracy, then clean accuracy († training checkpoint)\n")
            typer.echo(text_table(sub, tf))
            typer.echo("\nRelations across models (Spearman, bootstrap 95% interval over models):\n")
            typer.echo(relations_table(relations(sub), tf))
            typer.echo("\n" + matched_verdict(matched_pairs(sub)))
    else:
        raise RobcurveError(f"unknown format {fmt!r}", fix="use table, markdown, csv, latex, html or json")


@lb_app.command("render")
def render(root: Annotated[Path, ROOT_OPT] = Path("leaderboards")) -> None:
    """Write README.md, index.html, leaderboard.csv, leaderboard.tex, relations.json and plots into the folder."""
    from robcurve.leaderboard import load_entries
    from robcurve.leaderboard.render import render_all

    for p in render_all(load_entries(root), root):
        typer.echo(f"wrote {p}")


@lb_app.command("relations")
def relations_cmd(
    dataset: Annotated[str | None, typer.Option(help="only this dataset")] = None,
    threat: Annotated[str | None, typer.Option(help="only this threat model")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Curvedness against attack distances and calibration across models, with n and intervals."""
    import json

    from robcurve.leaderboard import load_entries
    from robcurve.leaderboard.render import (
        matched_pairs,
        matched_verdict,
        relations,
        relations_table,
        tidy,
    )

    df = tidy(load_entries(root, dataset, threat))
    out = {}
    for (ds, th), sub in df.groupby(["dataset", "threat_model"], sort=True):
        rels = relations(sub)
        pairs = matched_pairs(sub)
        out[f"{ds}/{th}"] = {"relations": [r.to_dict() for r in rels], "matched_verdict": matched_verdict(pairs)}
        if not json_out:
            typer.echo(f"\n{ds} / {th}\n")
            typer.echo(relations_table(rels, "simple"))
            typer.echo("\n" + matched_verdict(pairs))
    if json_out:
        typer.echo(json.dumps(out, indent=2, allow_nan=False))


@lb_app.command("verify")
def verify(
    entry: Annotated[Path, typer.Argument(help="an entry file leaderboards/<dataset>/<threat>/<id>.json")],
    n: Annotated[int, typer.Option("--n", help="samples to re-measure")] = 8,
    seed: Annotated[int | None, typer.Option(help="seed of the sample choice (default: random, printed)")] = None,
    weights: Annotated[str | None, typer.Option(help="weights file, for timm:/file: models")] = None,
    model_dir: Annotated[str | None, typer.Option(help="RobustBench model dir")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset folder")] = None,
    rtol: Annotated[float, typer.Option(help="relative tolerance of re-measured values")] = 1e-3,
    atol: Annotated[float, typer.Option(help="absolute tolerance of re-measured values")] = 1e-4,
) -> None:
    """Re-check a submitted entry: digests, numbers from its per-sample results, re-measured samples."""
    from robcurve.leaderboard.submit import verify_entry

    v = verify_entry(entry, weights=weights, model_dir=model_dir, data_dir=data_dir, verify_n=n, seed=seed, rtol=rtol,
                     atol=atol, progress=True)
    typer.echo(f"OK {entry}: digests and numbers match its per-sample results; re-measured {len(v.samples)} samples "
               f"(seed {v.seed}) in {', '.join(v.measurements)}: {v.compared} values within rtol {rtol:g} / atol {atol:g}"
               + (f"; skipped: {', '.join(v.skipped)}" if v.skipped else ""))


@lb_app.command("import")
def import_cmd(
    src: Annotated[Path, typer.Argument(help="a RobustBench model_info JSON file or a folder of them")],
    dataset: Annotated[str | None, typer.Option(help="dataset, if neither the file nor its folders say")] = None,
    threat: Annotated[str | None, typer.Option(help="threat model, if neither the file nor its folders say")] = None,
    family: Annotated[str | None, typer.Option(help="architecture family: transformer | cnn | other")] = None,
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Import RobustBench model_info files as rows (accuracies filled, robcurve columns empty, marked imported)."""
    from robcurve.leaderboard import import_robustbench

    for p in import_robustbench(src, root, dataset, threat, family):
        typer.echo(f"imported {p}")


def submit(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder (robcurve bench --out)")],
    entry_id: Annotated[str | None, typer.Option("--id", help="entry file name (default: from the model name)")] = None,
    name: Annotated[str | None, typer.Option(help="display name (default: the model spec)")] = None,
    authors: Annotated[str, typer.Option(help="authors of the model")] = "",
    venue: Annotated[str, typer.Option(help="venue of the model's paper")] = "",
    link: Annotated[str, typer.Option(help="link to the paper or code")] = "",
    footnote: Annotated[str | None, typer.Option(help="text added to the entry's footnote")] = None,
    verify_n: Annotated[int, typer.Option("--verify-n", help="samples re-measured for verification")] = 8,
    seed: Annotated[int | None, typer.Option(help="seed of the verification sample (default: random, recorded)")] = None,
    rtol: Annotated[float, typer.Option(help="relative tolerance of re-measured values")] = 1e-3,
    atol: Annotated[float, typer.Option(help="absolute tolerance of re-measured values")] = 1e-4,
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Validate and verify a finished run, then write its leaderboard entry (and say what to commit)."""
    from robcurve.leaderboard.io import SAMPLES_SUFFIX
    from robcurve.leaderboard.submit import submit as _submit

    path, e = _submit(run_dir, root, entry_id=entry_id, name=name, authors=authors, venue=venue, link=link,
                      footnote=footnote, verify_n=verify_n, seed=seed, rtol=rtol, atol=atol, progress=True)
    v = e.robcurve.verification
    typer.echo(f"verified: re-measured {len(v.samples)} samples (seed {v.seed}) in {', '.join(v.measurements)}; "
               f"{v.compared} values within rtol {rtol:g} / atol {atol:g}"
               + (f"; skipped: {', '.join(v.skipped)}" if v.skipped else ""))
    samples = path.with_name(path.name.removesuffix(".json") + SAMPLES_SUFFIX)
    typer.echo(f"wrote {path} and {samples}\nto publish: robcurve leaderboard render --root {root} && "
               f"git add {path} {samples} {root}/README.md {root}/index.html {root}/leaderboard.* {root}/relations*")


BIBTEX = """@inproceedings{kim2024curved,
  title     = {Curved Representation Space of Vision Transformers},
  author    = {Kim, Juyeop and Park, Junha and Kim, Songkuk and Lee, Jong-Seok},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2024},
  note      = {arXiv:2210.05742}
}

@software{robcurve,
  title   = {robcurve: curvature, boundary distance and calibration benchmark for vision models},
  author  = {{The robcurve developers}},
  year    = {2026},
  version = {VERSION},
  note    = {Measures the quantities of Kim et al. (AAAI 2024) as a benchmark}
}
"""


def cite() -> None:
    """Print BibTeX entries for the paper robcurve measures and for robcurve itself."""
    import robcurve

    typer.echo(BIBTEX.replace("VERSION", robcurve.__version__), nl=False)
