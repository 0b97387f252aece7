"""Submitting a run to the leaderboard, and verifying a submission.

``submit(run_dir)``: the run must be finished (every measurement stored for every sample);
its ``entry.json`` and ``config.json`` must match what its store says (hand-edited numbers
or configs are refused); the model is loaded again, its weights' sha256 must equal the one
stored with the results, and a seeded random subset of samples is measured again and
compared with the stored per-sample values within stated tolerances. Only then is the entry
written, with the per-sample results next to it so that a maintainer can repeat the check
(``verify_entry``, ``robcurve leaderboard verify ENTRY``) without the submitter's files.

Which samples are re-measured: measurements whose per-sample result does not depend on the
other samples of its batch (clean, DeepFool, corruptions, and trajectory / travel along the
FGSM or DeepFool direction) are re-run on the chosen samples alone; measurements seeded per
batch (PGD, PGD distance, jump-out, calibration under attack, random directions) re-run the
whole batch that holds the first chosen sample, when the batch has at most ``max_batch``
samples (else they are listed as skipped in the verification record).
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from robcurve.errors import RobcurveError
from robcurve.leaderboard.io import (
    DEFAULT_ROOT,
    SAMPLES_SUFFIX,
    check_id,
    entry_path,
    parse_entry,
    read_entry,
    read_samples,
    write_json,
    write_samples,
)
from robcurve.leaderboard.schema import Entry, Verification

RTOL, ATOL = 1e-3, 1e-4
NOT_COMPARED = {"plot", "queries"}  # drawing data and cost bookkeeping (a query count depends on the batch)
PER_SAMPLE = {"clean", "deepfool", "corruptions"}
DIRECTION_USERS = {"trajectory", "travel"}
DETERMINISTIC_DIRECTIONS = {"fgsm", "deepfool"}


def _per_sample(m: str, cfg: Any) -> bool:
    if m in PER_SAMPLE:
        return True
    return m in DIRECTION_USERS and cfg.direction.kind in DETERMINISTIC_DIRECTIONS


def _close(a: Any, b: Any, rtol: float, atol: float, path: str, out: list[str]) -> int:
    """Compare two stored values; append mismatches to ``out``; return the number of scalars compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        n = 0
        for k in sorted(set(a) | set(b)):
            if k in NOT_COMPARED:
                continue
            n += _close(a.get(k), b.get(k), rtol, atol, f"{path}.{k}", out)
        return n
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} vs {len(b)}")
            return 1
        return sum(_close(x, y, rtol, atol, f"{path}[{i}]", out) for i, (x, y) in enumerate(zip(a, b, strict=True)))
    na = a is None or (isinstance(a, float) and math.isnan(a))
    nb = b is None or (isinstance(b, float) and math.isnan(b))
    if na or nb:
        if na != nb:
            out.append(f"{path}: stored {a!r}, measured {b!r}")
        return 1
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        if a != b:
            out.append(f"{path}: stored {a!r}, measured {b!r}")
        return 1
    if isinstance(a, int | float) and isinstance(b, int | float):
        if not abs(float(a) - float(b)) <= atol + rtol * abs(float(b)):
            out.append(f"{path}: stored {a!r}, measured {b!r}")
        return 1
    if a != b:
        out.append(f"{path}: stored {a!r}, measured {b!r}")
    return 1


def remeasure(cfg: Any, stored: dict[tuple[str, int], dict], stored_model: dict, sample_ids: list[int], *,
              k: int, seed: int, rtol: float = RTOL, atol: float = ATOL, max_batch: int = 32,
              progress: bool = False) -> Verification:
    """Measure ``k`` seeded samples again and compare with ``stored`` ((measurement, sample) -> values)."""
    import torch

    from robcurve.run.measures import MEASUREMENTS, Context
    from robcurve.run.runner import prepare
    from robcurve.run.store import _clean

    model, data, device = prepare(cfg, verbose=False)
    got = model.info.weights_sha256
    want = stored_model.get("weights_sha256")
    if want and got != want:
        raise RobcurveError(f"the weights differ from the ones the results were measured with (sha256 {str(got)[:12]}… "
                            f"vs stored {want[:12]}…)", fix="submit the run made with these weights, or rerun bench with them")
    if [int(i) for i in data.indices.tolist()] != list(sample_ids):
        raise RobcurveError("the dataset's sample selection differs from the stored one (other data files?)",
                            fix="point --data-dir at the same dataset version")
    n = len(data)
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for i in rng.choice(n, size=min(k, n), replace=False))
    ctx = Context(cfg, model, data, device)
    bs = cfg.batch_size
    first_batch = (chosen[0] // bs) * bs
    batch = list(range(first_batch, min(n, first_batch + bs)))
    mismatches: list[str] = []
    compared = 0
    skipped: list[str] = []
    measured: list[str] = []
    for m in cfg.all_measurements():
        if _per_sample(m, cfg):
            idx, start = chosen, n + 1  # a start past the plotted positions: no plot data to compare
        elif len(batch) <= max_batch:
            idx, start = batch, first_batch
        else:
            skipped.append(f"{m} (seeded per batch; batch size {bs} > {max_batch})")
            continue
        t = torch.tensor(idx)
        x = data.images[t].to(device, model.dtype)
        y = data.labels[t].to(device)
        values = MEASUREMENTS.get(m).run(ctx, start, x, y, data.indices[t])
        ctx.cache.clear()
        measured.append(m)
        for s, v in zip(idx, values, strict=True):
            if (m, s) not in stored:
                mismatches.append(f"{m}[{s}]: not stored")
                continue
            compared += _close(stored[(m, s)], _clean(v), rtol, atol, f"{m}[{s}]", mismatches)
        if progress:
            print(f"robcurve: verified {m} on {len(idx)} samples", file=sys.stderr)
    v = Verification(samples=chosen, batches=[first_batch] if any(not _per_sample(m, cfg) for m in measured) else [],
                     measurements=measured, compared=compared, mismatches=len(mismatches),
                     tolerance={"rtol": rtol, "atol": atol}, skipped=skipped, seed=seed, weights_sha256=got)
    if mismatches:
        shown = "; ".join(mismatches[:3])
        raise RobcurveError(f"verification failed: {len(mismatches)} of {compared} re-measured values differ from the "
                            f"stored ones beyond rtol {rtol:g} / atol {atol:g} (e.g. {shown})",
                            fix="the stored results do not come from this model and config; rerun robcurve bench "
                                "(if only hardware differs, pass a larger --rtol and say so in the entry's footnote)")
    return v


def _series(spec: str) -> dict[str, Any] | None:
    m = re.fullmatch(r"(zoo:[^@]+)@(\d+)", spec or "")
    return {"of": m.group(1), "epoch": int(m.group(2))} if m else None


def _same_metrics(a: list[dict], b: list[dict]) -> str | None:
    """None when the two metric lists agree, else the first difference."""
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} metric rows"
    for x, y in zip(a, b, strict=True):
        for k in ("metric", "condition", "value", "lo", "hi", "n"):
            u, v = x.get(k), y.get(k)
            if isinstance(u, float) and isinstance(v, float):
                if not math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12):
                    return f"{x.get('metric')} [{x.get('condition')}] {k}: {u!r} vs {v!r}"
            elif u != v:
                return f"{x.get('metric')} [{x.get('condition')}] {k}: {u!r} vs {v!r}"
    return None


def submit(run_dir: str | Path, root: str | Path = DEFAULT_ROOT, *, entry_id: str | None = None,
           name: str | None = None, authors: str = "", venue: str = "", link: str = "", paper: str = "",
           footnote: str | None = None, verify_n: int = 8, seed: int | None = None, rtol: float = RTOL,
           atol: float = ATOL, max_batch: int = 32, progress: bool = False) -> tuple[Path, Entry]:
    """Validate, verify and write a run's leaderboard entry; return its path and the entry."""
    from robcurve.run.config import RunConfig
    from robcurve.run.runner import slug
    from robcurve.run.store import Store
    from robcurve.run.summary import build, entry

    run_dir = Path(run_dir)
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise RobcurveError(f"{run_dir} holds no finished run (no results.sqlite)", where=str(run_dir),
                            fix="pass a run folder written by robcurve bench")
    store = Store(db)
    try:
        s = build(store)
        rows = store.rows()
        meta = {k: store.get_meta(k) for k in ("config", "config_digest", "model", "dataset", "compute_s", "code_version")}
    finally:
        store.close()
    cfg: RunConfig = s["cfg"]
    n = s["n"]
    if meta["config_digest"] != cfg.digest():
        raise RobcurveError("the stored config does not match its digest (edited store?)", where=str(db),
                            fix="rerun robcurve bench --fresh")
    # finished: every measurement for every sample
    counts: dict[str, int] = {}
    for _, _, m, _, _ in rows:
        counts[m] = counts.get(m, 0) + 1
    missing = [f"{m} ({counts.get(m, 0)}/{n})" for m in cfg.all_measurements() if counts.get(m, 0) != n]
    if missing:
        raise RobcurveError(f"the run is not finished: {', '.join(missing)}", where=str(run_dir),
                            fix="rerun the same robcurve bench command to complete it")
    e = entry(s)
    # the run folder's own outputs must say what the store says
    cfg_file = run_dir / "config.json"
    if cfg_file.is_file():
        try:
            on_disk = RunConfig.model_validate(json.loads(cfg_file.read_text()))
        except Exception:
            raise RobcurveError(f"{cfg_file} is not a valid run config", where=str(cfg_file),
                                fix="restore it or rerun robcurve bench") from None
        if on_disk.digest() != cfg.digest():
            raise RobcurveError(f"{cfg_file} differs from the config the results were measured with (changed config)",
                                where=str(cfg_file), fix="submit the run as measured, or rerun robcurve bench --fresh")
    run_entry = run_dir / "entry.json"
    if run_entry.is_file():
        try:
            old = json.loads(run_entry.read_text())
            diff = _same_metrics(old["robcurve"]["metrics"], e["robcurve"]["metrics"])
            if diff is None and old["robcurve"].get("results_digest") != e["robcurve"]["results_digest"]:
                diff = "results digest"
        except (ValueError, KeyError, TypeError) as err:
            diff = f"unreadable ({type(err).__name__})"
        if diff:
            raise RobcurveError(f"{run_entry} does not match the stored results ({diff}): tampered or stale",
                                where=str(run_entry), fix=f"rebuild it with robcurve summarize {run_dir}")
    stored = {(m, s_): v for s_, _, m, _, v in rows}
    seed = int(np.random.SeedSequence().entropy % (1 << 31)) if seed is None else seed
    ver = remeasure(cfg, stored, meta["model"] or {}, s["sample_ids"], k=verify_n, seed=seed, rtol=rtol, atol=atol,
                    max_batch=max_batch, progress=progress)
    # the entry
    eid = check_id(entry_id or slug(e["name"]))
    e.update({"id": eid, "name": name or e["name"], "authors": authors, "venue": venue, "link": link, "paper": paper})
    if footnote is not None:
        e["footnote"] = (e["footnote"] + " " + footnote).strip()
    e["robcurve"]["verification"] = ver.model_dump()
    e["robcurve"]["series"] = _series((meta["model"] or {}).get("spec", ""))
    entry_obj = parse_entry(e, f"entry of {run_dir}")
    path = entry_path(Path(root), entry_obj.dataset, entry_obj.threat_model, eid)
    write_json(path, e)
    write_samples(path.with_name(eid + SAMPLES_SUFFIX), rows, meta)
    return path, entry_obj


def verify_entry(path: str | Path, *, weights: str | None = None, model_dir: str | None = None,
                 data_dir: str | None = None, verify_n: int = 8, seed: int | None = None, rtol: float = RTOL,
                 atol: float = ATOL, max_batch: int = 32, remeasure_samples: bool = True,
                 progress: bool = False) -> Verification | None:
    """A maintainer's check of a submitted entry: digests, recomputed metrics, and re-measured samples."""
    from robcurve.run.config import RunConfig
    from robcurve.run.summary import RowSource, build, entry, results_digest

    p = Path(path)
    ent = read_entry(p)
    if ent.robcurve is None:
        raise RobcurveError(f"{p} has no robcurve block (an imported RobustBench row): nothing to verify", where=str(p),
                            fix="measure the model with robcurve bench and submit the run")
    rows, meta = read_samples(p.with_name(p.name.removesuffix(".json") + SAMPLES_SUFFIX))
    src = RowSource(rows, meta, str(p))
    if results_digest(src) != ent.robcurve.results_digest:
        raise RobcurveError("the per-sample results do not match the entry's results digest (tampered)", where=str(p),
                            fix="submit the run again with robcurve submit")
    try:
        cfg = RunConfig.model_validate(ent.robcurve.config)
    except Exception as err:
        raise RobcurveError(f"the entry's config is not valid: {err}", where=str(p), fix="submit the run again") from None
    if cfg.digest() != ent.robcurve.config_digest or meta.get("config_digest") != cfg.digest():
        raise RobcurveError("the entry's config does not match its digest (changed config)", where=str(p),
                            fix="submit the run as measured")
    rebuilt = entry(build(src))
    diff = _same_metrics([r.model_dump() for r in ent.robcurve.metrics], rebuilt["robcurve"]["metrics"])
    if diff:
        raise RobcurveError(f"the entry's numbers differ from its per-sample results ({diff}): tampered", where=str(p),
                            fix="submit the run again with robcurve submit")
    if abs((ent.clean_acc or 0) - rebuilt["clean_acc"]) > 1e-9:
        raise RobcurveError("the entry's clean_acc differs from its per-sample results (tampered)", where=str(p),
                            fix="submit the run again with robcurve submit")
    if not remeasure_samples:
        return None
    cfg = cfg.model_copy(update={"weights": weights, "model_dir": model_dir, "data_dir": data_dir})
    stored = {(m, s_): v for s_, _, m, _, v in rows}
    seed = int(np.random.SeedSequence().entropy % (1 << 31)) if seed is None else seed
    return remeasure(cfg, stored, ent.robcurve.model, ent.robcurve.sample_ids, k=verify_n, seed=seed, rtol=rtol,
                     atol=atol, max_batch=max_batch, progress=progress)
