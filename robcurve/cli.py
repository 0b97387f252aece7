"""The ``robcurve`` command: a thin layer over the Python API.

User errors (:class:`RobcurveError`, bad flags) print one line and exit with code 2; no
traceback. Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from robcurve.errors import RobcurveError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="robcurve: curvature, boundary distance, attacks and calibration of vision models "
                       "(Kim et al., AAAI 2024, arXiv:2210.05742).")
zoo_app = typer.Typer(no_args_is_help=True, help="The shipped Fashion-MNIST model zoo: list, verify, train.")
app.add_typer(zoo_app, name="zoo")


def _table(rows, headers) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github")


@app.command()
def bench(
    model: Annotated[str | None, typer.Option(help="model alias (e.g. vit_small, resnet18) or spec source:name")] = None,
    attack: Annotated[str | None, typer.Option(help="pgd | deepfool | jumpout | none")] = None,
    attack_backend: Annotated[str | None, typer.Option(help="robcurve (default) | torchattacks | foolbox: whose PGD/DeepFool runs")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config (see configs/); flags override its fields")] = None,
    dataset: Annotated[str | None, typer.Option(help="fashion-mnist-embedded (default), fashion-mnist, cifar10, cifar100, imagenet, or <dataset>-c:<corruption>:<severity>")] = None,
    data_dir: Annotated[str | None, typer.Option(help="folder with the dataset files")] = None,
    threat_model: Annotated[str | None, typer.Option(help="Linf | L2 | corruptions (RobustBench models)")] = None,
    weights: Annotated[str | None, typer.Option(help="weights file for timm: models (or 'random')")] = None,
    model_dir: Annotated[str | None, typer.Option(help="RobustBench model dir (<dir>/<dataset>/<threat>/<name>.pt)")] = None,
    n: Annotated[int | None, typer.Option(help="number of samples (seeded selection)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="samples per batch (results are stored per batch)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sample selection and every random choice")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 | float64")] = None,
    measurements: Annotated[str | None, typer.Option(help="comma list: clean,trajectory,travel,pgd,pgd_distance,deepfool,jumpout,corruptions,adv_calibration")] = None,
    out: Annotated[str | None, typer.Option(help="run folder (default runs/<model>_<dataset>_<attack>_<config digest>)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any config field: --set pgd.eps=0.05")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard stored results of this run folder and start over")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars (default: when on a terminal)")] = None,
) -> None:
    """Measure a model: curvature, travel distance, attacks, calibration; resumable.

    Runs the measurements of the config on --n seeded samples, storing every per-sample
    result in <out>/results.sqlite as it is produced; the same command continues an
    interrupted run. Ends with a summary table, entry.json (leaderboard entry), samples.csv
    and plots in the run folder.
    """
    from robcurve.run.config import FLAG_FIELDS, SHIPPED, load_config, merge, parse_set
    from robcurve.run.runner import run

    flags = dict(model=model, attack=attack, attack_backend=attack_backend, dataset=dataset, data_dir=data_dir, threat_model=threat_model, weights=weights,
                 model_dir=model_dir, n=n, batch_size=batch_size, device=device, seed=seed, dtype=dtype, out=out)
    overrides = {k: v for k, v in flags.items() if v is not None and k in FLAG_FIELDS}
    if measurements is not None:
        overrides["measurements"] = [m.strip() for m in measurements.split(",") if m.strip()]
    if set_:
        overrides = merge(parse_set(set_), overrides)
    if config is None and (SHIPPED / "default.yaml").is_file():
        config = SHIPPED / "default.yaml"
    cfg = load_config(config, overrides)
    res = run(cfg, fresh=fresh, progress=progress)
    typer.echo(f"\n{res.model_info.get('spec')} on {cfg.dataset}: n={cfg.n}, {res.elapsed_s:.0f} s "
               f"({res.computed} sample-measurements computed, {res.skipped} reused)\n")
    typer.echo(res.summary["table"])
    typer.echo(f"\nresults: {res.out}/ (results.sqlite, entry.json, samples.csv, summary.md, {', '.join(res.summary['plots'])})")


@app.command()
def models() -> None:
    """List model sources and the per-dataset aliases."""
    from robcurve.models import ALIASES, SOURCES
    from robcurve.zoo import card, zoo_names

    typer.echo("Model sources (spec source:name):")
    typer.echo(_table([(s, SOURCES.meta(s).get("help", "")) for s in SOURCES.names()], ["source", "what"]))
    typer.echo("\nAliases (resolved per --dataset):")
    typer.echo(_table([(ds, a, spec) for ds, t in ALIASES.items() for a, spec in t.items()], ["dataset", "alias", "resolves to"]))
    names = zoo_names()
    if names:
        typer.echo("\nZoo models (zoo:<name>):")
        rows = []
        for n in names:
            c = card(n)
            rows.append((n, c["family"], f"{c['params']:,}", f"{100 * c['test_acc']:.2f}%",
                         "yes" if c.get("adversarial_training") else "no", len(c.get("series", []))))
        typer.echo(_table(rows, ["name", "family", "params", "test acc", "adv. trained", "series ckpts"]))


@app.command()
def datasets() -> None:
    """List datasets and whether their files are found."""
    import robcurve.data  # noqa: F401  (registers the readers)
    from robcurve.data.base import DATASETS

    rows = []
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        d = spec.default_dir()
        try:
            found = spec.files_found(d)
        except OSError:
            found = False
        rows.append((name, spec.description, str(d), "found" if found else "not found (use --data-dir)"))
    typer.echo(_table(rows, ["dataset", "what", "default location", "files"]))
    typer.echo("\nCorrupted views: <dataset>-c:<corruption>:<severity>, e.g. fashion-mnist-embedded-c:gaussian_noise:3")


@zoo_app.command("list")
def zoo_list() -> None:
    """Show the model cards of the shipped zoo."""
    from robcurve.zoo import card, zoo_names

    rows = []
    for n in zoo_names():
        c = card(n)
        rob = c.get("robust_acc", {}).get("acc")
        rows.append((n, c["arch"], f"{c['params']:,}", f"{100 * c['test_acc']:.2f}%", f"{100 * c['embedded_acc']:.2f}%",
                     "-" if rob is None else f"{100 * rob:.2f}%", c["epochs"], f"{c['training']['time_s'] / 60:.1f}",
                     ",".join(str(s["epoch"]) for s in c.get("series", [])) or "-"))
    typer.echo(_table(rows, ["name", "arch", "params", "test acc", "embedded acc", "PGD-20 acc@0.1", "epochs", "train min", "series"]))


@zoo_app.command("verify")
def zoo_verify() -> None:
    """Check every shipped zoo file against the sha256 in its card."""
    from robcurve.zoo import verify_all

    res = verify_all()
    for rel, ok, msg in res:
        typer.echo(f"{'OK ' if ok else 'BAD'} {rel} {'' if ok else msg}")
    bad = sum(not ok for _, ok, _ in res)
    if bad:
        raise RobcurveError(f"{bad} of {len(res)} zoo files do not match their cards", fix="reinstall robcurve or retrain them")
    typer.echo(f"all {len(res)} files match their sha256")


@zoo_app.command("train")
def zoo_train(
    name: Annotated[str, typer.Argument(help="recipe name, e.g. vit-fmnist")],
    work_dir: Annotated[Path, typer.Option(help="where checkpoints go (resumed from if present)")] = Path("zoo-work"),
    data_dir: Annotated[str | None, typer.Option(help="folder with the Fashion-MNIST IDX gz files")] = None,
    no_ship: Annotated[bool, typer.Option("--no-ship", help="train only; do not copy weights into the package")] = False,
) -> None:
    """Train (or resume) a zoo recipe, then write its weights and model card into the package."""
    from robcurve.zoo.card import finalize
    from robcurve.zoo.recipes import get_recipe
    from robcurve.zoo.train import train

    recipe = get_recipe(name)
    wd = work_dir / name
    train(recipe, wd, data_dir=data_dir)
    if not no_ship:
        c = finalize(recipe, wd, data_dir=data_dir)
        typer.echo(f"zoo:{name}: test accuracy {100 * c['test_acc']:.2f}%, card at robcurve/zoo/cards/{name}.json")


def main(argv: list[str] | None = None) -> int:
    try:  # typer >= 0.24 vendors click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
        from typer.exceptions import Abort, Exit
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click.exceptions import Abort, ClickException, Exit
        NoArgsIsHelpError = ()  # noqa: N806

    # timm's import triggers torch's deprecation notice for torch.jit.interface: not the user's concern
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    cmd = typer.main.get_command(app)
    try:
        rv = cmd.main(args=argv if argv is not None else sys.argv[1:], prog_name="robcurve", standalone_mode=False)
        return int(rv) if isinstance(rv, int) else 0
    except RobcurveError as e:
        print(f"robcurve: error: {e}", file=sys.stderr)
        return 2
    except Exit as e:
        return int(getattr(e, "exit_code", getattr(e, "code", 0)) or 0)
    except NoArgsIsHelpError as e:
        e.show()
        return 0
    except ClickException as e:
        e.show()
        return 2
    except (KeyboardInterrupt, Abort):
        print("robcurve: interrupted; results written so far are kept. Run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
