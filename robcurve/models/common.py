"""Helpers shared by model plugins: reading weight files safely, guessing the family."""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from robcurve.errors import ModelError, UnsafeFileError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's message (the type name if it has none)."""
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(e).__name__


def _sniff(p: Path) -> str:
    """The weights format by content: ``"safetensors"``, ``"torch"`` (zip or legacy pickle) or ``"unknown"``."""
    with open(p, "rb") as f:
        head = f.read(16)
    if not head:
        raise ModelError(f"weights file {p} is empty (0 bytes)", where=str(p),
                         fix="the download or save was interrupted; fetch or save the weights again")
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "unknown"


def refused_global(msg: str) -> str | None:
    """What torch's weights-only unpickler refused, from its error text (None if it was not a refusal)."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    if m:
        return m.group(1)
    m = re.search(r"(Unsupported class [\w.]+|Trying to call reduce for unrecognized function [^\n]+)", msg)
    if m:
        return m.group(1)
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch checkpoint (``weights_only=True``).

    The format is taken from the file's first bytes (the suffix only when they say nothing).
    Torch checkpoints are read with ``torch.load(weights_only=True)``, which builds tensors
    and plain containers only: a checkpoint that asks to import or call anything else is
    refused with :class:`~robcurve.errors.UnsafeFileError`, and nothing it names is run.
    Checkpoints that nest the weights under ``state_dict``/``model``/``model_state`` are
    unwrapped, and a ``module.`` prefix (DataParallel) is removed.
    """
    p = Path(path)
    if p.is_dir():
        raise ModelError(f"weights path {p} is a folder, not a file", where=str(p), fix="pass the weights file itself")
    if not p.is_file():
        raise ModelError(f"weights file not found: {p}", where=str(p.parent), fix="check the path given with --weights")
    try:
        kind = _sniff(p)
    except OSError as e:
        raise ModelError(f"cannot read weights file {p}: {e.strerror or type(e).__name__}", where=str(p),
                         fix="check the file's permissions") from None
    if kind == "unknown":
        kind = "safetensors" if p.suffix == ".safetensors" else "torch"
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            with warnings.catch_warnings():  # torch warns about pickle protocols it reads anyway
                warnings.simplefilter("ignore")
                sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupted, foreign or hostile file
        refused = refused_global(str(e)) if kind == "torch" else None
        if refused:
            raise UnsafeFileError(f"refusing to load {p}: the checkpoint asks for {refused}, which a weights file never "
                                  "needs (loading it fully could run code)", where=str(p),
                                  fix="use a safetensors file or a plain torch.save(model.state_dict()) from a source you trust") from None
        detail = _first_line(e)
        m = re.search(r"Unsupported operand \d+", str(e))
        if m:
            detail = f"a pickle that torch's safe (weights-only) loader cannot read ({m.group(0)})"
        raise ModelError(f"cannot read weights from {p}: {type(e).__name__}: {detail}", where=str(p),
                         fix="pass a safetensors file or a torch state dict saved with torch.save (the file may be truncated)") from None
    for key in ("state_dict", "model", "model_state", "model_state_dict", "net"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ModelError(f"{p} does not hold a state dict of tensors (got {type(sd).__name__})", where=str(p),
                         fix="save model.state_dict()")
    if not sd:
        raise ModelError(f"{p} holds an empty state dict", where=str(p), fix="save model.state_dict() of the trained model")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str, spec: str) -> None:
    """``load_state_dict(strict=True)`` with one clear error on missing keys or shape mismatch."""
    try:
        net.load_state_dict(sd, strict=True)
    except (RuntimeError, TypeError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3])[:300] if len(lines) > 1 else _first_line(e, 300)
        raise ModelError(f"the weights in {source} do not fit {spec}: {detail}", where=source,
                         fix="check that the architecture name (and num_classes / in_chans) matches the checkpoint") from None


def guess_family(net: nn.Module) -> str:
    """'transformer' if the network has attention modules, 'cnn' if it convolves, else 'other'."""
    names = {type(m).__name__.lower() for m in net.modules()}
    if any("attention" in n or n in ("multiheadattention",) for n in names):
        return "transformer"
    if any(isinstance(m, nn.Conv2d) for m in net.modules()):
        return "cnn"
    return "other"
