"""``robcurve bench``: for each batch of samples, the measurements the config asks for.

Results are written per (batch, measurement) to the run's SQLite store as they are
produced; a batch's measurement that is already stored is skipped, so an interrupted run
continues where it stopped. Every random choice is seeded from the config seed and the
batch's first sample, so a resumed run computes exactly what an uninterrupted one does.
The measurements come from the registry in :mod:`robcurve.run.measures`.

Order of work: the config is validated, the model and data are loaded and the model's
output is checked on the first samples *before* the run folder is created or touched
(``--fresh`` discards old results only then); the folder is locked for the run, so a second
process on the same folder is refused with the holder's pid.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

import robcurve
from robcurve.cpu import allowed_cpus, wait_policy_note
from robcurve.data.base import DATASETS, SampleSet, load_dataset
from robcurve.errors import ModelError, RobcurveError
from robcurve.memory import describe, set_memory_budget
from robcurve.models import load_model, resolve_spec
from robcurve.models.wrapper import RobcurveModel
from robcurve.naming import base_dataset
from robcurve.run import shard
from robcurve.run.config import RunConfig
from robcurve.run.measures import MEASUREMENTS, Context
from robcurve.run.store import Store, atomic_write_text, run_lock
from robcurve.validate import check_model_on_data

if TYPE_CHECKING:  # pragma: no cover
    from robcurve.run.summary import Outputs

CODE_VERSION = robcurve.__version__
#: measurements that read the penultimate features (checked before the run starts)
FEATURE_MEASUREMENTS = {"trajectory", "window", "ablation", "jumpout", "jumpout_adaptive", "layers"}
PIPED_EVERY = 30.0  # seconds between progress lines when stderr is not a terminal
OUTPUTS = ("entry.json", "samples.csv", "summary.md", "summary.csv", "summary.json")


def slug(text: str) -> str:
    """A file-name-safe form of a name: it cannot leave the folder it is put in."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return s[:80] or "run"


def default_out(cfg: RunConfig) -> Path:
    return Path("runs") / f"{slug(cfg.model)}_{slug(cfg.dataset)}_{cfg.attack}_{cfg.digest()[:8]}"


@dataclass
class RunResult:
    out: Path
    store_path: Path
    config: RunConfig
    model_info: dict
    summary: Outputs | None  # None on a non-zero rank of a sharded run, or without summarize
    computed: int
    skipped: int
    elapsed_s: float


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise RobcurveError(f"unknown device {name!r}", fix="use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RobcurveError(f"--device {name} was asked for but no CUDA device is available", fix="use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RobcurveError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                            fix=f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RobcurveError(f"--device {name} was asked for but MPS is not available", fix="use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise RobcurveError(f"unsupported device {name!r}", fix="use cpu, cuda, cuda:N or mps")
    return device


def set_threads(cfg: RunConfig, ranks: int = 1, verbose: bool = False) -> int:
    """torch's intra-op threads: ``cfg.threads``, else the allowed CPUs split between torchrun ranks."""
    if cfg.threads is not None:
        n, why = cfg.threads, "--threads"
    else:
        cpus, why = allowed_cpus()
        n = max(1, cpus // max(1, ranks))
        why += f" ({cpus} CPU(s)" + (f" over {ranks} ranks)" if ranks > 1 else ")")
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    if verbose:
        print(f"robcurve: {n} torch thread(s) from {why}", file=sys.stderr)
    return n



def prepare(cfg: RunConfig, verbose: bool = True) -> tuple[RobcurveModel, SampleSet, torch.device]:
    """Resolve and load the model and data, and check the model's output: all before any file is touched."""
    device = _device(cfg.device)
    if device.type == "cpu":
        local = os.environ.get("LOCAL_WORLD_SIZE", "")  # torchrun ranks on this machine share its CPUs
        set_threads(cfg, int(local) if local.isdigit() else 1)
    spec = resolve_spec(cfg.model, cfg.dataset, cfg.threat_model)
    if verbose and spec != cfg.model:
        print(f"robcurve: model {cfg.model!r} resolved to {spec!r} for dataset {cfg.dataset!r}", file=sys.stderr)
    kwargs: dict = {"model_kwargs": cfg.model_kwargs} if cfg.model_kwargs else {}
    if cfg.mean is not None or cfg.std is not None:
        kwargs.update(mean=cfg.mean, std=cfg.std)
    model = load_model(spec, dataset=base_dataset(cfg.dataset), threat_model=cfg.threat_model, weights=cfg.weights,
                       model_dir=cfg.model_dir, device=device,
                       dtype=torch.float64 if cfg.dtype == "float64" else None, **kwargs)
    if spec != cfg.model:
        model.info.extra["alias"] = cfg.model
    if cfg.autocast != "none":
        model.autocast_dtype = torch.bfloat16 if cfg.autocast == "bf16" else torch.float16
    data = load_dataset(cfg.dataset, split=cfg.split, n=cfg.n, seed=cfg.seed, data_dir=cfg.data_dir)

    check_model_on_data(model, data.images, data.labels, dataset=cfg.dataset)
    check_classes_and_chance(model, data, cfg, verbose)

    set_memory_budget(cfg.max_memory)  # recorded in the store's meta (machine), not printed
    return model, data, device


def check_classes_and_chance(model: RobcurveModel, data: SampleSet, cfg: RunConfig, verbose: bool) -> None:
    """The model's class count must equal the dataset's; clean accuracy at or below chance on the first
    batch gets a warning (a wrong normalisation or label order). Prints the normalisation in use."""
    base = base_dataset(cfg.dataset)
    want = DATASETS.get(base).num_classes if base in DATASETS else None
    x = data.images[: min(len(data), cfg.batch_size, 64)].to(model.device, model.dtype)
    with torch.no_grad():
        logits = model(x)
    k = int(logits.shape[1])
    if want and k != want:
        raise ModelError(f"model {model.info.spec!r} has {k} classes but {base} has {want}", where=cfg.model,
                         fix=f"give the model a {want}-class head (e.g. --model-kwargs '{{\"num_classes\": {want}}}' for "
                             "timm:) or measure it on a dataset with its classes")
    if set(cfg.all_measurements()) & FEATURE_MEASUREMENTS:  # penultimate features found now, not mid-run
        with torch.no_grad():
            model.logits_and_features(x[:1])
    model.info.input_size = tuple(int(v) for v in data.images.shape[1:])  # what it was measured at
    acc = float((logits.argmax(1).cpu() == data.labels[: len(x)]).float().mean())
    norm = model.info.extra.get("normalisation", {})
    if verbose:  # printed once loading and the checks have passed (an error stays the only line)
        wait = wait_policy_note()
        print(f"robcurve: normalisation mean {norm.get('mean')} std {norm.get('std')} ({norm.get('from', '?')}); "
              f"input {list(model.info.input_size)}; {torch.get_num_threads()} torch thread(s)"
              + (f"; {wait}" if wait else ""), file=sys.stderr)
    if acc <= 1.0 / k:
        print(f"robcurve: warning: clean accuracy on the first {len(x)} images is {100 * acc:.1f}%, at or below chance "
              f"({100 / k:.1f}%): check the normalisation (--mean/--std; now {norm.get('mean')}/{norm.get('std')} from "
              f"{norm.get('from', '?')}) and the label order", file=sys.stderr)


def _check_out(out: Path) -> None:
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise RobcurveError(f"the run folder {out} cannot be created: {p} is a file", where=str(out),
                                fix="choose another --out")
        if p.exists():
            if not os.access(p, os.W_OK):
                raise RobcurveError(f"the run folder {out} is not writable (at {p})", where=str(out),
                                    fix="choose a writable --out")
            break


def _nothing_kept(out: Path) -> bool:
    """True when the folder holds no stored result row (only a lock, config or an empty store)."""
    import sqlite3

    db = out / "results.sqlite"
    if not db.exists():
        return True
    try:
        con = sqlite3.connect(str(db))
        try:
            n = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return n == 0


def run(cfg: RunConfig, *, fresh: bool = False, progress: bool | None = None, verbose: bool = True,
        summarize: bool = True, plots: bool = True) -> RunResult:
    """Run (or resume) the measurements of ``cfg``; return where the results are.

    Under a torch.distributed launcher (``torchrun``) the batches are split across ranks
    (see :mod:`robcurve.run.shard`); rank 0 merges the shards and writes the outputs.
    """
    # deferred: pandas, needed only here
    from robcurve.run.summary import write_outputs

    t0 = time.time()
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    _check_out(out)
    dist = shard.from_env()
    if dist.active and cfg.device.startswith("cuda") and ":" not in cfg.device:
        cfg = cfg.model_copy(update={"device": f"cuda:{dist.local_rank}"})
    model, data, device = prepare(cfg, verbose and dist.rank == 0)  # everything that can fail on input fails here
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    shard.init(dist, device)
    store_path = out / "results.sqlite"
    summary: Outputs | None = None
    try:
        if dist.rank == 0 and fresh:
            with run_lock(out):
                for name in OUTPUTS:
                    (out / name).unlink(missing_ok=True)
                for suffix in ("", "-wal", "-shm"):
                    Path(str(store_path) + suffix).unlink(missing_ok=True)
                if dist.active or (out / "shards").exists():
                    import shutil

                    shutil.rmtree(out / "shards", ignore_errors=True)
        shard.barrier(dist)
        if dist.active:
            (out / "shards").mkdir(exist_ok=True)
            with run_lock(out, name=f".lock-rank{dist.rank}"):
                store = Store(shard.shard_path(out, dist))
                try:
                    res = _measure(store, out, cfg, model, data, device, progress and dist.rank == 0, t0, dist,
                                   merged=store_path)
                finally:
                    store.close()
            shard.barrier(dist)
            if dist.rank == 0:
                with run_lock(out):
                    shard.merge(out, dist.world, store_path)
                    store = Store(store_path)
                    try:
                        summary = write_outputs(store, out, plots_on=plots) if summarize else None
                    finally:
                        store.close()
            shard.barrier(dist)
        else:
            with run_lock(out):
                store = Store(store_path)
                try:
                    res = _measure(store, out, cfg, model, data, device, progress, t0)
                    summary = write_outputs(store, out, plots_on=plots) if summarize else None
                finally:
                    store.close()
    except BaseException:
        if not existed and _nothing_kept(out) and not (out / "shards").exists():  # no empty folder left behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shard.finish(dist)
    computed, skipped = res
    return RunResult(out, store_path, cfg, model.info.to_dict(), summary, computed, skipped, time.time() - t0)


def measure_samples(ctx: Context, m: str, samples: list[int], start: int) -> list[dict]:
    """Run measurement ``m`` on the samples at run positions ``samples``, as the batch starting at ``start``
    (its seeds and cache keys): one JSON-ready dict per sample. The runner calls it for every batch and
    ``submit`` for its re-measurement, so both measure the same way."""
    key = ("inputs", start, tuple(samples))
    if key not in ctx.cache:  # moved to the device once per batch, shared by its measurements (cache cleared per batch)
        data = ctx.data
        if samples == list(range(start, start + len(samples))):  # a whole batch: a view, no copy
            sel: slice | torch.Tensor = slice(start, start + len(samples))
        else:
            sel = torch.tensor(samples, dtype=torch.long)
        ctx.cache[key] = (data.images[sel].to(ctx.device, ctx.model.dtype), data.labels[sel].to(ctx.device),
                          data.indices[sel])
    x, y, split_idx = ctx.cache[key]
    values = MEASUREMENTS.get(m).run(ctx, start, x, y, split_idx)
    if len(values) != len(samples):
        raise RuntimeError(f"measurement {m!r} returned {len(values)} rows for {len(samples)} samples")
    return values


def _measure(store: Store, out: Path, cfg: RunConfig, model: RobcurveModel, data: SampleSet, device: torch.device,
             progress: bool | None, t0: float, dist: Any = None, merged: Path | None = None) -> tuple[int, int]:
    """Measure every batch (of this rank) not stored yet; return (computed, skipped) sample-measurements."""
    cfg_dict = cfg.model_dump()
    digest = cfg.digest()
    store.bind(digest, cfg_dict, CODE_VERSION)
    old = store.get_meta("model") or {}
    new = model.info.to_dict()
    if old.get("weights_sha256") and new.get("weights_sha256") and old["weights_sha256"] != new["weights_sha256"]:
        raise RobcurveError(f"the run in {out} was made with other weights (sha256 {old['weights_sha256'][:12]}…, "
                            f"now {new['weights_sha256'][:12]}…)", where=str(out),
                            fix="rerun with --fresh to start over, or choose another --out")

    store.set_meta(model=model.info.to_dict(), dataset={"name": data.name, "split": data.split, "source": data.source,
                                                          "n": len(data)}, machine={"memory": describe(device)})
    atomic_write_text(out / "config.json", json.dumps(cfg_dict, indent=2) + "\n")
    ctx = Context(cfg, model, data, device)
    measurements = cfg.all_measurements()
    piped = progress is None and not sys.stderr.isatty()  # a log file or pipe: one line every PIPED_EVERY s
    if progress is None:
        progress = sys.stderr.isatty()
    last_line = time.perf_counter()
    n_batches = (len(data) + cfg.batch_size - 1) // cfg.batch_size
    bars = {m: tqdm(total=len(data), desc=f"{m:>15}", position=i, leave=True, disable=not progress, unit="img")
            for i, m in enumerate(measurements)}
    computed = skipped = 0
    prior = Store(merged) if merged is not None and merged.is_file() else None  # rows of an earlier merge
    try:
        for b_index, start in enumerate(range(0, len(data), cfg.batch_size)):
            if dist is not None and not dist.mine(b_index):
                continue
            stop = min(len(data), start + cfg.batch_size)
            samples = list(range(start, stop))
            labels = data.labels[start:stop].tolist()
            split_ids = data.indices[start:stop].tolist()
            for m in measurements:
                done = store.done(m, samples)
                if prior is not None and len(done) < len(samples) and len(prior.done(m, samples)) == len(samples):
                    rows = [r for r in prior.rows(m) if start <= r[0] < stop]
                    store.write(m, [(a, b, lab, v) for a, b, _, lab, v in rows], digest, CODE_VERSION)
                    done = set(samples)
                if len(done) == len(samples):
                    skipped += len(samples)
                else:
                    t1 = time.perf_counter()
                    values = measure_samples(ctx, m, samples, start)
                    rows = [(s, int(si), int(lab), v) for s, si, lab, v in
                            zip(samples, split_ids, labels, values, strict=True)]
                    store.write(m, rows, digest, CODE_VERSION, seconds=time.perf_counter() - t1)
                    computed += len(samples)
                bars[m].update(len(samples))
            ctx.cache.clear()
            now = time.perf_counter()
            if piped and (now - last_line >= PIPED_EVERY or stop == len(data)):
                last_line = now
                took = time.time() - t0
                left = took / stop * (len(data) - stop) if stop else 0.0
                print(f"robcurve: {stop}/{len(data)} samples (batch {b_index + 1}/{n_batches}), {took:.0f} s so far, "
                      f"about {left:.0f} s left", file=sys.stderr, flush=True)
    finally:
        for b in bars.values():
            b.close()
        if prior is not None:
            prior.close()
    return computed, skipped
