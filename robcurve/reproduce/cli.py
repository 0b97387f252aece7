"""``robcurve track`` and ``robcurve reproduce``: registered on the main app by :func:`register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _overrides(n: int | None, seed: int | None, batch_size: int | None, device: str | None, dataset: str | None,
               measurements: str | None, attack: str | None, set_: list[str] | None) -> dict[str, Any]:
    # deferred: pydantic, yaml (robcurve --help and light commands stay fast)
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
    # deferred: numpy, pandas, pydantic, yaml (robcurve --help and light commands stay fast)
    from robcurve.reproduce.track import parse_series, track

    # deferred: pydantic, yaml (robcurve --help and light commands stay fast)
    from robcurve.run.config import SHIPPED, load_config, merge

    # deferred: numpy, pydantic, safetensors, torch, tqdm, yaml (robcurve --help and light commands stay fast)
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
    from_files: Annotated[Path | None, typer.Option("--from-files", help="rebuild the report in this folder from the "
                                                                        "files its inputs.json names (no model)")] = None,
    board: Annotated[str, typer.Option(help="leaderboard folder whose verified entries are the models (measured under "
                                            "its protocol)")] = "leaderboards/population",
    dataset: Annotated[str, typer.Option(help="dataset folder of the board")] = "fashion-mnist",
    threat: Annotated[str, typer.Option(help="threat-model folder of the board")] = "Linf",
    report: Annotated[str | None, typer.Option(help="folder of the report (default runs/reproduce/report; the "
                                                    "committed one: reports/paper); with --from-files: where the "
                                                    "rebuilt report goes (default: the same folder)")] = None,
    out: Annotated[str | None, typer.Option(help="folder of the training-series runs (default runs/reproduce/track)")] = None,
    series: Annotated[list[str] | None, typer.Option(help="a training series as for robcurve track (repeatable; "
                                                          "default: the zoo's ViT and ResNet series from epoch 1; "
                                                          "'none' to skip)")] = None,
    config: Annotated[Path | None, typer.Option(help="the board's protocol config (default: the one its "
                                                     "protocol.yaml names)")] = None,
    n: Annotated[int | None, typer.Option(help="samples per checkpoint of the training series (default: the "
                                               "protocol's n; --quick: 16)")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="a smoke run: 16 samples, three checkpoints per series")] = False,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard stored training-series results and start over")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars")] = None,
) -> None:
    """The paper's findings as verdicts, from per-sample files (Markdown, HTML, JSON); resumable.

    The models are the verified entries of --board (every one measured under the board's
    protocol); the training series are measured here (robcurve track runs, resumable) and
    exported next to the report. inputs.json lists every input file with its sha256, and
    --from-files DIR rebuilds the report from them byte for byte without any model. Each claim
    is tested with models as the unit where it is about models, Holm-corrected over all rows.
    """
    # deferred: numpy, pandas, pydantic, scipy, yaml (robcurve --help and light commands stay fast)
    from robcurve.reproduce.study import build_report, verdict_table

    if from_files is not None:
        res = build_report(from_files, report)  # --report: write the rebuilt report elsewhere
    else:
        # deferred: numpy, pydantic, yaml (robcurve --help and light commands stay fast)
        from robcurve.reproduce.paper import reproduce

        res = reproduce(board=board, dataset=dataset, threat=threat, report_dir=report, out=out,
                        series=None if not series else [s.strip() for s in series if s.strip()], config=config, n=n,
                        quick=quick, device=device, fresh=fresh, progress=progress)
    typer.echo(verdict_table(res["rows"]))
    typer.echo(f"\nreport: {res['report_dir']}/ (report.md, report.html, report.json; inputs in inputs.json)"
               + (f" in {res['elapsed_s']:.0f} s" if "elapsed_s" in res else ""))


def register(app: typer.Typer) -> None:
    """Add ``track`` and ``reproduce`` to the ``robcurve`` app."""
    app.command("track")(track_cmd)
    app.command("reproduce")(reproduce_cmd)
