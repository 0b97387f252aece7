"""``robcurve submit``, ``robcurve leaderboard ...`` and ``robcurve cite``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import robcurve
from robcurve.errors import RobcurveError
from robcurve.leaderboard import import_robustbench, load_entries
from robcurve.leaderboard.io import SAMPLES_SUFFIX, entry_files
from robcurve.leaderboard.schema import DATASETS, THREAT_MODELS
from robcurve.run.config import load_config

lb_app = typer.Typer(no_args_is_help=False, invoke_without_command=True,
                     help="Show, render, verify and import leaderboard entries (leaderboards/).")
ROOT_OPT = typer.Option("--root", help="leaderboard folder (default: ./leaderboards)")


FORMATS = ("table", "markdown", "csv", "latex", "html", "json")


def check_board_names(dataset: str | None, threat: str | None) -> None:
    """Unknown dataset / threat model names get one message with the closest known name."""
    import difflib

    for value, known, what, flag in ((dataset, DATASETS, "dataset", "--dataset"), (threat, THREAT_MODELS, "threat model", "--threat")):
        if value is not None and value not in known:
            close = difflib.get_close_matches(value, known, n=1)
            raise RobcurveError(f"unknown {what} {value!r}" + (f"; did you mean {close[0]!r}?" if close else ""),
                                fix=f"{flag} takes one of {', '.join(known)}")


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
    # deferred: numpy, pandas (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.render import (
        csv_text,
        html_page,
        latex,
        matched_pairs,
        matched_verdict,
        relations,
        relations_table,
        text_table,
        tidy,
    )

    check_board_names(dataset, threat)
    if fmt not in FORMATS:
        raise RobcurveError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    df = tidy(load_entries(root, dataset, threat))
    if df.empty:
        raise RobcurveError(f"no entries in {root}" + (f" for {dataset or '*'}/{threat or '*'}" if dataset or threat else ""),
                            fix="submit a run with robcurve submit RUN_DIR")
    if fmt == "csv":
        typer.echo(csv_text(df), nl=False)
    elif fmt == "latex":
        typer.echo(latex(df), nl=False)
    elif fmt == "json":
        typer.echo(df.to_json(orient="records", indent=2))
    elif fmt == "html":
        typer.echo(html_page(df, {k: relations(s) for k, s in df.groupby(["dataset", "threat_model"])}, plotly_src=None),
                   nl=False)  # one self-contained page on stdout: plotly's script inlined
    elif fmt in ("table", "markdown"):
        tf = "github" if fmt == "markdown" else "simple"
        for (ds, th), sub in df.groupby(["dataset", "threat_model"], sort=True):
            typer.echo(f"\n{ds} / {th}: ranked by robust accuracy, then clean accuracy († training checkpoint)\n")
            typer.echo(text_table(sub, tf, markdown=fmt == "markdown"))
            typer.echo("\nRelations across models (Spearman, bootstrap 95% interval over models):\n")
            typer.echo(relations_table(relations(sub), tf))
            typer.echo("\n" + matched_verdict(matched_pairs(sub)))
    else:
        raise RobcurveError(f"unknown format {fmt!r}", fix="use table, markdown, csv, latex, html or json")


@lb_app.command("render")
def render(root: Annotated[Path, ROOT_OPT] = Path("leaderboards")) -> None:
    """Write README.md, index.html, leaderboard.csv, leaderboard.tex, relations.json and plots into the folder."""
    # deferred: numpy, pandas (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.render import render_all

    entries = load_entries(root)
    if not entries:
        raise RobcurveError(f"no entries in {root}: nothing to render", where=str(root),
                            fix="submit a run with robcurve submit RUN_DIR, or pass --root")
    for p in render_all(entries, root):
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

    # deferred: numpy, pandas (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.render import (
        matched_pairs,
        matched_verdict,
        relations,
        relations_table,
        tidy,
    )

    check_board_names(dataset, threat)
    df = tidy(load_entries(root, dataset, threat))
    if df.empty:
        raise RobcurveError(f"no entries in {root}" + (f" for {dataset or '*'}/{threat or '*'}" if dataset or threat else ""),
                            fix="submit a run with robcurve submit RUN_DIR, or pass --root")
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
    entry: Annotated[Path | None, typer.Argument(help="an entry file leaderboards/<dataset>/<threat>/<id>.json")] = None,
    all_: Annotated[bool, typer.Option("--all", help="verify every entry under --root (what a leaderboard's CI runs)")] = False,
    n: Annotated[int, typer.Option("--n", help="samples to re-measure")] = 8,
    seed: Annotated[int | None, typer.Option(help="seed of the sample choice (default: random, printed)")] = None,
    weights: Annotated[str | None, typer.Option(help="weights file, for timm:/file: models")] = None,
    model_dir: Annotated[str | None, typer.Option(help="RobustBench model dir")] = None,
    data_dir: Annotated[str | None, typer.Option(help="dataset folder")] = None,
    rtol: Annotated[float, typer.Option(help="relative tolerance of re-measured values")] = 1e-3,
    atol: Annotated[float, typer.Option(help="absolute tolerance of re-measured values")] = 1e-4,
    no_remeasure: Annotated[bool, typer.Option("--no-remeasure", help="check digests and fields only (no model needed)")] = False,
    sign: Annotated[bool, typer.Option("--sign", help="maintainers: after a full check with re-measurement, add the "
                                                        "content digest to an entry made before entries were signed")] = False,
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Re-check submitted entries: digests, every ranked field from the per-sample results, re-measured samples."""
    # deferred: numpy (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.submit import check_args, verify_entry

    check_args(verify_n=n, rtol=rtol, atol=atol)
    if all_ == (entry is not None):
        raise RobcurveError("pass one entry file or --all", fix="e.g. robcurve leaderboard verify --all --root leaderboards")
    if all_:
        files, passed = entry_files(root)
        files = [f for f in files if '"robcurve"' in f.read_text(encoding="utf-8", errors="replace")[:1 << 20]]
    else:
        files, passed = [entry], []
    failed = list(passed)
    for f in files:
        try:
            v = verify_entry(f, weights=weights, model_dir=model_dir, data_dir=data_dir, verify_n=n, seed=seed, rtol=rtol,
                             atol=atol, remeasure_samples=not no_remeasure, sign=sign, progress=not all_,
                             root=root if all_ else None)
        except RobcurveError as e:
            if not all_:
                raise
            failed.append(str(e))
            typer.echo(f"FAIL {f}: {e}")
            continue
        if v is None:
            typer.echo(f"OK {f}: digests, content digest and every ranked field match its per-sample results "
                       "(not re-measured)")
        else:
            typer.echo(f"OK {f}: digests, content digest and every ranked field match its per-sample results; "
                       f"re-measured {len(v.samples)} samples (seed {v.seed}) in {', '.join(v.measurements)}: "
                       f"{v.compared} values within rtol {rtol:g} / atol {atol:g}"
                       + (f"; skipped: {', '.join(v.skipped)}" if v.skipped else "") + ("; signed" if sign else ""))
    if failed:
        raise RobcurveError(f"{len(failed)} of {len(files) + len(passed)} entries failed verification",
                            where=str(root), fix="see the FAIL lines above")


@lb_app.command("protocol")
def protocol_cmd(config: Annotated[Path, typer.Argument(help="the run config that defines a board, e.g. configs/leaderboard-fmnist.yaml")]) -> None:
    """Print the protocol digest of a config (what a board's protocol.yaml names)."""
    # deferred: numpy (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.submit import protocol_digest

    cfg = load_config(config, {"model": "zoo:vit-fmnist"})
    typer.echo(f"config: {config}\ndigest: {protocol_digest(cfg.model_dump())}")


@lb_app.command("import")
def import_cmd(
    src: Annotated[Path, typer.Argument(help="a RobustBench model_info JSON file or a folder of them")],
    dataset: Annotated[str | None, typer.Option(help="dataset, if neither the file nor its folders say")] = None,
    threat: Annotated[str | None, typer.Option(help="threat model, if neither the file nor its folders say")] = None,
    family: Annotated[str | None, typer.Option(help="architecture family: transformer | cnn | other")] = None,
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Import RobustBench model_info files as rows (accuracies filled, robcurve columns empty, marked imported)."""
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
    replace: Annotated[bool, typer.Option("--replace", help="replace an existing entry of this id (recorded in history.jsonl)")] = False,
    allow_below_chance: Annotated[bool, typer.Option("--allow-below-chance", help="submit a model at or below chance (marked)")] = False,
    root: Annotated[Path, ROOT_OPT] = Path("leaderboards"),
) -> None:
    """Validate and verify a finished run, then write its leaderboard entry (and say what to commit)."""
    # deferred: numpy (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.submit import submit as _submit

    path, e = _submit(run_dir, root, entry_id=entry_id, name=name, authors=authors, venue=venue, link=link,
                      footnote=footnote, verify_n=verify_n, seed=seed, rtol=rtol, atol=atol, replace=replace,
                      allow_below_chance=allow_below_chance, progress=True)
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
  note      = {arXiv:2210.05742},
  url       = {https://arxiv.org/abs/2210.05742}
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
    typer.echo(BIBTEX.replace("VERSION", robcurve.__version__), nl=False)
