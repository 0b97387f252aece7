"""The ``robcurve`` command: a thin layer over the Python API.

User errors (:class:`RobcurveError`, bad flags) print one line and exit with code 2; no
traceback. Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from robcurve import plugins
from robcurve.cpu import choose_wait_policy
from robcurve.errors import RobcurveError, one_line
from robcurve.reproduce.cli import register
from robcurve.run.docs import metrics_markdown, metrics_tables

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="robcurve: curvature, boundary distance, attacks and calibration of vision models "
                       "(Kim et al., AAAI 2024, arXiv:2210.05742).")
zoo_app = typer.Typer(no_args_is_help=True, help="The shipped Fashion-MNIST model zoo: list, verify, train.")
app.add_typer(zoo_app, name="zoo")


def _register_leaderboard() -> None:
    # deferred: pydantic, yaml (robcurve --help and light commands stay fast)
    from robcurve.leaderboard.cli import cite, lb_app, submit

    app.add_typer(lb_app, name="leaderboard")
    app.command("submit")(submit)
    app.command("cite")(cite)


_register_leaderboard()


def _register_reproduce() -> None:
    register(app)


_register_reproduce()


def _table(rows, headers) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github")


@app.command()
def bench(
    model: Annotated[str | None, typer.Option(help="model alias (e.g. vit_small, resnet18) or spec source:name")] = None,
    attack: Annotated[str | None, typer.Option(help="a measurement registered as an attack: pgd | deepfool | jumpout, or none (robcurve metrics lists them)")] = None,
    attack_backend: Annotated[str | None, typer.Option(help="robcurve (default) | torchattacks | foolbox: whose PGD/DeepFool runs")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML run config (see configs/); flags override its fields")] = None,
    dataset: Annotated[str | None, typer.Option(help="fashion-mnist-embedded (default), fashion-mnist, cifar10, cifar100, imagenet, or <dataset>-c:<corruption>:<severity>")] = None,
    data_dir: Annotated[str | None, typer.Option(help="folder with the dataset files")] = None,
    threat_model: Annotated[str | None, typer.Option(help="Linf | L2 | corruptions (RobustBench models)")] = None,
    weights: Annotated[str | None, typer.Option(help="weights file for timm: models (or 'random')")] = None,
    model_kwargs: Annotated[str | None, typer.Option(help='model constructor arguments as JSON, e.g. \'{"in_chans": 1}\' (timm create_model kwargs)')] = None,
    model_dir: Annotated[str | None, typer.Option(help="RobustBench model dir (<dir>/<dataset>/<threat>/<name>.pt)")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: the CPUs this process may use)")] = None,
    mean: Annotated[str | None, typer.Option(help="input mean per channel, overriding the model source's: 0.5 or 0.485,0.456,0.406")] = None,
    std: Annotated[str | None, typer.Option(help="input std per channel, overriding the model source's: 0.5 or 0.229,0.224,0.225")] = None,
    n: Annotated[int | None, typer.Option(help="number of samples (seeded selection)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="samples per batch (results are stored per batch)")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the sample selection and every random choice")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 | float64")] = None,
    autocast: Annotated[str | None, typer.Option(help="none (default) | bf16 | fp16: forwards under torch.autocast (see docs/devices.md)")] = None,
    max_memory: Annotated[str | None, typer.Option(help="memory budget of chunks and attack sub-batches: 2GiB, 512MB, 25% (default 2 GiB, or 25% of free device memory if less)")] = None,
    measurements: Annotated[str | None, typer.Option(help="comma list of registered measurements, e.g. clean,trajectory,travel,pgd,pgd_distance,deepfool,jumpout,corruptions,adv_calibration (robcurve metrics lists them)")] = None,
    out: Annotated[str | None, typer.Option(help="run folder (default runs/<model>_<dataset>_<attack>_<config digest>)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override any config field: --set pgd.eps=0.05")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="discard stored results of this run folder and start over")] = False,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="progress bars (default: when on a terminal)")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="draw the run's figures at the end (about 3 s)")] = True,
) -> None:
    """Measure a model: curvature, travel distance, attacks, calibration; resumable.

    Runs the measurements of the config on --n seeded samples, storing every per-sample
    result in <out>/results.sqlite as it is produced; the same command continues an
    interrupted run. Ends with a summary table, entry.json (leaderboard entry), samples.csv
    and plots in the run folder.
    """
    # deferred: pydantic, yaml (robcurve --help and light commands stay fast)
    from robcurve.run.config import FLAG_FIELDS, SHIPPED, load_config, merge, parse_set

    # deferred: numpy, pydantic, safetensors, torch, tqdm, yaml (robcurve --help and light commands stay fast)
    from robcurve.run.runner import run

    flags = dict(model=model, attack=attack, attack_backend=attack_backend, dataset=dataset, data_dir=data_dir, threat_model=threat_model, weights=weights, model_kwargs=model_kwargs,
                 model_dir=model_dir, n=n, batch_size=batch_size, device=device, seed=seed, dtype=dtype, autocast=autocast,
                 max_memory=max_memory, out=out, mean=mean, std=std, threads=threads)
    overrides = {k: v for k, v in flags.items() if v is not None and k in FLAG_FIELDS}
    if measurements is not None:
        overrides["measurements"] = [m.strip() for m in measurements.split(",") if m.strip()]
    if set_:
        overrides = merge(parse_set(set_), overrides)
    if config is None and (SHIPPED / "default.yaml").is_file():
        config = SHIPPED / "default.yaml"
    cfg = load_config(config, overrides)
    res = run(cfg, fresh=fresh, progress=progress, plots=plots)
    if not res.summary:  # a non-zero rank of a sharded run: rank 0 merges and summarises
        typer.echo(f"{res.model_info.get('spec')}: this rank measured its shard ({res.computed} sample-measurements "
                   f"computed, {res.skipped} reused); rank 0 wrote the outputs")
        return
    typer.echo(f"\n{res.model_info.get('spec')} on {cfg.dataset}: n={cfg.n}, {res.elapsed_s:.0f} s "
               f"({res.computed} sample-measurements computed, {res.skipped} reused)\n")
    typer.echo(res.summary.table)
    typer.echo(f"\nresults: {res.out}/ (results.sqlite, entry.json, summary.md/.csv/.json, samples.csv, "
               f"{', '.join(res.summary.plots)})")


@app.command()
def summarize(run_dir: Annotated[Path, typer.Argument(help="a run folder written by robcurve bench")],
              partial: Annotated[bool, typer.Option("--partial", help="summarise an incomplete run (marked; no entry.json)")] = False,
              plots: Annotated[bool, typer.Option("--plots/--no-plots", help="draw the figures (about 3 s)")] = True) -> None:
    """Rebuild every output of a run (summary, entry.json, CSVs, plots) from its store; no model is loaded."""
    # deferred: numpy, pandas, pydantic, yaml (robcurve --help and light commands stay fast)
    from robcurve.run.summary import summarize as _summarize

    s = _summarize(run_dir, partial=partial, plots_on=plots)
    typer.echo(s.markdown)


@app.command()
def metrics(
    markdown: Annotated[bool, typer.Option("--markdown", help="print the Markdown reference (docs/metrics.md)")] = False,
) -> None:
    """List the registered measurements and metrics (unit, direction, aggregation, interval, condition)."""
    typer.echo(metrics_markdown(), nl=False) if markdown else typer.echo(metrics_tables())


@app.command()
def models() -> None:
    """List model sources and the per-dataset aliases."""
    # deferred: torch (robcurve --help and light commands stay fast)
    from robcurve.models import ALIASES, SOURCES

    # deferred: numpy, safetensors, torch, tqdm (robcurve --help and light commands stay fast)
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
    # deferred: numpy, safetensors, torch (robcurve --help and light commands stay fast)
    import robcurve.data  # noqa: F401  (registers the readers)

    # deferred: numpy, safetensors, torch (robcurve --help and light commands stay fast)
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
    # deferred: numpy, safetensors, torch, tqdm (robcurve --help and light commands stay fast)
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
    # deferred: numpy, safetensors, torch (robcurve --help and light commands stay fast)
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
    # deferred: numpy, safetensors, torch, tqdm (robcurve --help and light commands stay fast)
    from robcurve.zoo.card import finalize

    # deferred: numpy, safetensors, torch (robcurve --help and light commands stay fast)
    from robcurve.zoo.recipes import get_recipe

    # deferred: numpy, safetensors, torch, tqdm (robcurve --help and light commands stay fast)
    from robcurve.zoo.train import train

    recipe = get_recipe(name)
    wd = work_dir / name
    train(recipe, wd, data_dir=data_dir)
    if not no_ship:
        c = finalize(recipe, wd, data_dir=data_dir)
        typer.echo(f"zoo:{name}: test accuracy {100 * c['test_acc']:.2f}%, card at robcurve/zoo/cards/{name}.json")


_DEBUG_ENV = "ROBCURVE_DEBUG"
_STATE = {"debug": False}  # set by --debug for the current main() call


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help=f"on an error, print the full traceback (also: {_DEBUG_ENV}=1)")] = False,
) -> None:
    # main() takes --debug out of the arguments before parsing (so it works in any position);
    # this option documents it in --help and serves callers that invoke `app` directly.
    if debug:
        _STATE["debug"] = True


def _debug_on() -> bool:
    return _STATE["debug"] or os.environ.get(_DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


_OS_FIX = {
    "PermissionError": "check the permissions of that path (or choose another one)",
    "IsADirectoryError": "that path is a folder: pass a file",
    "NotADirectoryError": "a part of that path is a file, not a folder: check the path",
    "FileNotFoundError": "check the path",
    "FileExistsError": "choose another path or remove the existing one",
}


def _user_error(e: BaseException) -> str | None:
    """One line (what, where, fix) for an error caused by the user's input or machine; None for a bug."""
    if isinstance(e, RobcurveError):
        return one_line(e, 2000)
    if isinstance(e, OSError):
        import errno as _errno

        what = e.strerror or one_line(e) or type(e).__name__
        where = f" (at {e.filename})" if e.filename else ""
        if e.filename2:
            where = f" (at {e.filename} -> {e.filename2})"
        fix = _OS_FIX.get(type(e).__name__, "check the path and the file system")
        if e.errno == _errno.ENOSPC:
            fix = "free disk space or write the run elsewhere with --out"
        return one_line(f"{what}{where}. Fix: {fix}")
    if isinstance(e, EOFError):
        return one_line(f"a file ended unexpectedly ({e or 'end of file'}): it is truncated or empty. "
                        "Fix: replace the damaged file")
    if isinstance(e, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(e).__mro__):
        return one_line(f"out of memory ({e or type(e).__name__}). Fix: lower --batch-size or --n, or use a smaller model")
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(e, pydantic.ValidationError):
        # deferred: pydantic, yaml (robcurve --help and light commands stay fast)
        from robcurve.run.config import format_validation_error

        return one_line(format_validation_error(e, "the input") + ". Fix: correct the value(s) named above")
    yaml = sys.modules.get("yaml")
    if yaml is not None and isinstance(e, yaml.YAMLError):
        return one_line(f"bad YAML: {e}. Fix: fix the YAML syntax")
    if isinstance(e, UnicodeDecodeError):
        return one_line(f"a file is not UTF-8 text ({e.reason} at byte {e.start}). Fix: save it as UTF-8")
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(e, sqlite3.DatabaseError):
        msg = str(e).lower()
        if any(w in msg for w in ("locked", "unable to open", "malformed", "not a database", "disk i/o", "readonly",
                                  "database or disk is full", "busy")):
            return one_line(f"the run's result store cannot be used: {e}. Fix: make sure no other robcurve run uses "
                            "this run folder, or choose another --out (or --fresh to start over)")
    return None


def _take_plugins(args: list[str]) -> tuple[list[str], list[str]]:
    """Remove the global ``--plugins MODULE[,MODULE]`` option (any position) and return its modules."""
    out, mods, i = [], [], 0
    while i < len(args):
        a = args[i]
        if a == "--plugins" and i + 1 < len(args):
            mods += [m for m in args[i + 1].split(",") if m]
            i += 2
            continue
        if a.startswith("--plugins="):
            mods += [m for m in a.split("=", 1)[1].split(",") if m]
        else:
            out.append(a)
        i += 1
    return out, mods


@app.command("plugins")
def plugins_cmd() -> None:
    """List the plugins found through entry points (and --plugins), what they add and from where."""
    rows = [(p.group, p.name, p.value, p.dist, p.status) for p in plugins.loaded()]
    if not rows:
        typer.echo("no plugins found (entry point groups: " + ", ".join(plugins.GROUPS) + "; or --plugins MODULE)")
        return
    typer.echo(_table(rows, ["group", "name", "target", "distribution", "status"]))


def main(argv: list[str] | None = None) -> int:
    """Run the ``robcurve`` command; return its exit code.

    Exit codes: 0 success; 2 a user error (RobcurveError, a bad flag or config, a file that
    cannot be read: one line on stderr naming what, where and the fix); 1 an internal
    error (a bug in robcurve: one line, the traceback with ``--debug`` or ROBCURVE_DEBUG=1);
    130 interrupted.
    """
    import traceback

    try:  # typer >= 0.24 vendors click
        from typer._click.exceptions import ClickException, NoArgsIsHelpError
        from typer.exceptions import Abort, Exit
    except ImportError:  # pragma: no cover - older typer uses click itself
        from click.exceptions import Abort, ClickException, Exit
        NoArgsIsHelpError = ()  # noqa: N806

    args = list(sys.argv[1:] if argv is None else argv)
    if "torch" not in sys.modules:  # the wait policy is read when torch starts its OpenMP runtime

        choose_wait_policy()
    _STATE["debug"] = "--debug" in args
    args = [a for a in args if a != "--debug"]  # a global option, accepted in any position
    args, plugin_modules = _take_plugins(args)
    interrupted = ("robcurve: interrupted; results written so far are kept. "
                   "Run the same command again to resume.")

    def report(e: BaseException) -> int:
        if _debug_on():
            traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
        line = _user_error(e)
        if line is not None:
            print(f"robcurve: error: {line}", file=sys.stderr)
            return 2

        print(f"robcurve: internal error: {type(e).__name__}: {one_line(e, 500).rstrip('.')}. This is a bug, please report it"
              + ("" if _debug_on() else " (rerun with --debug for the traceback)"), file=sys.stderr)
        return 1

    # timm's import triggers torch's deprecation notice for torch.jit.interface: not the user's concern
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    cmd = typer.main.get_command(app)
    try:
        plugins.load(plugin_modules)
        rv = cmd.main(args=args, prog_name="robcurve", standalone_mode=False)
        if rv == 130:  # typer turns Ctrl-C into Exit(130) and returns its code
            print(interrupted, file=sys.stderr)
        return int(rv) if isinstance(rv, int) else 0
    except Exit as e:
        return int(getattr(e, "exit_code", getattr(e, "code", 0)) or 0)
    except NoArgsIsHelpError as e:
        e.show()
        return 0
    except ClickException as e:  # a bad flag, option value or command: one line, like every user error

        ctx = getattr(e, "ctx", None)
        path = getattr(ctx, "command_path", "") or "robcurve"
        print(f"robcurve: error: {one_line(e.format_message()).rstrip('.')}. Fix: see `{path} --help`", file=sys.stderr)
        return 2
    except Abort as e:
        if isinstance(e.__cause__, EOFError):  # typer turns any EOFError into Abort: report the real error
            return report(e.__cause__)
        print(interrupted, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except Exception as e:
        return report(e)


if __name__ == "__main__":
    sys.exit(main())
