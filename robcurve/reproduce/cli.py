"""``robcurve track`` and ``robcurve reproduce``: registered on the main app by :func:`register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _overrides(n: int | None, seed: int | None, batch_size: int | None, device: str | None, dataset: str | None,
               measurements: str | None, attack: str | None, set_: list[str] | None) -> dict[str, Any]:
    from robcurve.run.config import merge, parse_set

    over: dict[str, Any] = {k: v for k, v in dict(n=n, seed=seed, batch_size=batch_size, device=device,
                                                     dataset=dataset, attack=attack).items() if v is not None}
    if measurements is not None:
        over["measurements"] = [m.strip() for m in measurements.split(",") if m.strip()]
    if set_:
        over = merge(parse_set(set_), over)
    return over


def track_cmd(
    series: Annotated[list[str], typer.Argument(help="zoo:NAME (its whole shipped series), zoo:NAME@0,5,15, a folder "
                                                     "of checkpoints, or checkpoint specs (file:..., timm:...)")],
    config: Annotated[Path | None, typer.Option(help="YAML run config (default: configs/default.yaml with "
                                                     "measurements clean,trajectory,travel and no attack)")] = None,
    out: Annotated[str | None, typer.Option(help="track folder (default runs/track/<series>)")] = None,
    arch: Annotated[str | None, typer.Option(help="model spec for checkpoint files without a sidecar, e.g. timm:resnet18")] = None,
    n: Annotated[int | None, typer.Option(help="number of samples (the same for every checkpoint)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sample selection and every random choice")] = None,
    batch_size: Annotated[int | None, typer.Option(help="samples per batch")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset (default: the config's)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    measurements: Annotated[str | None, typer.Option(help="comma list of measurements (robcurve metrics lists them)")] = None,
    attack: Annotated[str | None, typer.Option(help="pgd | deepfool | jumpout | none")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any config field: --set trajectory.T=101")] = None,
    summaries: Annotated[bool, typer.Option("--summaries/--no-summaries", help="write each checkpoint run's own "
                                                                              "summary and plots")] = True,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard stored results of the checkpoint runs")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars")] = None,
) -> None:
    """Curvature, distance and calibration over training: the same run on every checkpoint; resumable.

    One bench run folder per checkpoint under the track folder (rerun the same command to
    resume); then track.csv (metric rows with condition epoch=k), track.md, track.png (each
    statistic against epoch, all series on one figure) and track.json.
    """
    from robcurve.reproduce.track import parse_series, track
    from robcurve.run.config import SHIPPED, load_config, merge
    from robcurve.run.runner import slug

    over = _overrides(n, seed, batch_size, device, dataset, measurements, attack, set_)
    if config is None:
        config = SHIPPED / "default.yaml"
        over = merge({"measurements": ["clean", "trajectory", "travel"], "attack": "none"}, over)
    cfg = load_config(config, over)
    cks = parse_series(series, arch)
    out_dir = Path(out) if out else Path("runs") / "track" / slug("+".join(dict.fromkeys(c.series for c in cks)))
    res = track(cks, cfg, out_dir, fresh=fresh, progress=progress, summarize=summaries)
    typer.echo(f"\n{len(res.runs)} checkpoints in {res.elapsed_s:.0f} s\n")
    typer.echo((out_dir / "track.md").read_text(encoding="utf-8"))
    typer.echo(f"results: {out_dir}/ ({', '.join(res.files)})")


def reproduce_cmd(
    models: Annotated[str | None, typer.Option(help="comma list of model specs (default: the zoo's standard-trained "
                                                    "Transformers and CNNs)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="the quick mode: fewer samples, models and checkpoints "
                                                        "(minutes; see the README section on reproducing the paper)")] = False,
    config: Annotated[Path | None, typer.Option(help="YAML run config (default configs/paper.yaml)")] = None,
    out: Annotated[str | None, typer.Option(help="folder of the runs (default runs/reproduce or runs/reproduce-quick)")] = None,
    report: Annotated[str | None, typer.Option(help="folder of the report (default: <out>/report)")] = None,
    series: Annotated[list[str] | None, typer.Option(help="a training series for the evolution, as for robcurve "
                                                          "track (repeatable; default: the zoo series of the models; "
                                                          "'none' to skip)")] = None,
    n: Annotated[int | None, typer.Option(help="samples per model (default: the mode's)")] = None,
    layer_samples: Annotated[int | None, typer.Option(help="samples in the layer profile (default: the mode's)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sample selection and every random choice")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any config field of the model runs")] = None,
    leaderboard: Annotated[str, typer.Option(help="leaderboard folder for the across-model relations "
                                                  "('none': relate the report's models only)")] = "leaderboards",
    fresh: Annotated[bool, typer.Option("--fresh", help="discard stored results and start over")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars")] = None,
) -> None:
    """Measure the paper's findings and write the report (Markdown, HTML, JSON, figures); resumable.

    Every model is one bench run (plus a jump-out variant run and, for the training series,
    one run per checkpoint); rerun the same command to resume. The report states per claim
    what the paper says, what robcurve measured (n, interval, censoring, scale) and a verdict
    that follows from a stated rule.
    """
    from robcurve.reproduce.paper import reproduce

    res = reproduce(models=[m.strip() for m in models.split(",") if m.strip()] if models else None, quick=quick,
                    config=config, out=out, report_dir=report,
                    series=None if not series else [s.strip() for s in series if s.strip()],
                    n=n, layer_samples=layer_samples, seed=seed, device=device, set_=set_, fresh=fresh,
                    progress=progress, leaderboard=None if leaderboard.lower() == "none" else leaderboard)
    typer.echo(res["markdown_table"])
    typer.echo(f"\nreport: {res['report_dir']}/ (report.md, report.html, report.json, figures/) in {res['elapsed_s']:.0f} s")


def register(app: typer.Typer) -> None:
    """Add ``track`` and ``reproduce`` to the ``robcurve`` app."""
    app.command("track")(track_cmd)
    app.command("reproduce")(reproduce_cmd)
