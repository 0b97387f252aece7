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

import copy
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from robcurve.errors import RobcurveError, one_line
from robcurve.leaderboard.integrity import (
    FREE_TEXT,
    append_history,
    clean_staging,
    commit_files,
    content_digest,
    locked,
    read_text,
    sha256_bytes,
    staging_dir,
)
from robcurve.leaderboard.io import (
    DEFAULT_ROOT,
    SAMPLES_SUFFIX,
    check_id,
    entry_files,
    entry_path,
    parse_entry,
    read_entry,
    read_samples,
    samples_bytes,
)
from robcurve.leaderboard.schema import Entry, Verification, public_model_info
from robcurve.run.config import (
    DIGEST_V1_FIELDS,
    MACHINE_FIELDS,
    PERFORMANCE_FIELDS,
    RunConfig,
    config_changes,
    config_digest,
    dotted_get,
    load_config,
    portable_spec,
)
from robcurve.run.store import Store, atomic_write_text, json_safe

RTOL, ATOL = 1e-3, 1e-4
# Turning angles (degrees) are differences of features at a step of 1e-3 and more: float rounding
# (thread count, batch composition) moves single angles of ReLU networks by up to ~0.01 degree
# (measured: 2.2528 vs 2.2579 on the adversarially trained ResNet), so they get an absolute
# tolerance in degrees beside the relative one.
ANGLE_ATOL = 0.05
NOT_COMPARED = {"plot", "queries"}  # drawing data and cost bookkeeping (a query count depends on the batch)
DETERMINISTIC_DIRECTIONS = {"fgsm", "deepfool"}


def _per_sample(m: str, cfg: Any) -> bool:
    """Re-measure ``m`` on the chosen samples alone (else on their whole batch): the measurement's ``recheck``."""
    # deferred: torch, needed only here
    from robcurve.run.measures import MEASUREMENTS

    rule = MEASUREMENTS.get(m).recheck
    return rule == "sample" or (rule == "direction" and cfg.direction.kind in DETERMINISTIC_DIRECTIONS)


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
        if "angle" in path.rsplit("[", 1)[-1]:  # the key after the sample index (keys hold dots: _d0.001)
            atol = max(atol, ANGLE_ATOL)
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
    # deferred: torch, needed only here
    from robcurve.run.measures import Context

    # deferred: safetensors, torch, needed only here
    from robcurve.run.runner import measure_samples, prepare

    model, data, device = prepare(cfg, verbose=False)
    got = model.info.weights_sha256
    want = stored_model.get("weights_sha256")
    if want and got != want:
        raise RobcurveError(f"the weights differ from the ones the results were measured with (sha256 {str(got)[:12]}… "
                            f"vs stored {want[:12]}…)", fix="submit the run made with these weights, or rerun bench with them")
    loaded = model.info
    for field in ("family", "arch", "num_classes"):
        if field in stored_model and getattr(loaded, field, None) != stored_model[field]:
            raise RobcurveError(f"the model's {field} is {getattr(loaded, field, None)!r} but the entry says "
                                f"{stored_model[field]!r} (changed after measuring)",
                                fix="submit the run again; the family and architecture come from the model source")
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
        values = measure_samples(ctx, m, idx, start)  # the runner's own measuring step
        ctx.cache.clear()
        measured.append(m)
        for s, v in zip(idx, values, strict=True):
            if (m, s) not in stored:
                mismatches.append(f"{m}[{s}]: not stored")
                continue
            compared += _close(stored[(m, s)], json_safe(v), rtol, atol, f"{m}[{s}]", mismatches)
        if progress:
            print(f"robcurve: verified {m} on {len(idx)} samples", file=sys.stderr)
    v = Verification(samples=chosen, batches=[first_batch] if any(not _per_sample(m, cfg) for m in measured) else [],
                     measurements=measured, compared=compared, mismatches=len(mismatches),
                     tolerance={"rtol": rtol, "atol": atol, "angle_atol_deg": ANGLE_ATOL}, skipped=skipped, seed=seed, weights_sha256=got)
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


def _first_diff(a: Any, b: Any, path: str) -> str | None:
    """The first path where two JSON values differ (floats within 1e-9 relative), else None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}: {'added' if k in a else 'missing'}"
            d = _first_diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        return next((d for i, (x, y) in enumerate(zip(a, b, strict=True)) if (d := _first_diff(x, y, f"{path}[{i}]"))), None)
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool) and not isinstance(b, bool):
        return None if math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12) else f"{path}: {a!r} vs {b!r}"
    return None if a == b else f"{path}: {a!r} vs {b!r}"


def check_args(*, verify_n: int, rtol: float, atol: float, max_batch: int = 32) -> None:
    """Argument checks that run before anything is measured."""
    if not isinstance(verify_n, int) or verify_n < 1:
        raise RobcurveError(f"the number of samples to re-measure must be at least 1, got {verify_n}",
                            fix="pass --n / --verify-n 1 or more (default 8)")
    for name, v in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise RobcurveError(f"--{name} must be a finite number >= 0, got {v!r}",
                                fix=f"pass e.g. --{name} {RTOL if name == 'rtol' else ATOL:g}")
    if not isinstance(max_batch, int) or max_batch < 1:
        raise RobcurveError(f"max_batch must be at least 1, got {max_batch}", fix="use the default 32")


# -- protocol of a board ---------------------------------------------------------------------------
PROTOCOL_FILE = "protocol.yaml"
#: config fields that describe the model, not the protocol (every model of a board differs in them)
MODEL_FIELDS = ("model", "model_kwargs", "mean", "std", "input_size")


def protocol_digest(cfg_dump: dict[str, Any]) -> str:
    """The digest of a config without its model fields and with its performance settings neutralised
    (:data:`PERFORMANCE_FIELDS`): what every entry of a board shares."""
    d = {k: copy.deepcopy(v) for k, v in cfg_dump.items() if k not in MODEL_FIELDS}
    for dotted, canonical in PERFORMANCE_FIELDS.items():
        parent, _, key = dotted.rpartition(".")
        sec = dotted_get(d, parent)
        if isinstance(sec, dict) and key in sec:
            if canonical is None:
                del sec[key]
            else:
                sec[key] = canonical
    return config_digest(d)


def board_protocol(root: Path, dataset: str, threat: str) -> dict[str, Any] | None:
    """The protocol a board declares in ``<root>/<dataset>/<threat>/protocol.yaml`` (None: no protocol)."""
    import yaml


    p = Path(root) / dataset / threat / PROTOCOL_FILE
    if not p.exists() and not p.is_symlink():
        return None
    try:
        d = yaml.safe_load(read_text(p, 1 << 16, Path(root), "protocol file"))
    except yaml.YAMLError as e:
        raise RobcurveError(f"{p} is not valid YAML ({one_line(e, 120)})", where=str(p), fix="restore the file") from None
    if not isinstance(d, dict) or not isinstance(d.get("config"), str) or not isinstance(d.get("digest"), str):
        raise RobcurveError(f"{p} must name the protocol's config file and its digest", where=str(p),
                            fix="write e.g. `config: configs/leaderboard-fmnist.yaml` and `digest: <16 hex>`")
    return d


def protocol_differences(cfg_dump: dict[str, Any], protocol_cfg: dict[str, Any]) -> list[str]:
    """The protocol fields (dotted) in which a run's config differs from the board's protocol config."""
    def skip(dotted: str, a: dict[str, Any], b: dict[str, Any]) -> bool:
        if dotted in PERFORMANCE_FIELDS:
            return True
        # top level: the model fields, and a later field absent from the run's config (absent means its default)
        return "." not in dotted and (dotted in MODEL_FIELDS or dotted not in a and dotted not in DIGEST_V1_FIELDS)

    return [f"{p} ({dotted_get(cfg_dump, p)!r} here, {dotted_get(protocol_cfg, p)!r} on the board)"
            for p in config_changes(cfg_dump, protocol_cfg, skip)]


def _check_protocol(cfg: Any, root: Path, dataset: str, threat: str) -> dict[str, Any] | None:
    proto = board_protocol(root, dataset, threat)
    if proto is None:
        return None
    mine = protocol_digest(cfg.model_dump())
    if mine == proto["digest"]:
        return proto
    where = Path(root) / dataset / threat / PROTOCOL_FILE
    diffs: list[str] = []
    try:
        pcfg = load_config(proto["config"], {"model": cfg.model})
        diffs = [d for d in protocol_differences(cfg.model_dump(exclude=set(MACHINE_FIELDS)),
                                                  pcfg.model_dump(exclude=set(MACHINE_FIELDS)))]
    except RobcurveError:
        pass
    raise RobcurveError(f"the run was not made with this board's protocol ({proto['config']}, digest {proto['digest']}; "
                        f"the run's is {mine})" + (f": it differs in {'; '.join(diffs[:6])}" if diffs else ""),
                        where=str(where), fix=f"rerun with robcurve bench --config {proto['config']} --model {cfg.model}")


def _chance(num_classes: Any) -> float:
    return 100.0 / num_classes if isinstance(num_classes, int) and num_classes > 0 else 10.0


def public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The store's meta as it ships with an entry: no machine paths (folders, devices, weights' location)."""
    out = dict(meta)
    if isinstance(out.get("model"), dict):
        out["model"] = public_model_info(out["model"])
    if isinstance(out.get("config"), dict):
        out["config"] = {**{k: v for k, v in out["config"].items() if k not in MACHINE_FIELDS},
                         "model": portable_spec(out["config"].get("model"))}
    return out


def shipped_rows(store: Any) -> tuple[list[tuple[int, int, str, int, dict]], dict[str, Any]]:
    """A store's per-sample rows and the meta that ships with them (:func:`public_meta`): a samples file's content."""
    meta = {k: store.get_meta(k) for k in ("config", "config_digest", "model", "dataset", "compute_s", "code_version")}
    return store.rows(), public_meta(meta)


def submit(run_dir: str | Path, root: str | Path = DEFAULT_ROOT, *, entry_id: str | None = None,
           name: str | None = None, authors: str = "", venue: str = "", link: str = "", paper: str = "",
           footnote: str | None = None, verify_n: int = 8, seed: int | None = None, rtol: float = RTOL,
           atol: float = ATOL, max_batch: int = 32, replace: bool = False, allow_below_chance: bool = False,
           progress: bool = False) -> tuple[Path, Entry]:
    """Validate, verify and write a run's leaderboard entry; return its path and the entry.

    Everything that can be refused without measuring is checked first (arguments, id, an
    existing entry, the board's protocol, clean accuracy at or below chance, weights already on
    the board); then seeded samples are re-measured; then, holding the board's lock, the
    per-sample file and the entry are staged and moved into place (samples first).
    """
    # deferred: safetensors, torch, needed only here
    from robcurve.run.runner import slug

    # deferred: pandas, needed only here
    from robcurve.run.summary import build, missing_rows

    check_args(verify_n=verify_n, rtol=rtol, atol=atol, max_batch=max_batch)
    if entry_id is not None:
        check_id(entry_id)
    run_dir = Path(run_dir)
    root = Path(root)
    for proto in sorted(root.glob(f"*/*/{PROTOCOL_FILE}")):  # a damaged protocol file is refused before anything else
        board_protocol(root, proto.parts[-3], proto.parts[-2])
    db = run_dir / "results.sqlite"
    if not db.is_file():
        raise RobcurveError(f"{run_dir} holds no finished run (no results.sqlite)", where=str(run_dir),
                            fix="pass a run folder written by robcurve bench")
    store = Store(db)
    try:
        missing = missing_rows(store)
        if missing:
            raise RobcurveError(f"the run is not finished: {missing}", where=str(run_dir),
                                fix="rerun the same robcurve bench command to complete it")
        s = build(store)
        rows, meta = shipped_rows(store)
    finally:
        store.close()
    cfg: RunConfig = s.cfg
    if meta["config_digest"] != cfg.digest():
        raise RobcurveError("the stored config does not match its digest (edited store?)", where=str(db),
                            fix="rerun robcurve bench --fresh")
    e = s.entry()
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
    # what can be refused before measuring
    eid = check_id(entry_id or slug(e["name"]))
    path = entry_path(root, e["dataset"], e["threat_model"], eid)
    if (path.exists() or path.is_symlink()) and not replace:
        raise RobcurveError(f"the board already holds an entry {eid!r} ({path})", where=str(path),
                            fix="choose another --id, or pass --replace to replace it (the old entry's digest is kept "
                                f"in {root / 'history.jsonl'})")
    proto = _check_protocol(cfg, root, e["dataset"], e["threat_model"])
    model_info = meta["model"] or {}
    chance = _chance(model_info.get("num_classes"))
    flags: list[str] = []
    if e["clean_acc"] <= chance:
        if not allow_below_chance:
            raise RobcurveError(f"clean accuracy {e['clean_acc']:.2f}% is at or below chance ({chance:.1f}%): a wrong "
                                "input normalisation or label mapping, or an untrained model", where=str(run_dir),
                                fix="check --mean/--std and the class order; pass --allow-below-chance to submit it "
                                    "anyway (the entry is marked)")
        flags.append("below-chance")
    sha = model_info.get("weights_sha256")
    if sha:
        files, _ = entry_files(root, e["dataset"], e["threat_model"])
        for other in files:
            if other == path:
                continue
            o = read_entry(other, root)
            if o.robcurve is not None and o.robcurve.model.get("weights_sha256") == sha and o.robcurve.series is None \
                    and _series(model_info.get("spec", "")) is None:
                raise RobcurveError(f"these weights (sha256 {sha[:12]}…) are already on the board as {o.id!r}",
                                    where=str(other), fix=f"replace that entry with --id {o.id} --replace, or submit "
                                                          "other weights")
    stored = {(m, s_): v for s_, _, m, _, v in rows}
    seed = int(np.random.SeedSequence().entropy % (1 << 31)) if seed is None else seed
    ver = remeasure(cfg, stored, model_info, s.sample_ids, k=verify_n, seed=seed, rtol=rtol, atol=atol,
                    max_batch=max_batch, progress=progress)
    # the entry
    e.update({"id": eid, "name": name or e["name"], "authors": authors, "venue": venue, "link": link, "paper": paper})
    if footnote is not None:
        e["footnote"] = (e["footnote"] + " " + footnote).strip()
    if flags:
        e["robcurve"]["flags"] = flags
    if proto is not None:
        e["robcurve"]["protocol"] = {"config": proto["config"], "digest": proto["digest"]}
    e["robcurve"]["series"] = _series(model_info.get("spec", ""))
    e["robcurve"]["verification"] = ver.model_dump()
    e["robcurve"]["verification"]["content_digest"] = content_digest(e)
    entry_obj = parse_entry(e, f"entry of {run_dir}")
    entry_text = json.dumps(e, indent=2, allow_nan=False) + "\n"
    data = samples_bytes(rows, meta)
    with locked(root):
        leftovers = clean_staging(root)
        if leftovers and progress:
            print(f"robcurve: removed {len(leftovers)} leftover staging folder(s) of an interrupted write: "
                  f"{', '.join(leftovers)}", file=sys.stderr)
        replaced = None
        if path.exists() or path.is_symlink():
            if not replace:  # written by a concurrent submit since the check above
                raise RobcurveError(f"another submit wrote {path} meanwhile", where=str(path),
                                    fix="choose another --id, or pass --replace")
            replaced = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        stage = staging_dir(root)
        samples_path = path.with_name(eid + SAMPLES_SUFFIX)
        (stage / samples_path.name).write_bytes(data)
        (stage / path.name).write_text(entry_text, encoding="utf-8")
        if replaced is not None:
            append_history(root, {"id": eid, "path": str(path.relative_to(root)), "replaced_sha256": sha256_bytes(replaced),
                                  "by_sha256": sha256_bytes(entry_text.encode()), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        commit_files([(stage / samples_path.name, samples_path), (stage / path.name, path)], stage)
    return path, entry_obj


#: fields a robcurve entry takes from its per-sample results (the rest are free text or the verification)
def _expected(ent_raw: dict[str, Any], rebuilt: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:

    exp = {k: v for k, v in rebuilt.items() if k not in FREE_TEXT}
    rb = dict(exp["robcurve"])
    raw_rb = ent_raw.get("robcurve") or {}
    rb["version"] = raw_rb.get("version")  # the code version that made the entry (checked by re-measuring)
    rb["config"] = raw_rb.get("config")  # checked against the config digest (fields added later are left out of both)
    rb["verification"] = raw_rb.get("verification")
    rb["series"] = _series((meta.get("model") or {}).get("spec", ""))
    for k in ("flags", "protocol"):  # set by submit; checked below
        if k in raw_rb:
            rb[k] = raw_rb[k]
    exp["robcurve"] = rb
    return exp


def verify_entry(path: str | Path, *, weights: str | None = None, model_dir: str | None = None,
                 data_dir: str | None = None, verify_n: int = 8, seed: int | None = None, rtol: float = RTOL,
                 atol: float = ATOL, max_batch: int = 32, remeasure_samples: bool = True, root: str | Path | None = None,
                 sign: bool = False, progress: bool = False) -> Verification | None:
    """A maintainer's check of a submitted entry.

    1. The per-sample file matches the results digest and the config its digest.
    2. Every field that is not free text equals what the per-sample results give (numbers,
       n, sample ids, model block, series marker, dataset, threat model, eps; RobustBench's
       ``autoattack_acc``/``reported`` must be empty in a robcurve entry), and the content
       digest of the verification record matches the entry.
    3. Seeded samples are measured again with the model, whose weights' sha256, family, arch and
       spec must equal the entry's.
    ``sign`` (maintainers migrating an entry made before content digests): after 1-3 pass, write
    the content digest into the entry.
    """
    # deferred: pandas, needed only here
    from robcurve.run.summary import RowSource, build, results_digest

    check_args(verify_n=verify_n, rtol=rtol, atol=atol, max_batch=max_batch)
    p = Path(path)
    root_p = Path(root) if root is not None else None
    ent = read_entry(p, root_p)
    raw = ent._raw  # the file's JSON as read once by read_entry
    if ent.robcurve is None:
        raise RobcurveError(f"{p} has no robcurve block (an imported RobustBench row): nothing to verify", where=str(p),
                            fix="measure the model with robcurve bench and submit the run")
    rows, meta = read_samples(p.with_name(p.name.removesuffix(".json") + SAMPLES_SUFFIX), root_p)
    src = RowSource(rows, meta, str(p))
    if results_digest(src) != ent.robcurve.results_digest:
        raise RobcurveError("the per-sample results do not match the entry's results digest (tampered)", where=str(p),
                            fix="submit the run again with robcurve submit")
    try:
        cfg = RunConfig.model_validate(ent.robcurve.config)
    except Exception as err:
        raise RobcurveError(f"the entry's config is not valid: {one_line(err, 300)}", where=str(p),
                            fix="submit the run again") from None
    if cfg.digest() != ent.robcurve.config_digest or meta.get("config_digest") != cfg.digest():
        raise RobcurveError("the entry's config does not match its digest (changed config)", where=str(p),
                            fix="submit the run as measured")
    rebuilt = build(src).entry()
    diff = _same_metrics([r.model_dump() for r in ent.robcurve.metrics], rebuilt["robcurve"]["metrics"])
    if diff:
        raise RobcurveError(f"the entry's numbers differ from its per-sample results ({diff}): tampered", where=str(p),
                            fix="submit the run again with robcurve submit")
    # every field that is not free text

    mine = {k: v for k, v in raw.items() if k not in FREE_TEXT}
    if ent.robcurve.model != public_model_info(meta.get("model") or {}):
        raise RobcurveError("the entry's model block (family, spec, weights) differs from the one stored with its "
                            "per-sample results (tampered)", where=str(p), fix="submit the run again")
    diff = _first_diff(mine, _expected(raw, rebuilt, meta), "entry")
    if diff:
        raise RobcurveError(f"the entry holds a field its per-sample results do not give ({diff}): changed after "
                            "submission, or not made by robcurve submit", where=str(p),
                            fix="remove the field, or submit the run again (RobustBench numbers go in an imported entry)")
    flags = (raw.get("robcurve") or {}).get("flags", [])
    if "below-chance" in flags and (ent.clean_acc or 0) > _chance(ent.robcurve.model.get("num_classes")):
        raise RobcurveError("the entry is flagged below chance but is not", where=str(p), fix="submit the run again")
    stored_cd = (ent.robcurve.verification.content_digest if ent.robcurve.verification else None)
    if stored_cd is not None and stored_cd != content_digest(raw):
        raise RobcurveError("a field other than free text changed after verification (content digest differs)",
                            where=str(p), fix="submit the run again, or restore the entry from version control")
    if stored_cd is None and not sign:
        raise RobcurveError("the entry has no content digest (made before robcurve signed entries by content)",
                            where=str(p), fix=f"a maintainer re-verifies it by re-measurement: robcurve leaderboard "
                                              f"verify {p} --sign")
    if not remeasure_samples:
        if sign:
            raise RobcurveError("--sign needs the re-measurement", fix="leave out --no-remeasure")
        return None
    update: dict[str, Any] = {"weights": weights, "model_dir": model_dir, "data_dir": data_dir}
    if str(cfg.model).startswith("file:"):  # the entry names the file only: the maintainer points at their copy
        if not weights:
            raise RobcurveError(f"the entry's model is {cfg.model} (a weights file of the submitter)", where=str(p),
                                fix=f"pass --weights PATH/{cfg.model[5:]} (its sidecar JSON beside it); its sha256 is checked")
        update.update(model=f"file:{weights}", weights=None)
    cfg = cfg.model_copy(update=update)
    stored = {(m, s_): v for s_, _, m, _, v in rows}
    seed = int(np.random.SeedSequence().entropy % (1 << 31)) if seed is None else seed
    v = remeasure(cfg, stored, ent.robcurve.model, ent.robcurve.sample_ids, k=verify_n, seed=seed, rtol=rtol,
                  atol=atol, max_batch=max_batch, progress=progress)
    if sign:

        raw["robcurve"]["verification"] = dict(raw["robcurve"]["verification"] or v.model_dump())
        raw["robcurve"]["verification"]["content_digest"] = content_digest(raw)
        atomic_write_text(p, json.dumps(raw, indent=2, allow_nan=False) + "\n")
        append_history(p.parents[2], {"id": ent.id, "path": "/".join(p.parts[-3:]), "signed": raw["robcurve"]["verification"]["content_digest"],
                                      "remeasured": {"seed": v.seed, "samples": v.samples, "compared": v.compared,
                                                     "tolerance": v.tolerance},
                                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return v
