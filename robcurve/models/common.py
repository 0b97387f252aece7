"""Helpers shared by model plugins: reading weight files safely, guessing the family."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from robcurve.errors import RobcurveError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch checkpoint (``weights_only=True``).

    Checkpoints that nest the weights under ``state_dict``/``model``/``model_state`` are
    unwrapped, and a ``module.`` prefix (DataParallel) is removed.
    """
    p = Path(path)
    if not p.is_file():
        raise RobcurveError(f"weights file not found: {p}", where=str(p.parent), fix="check the path given with --weights")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupted or foreign file
        raise RobcurveError(f"cannot read weights from {p}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                            where=str(p), fix="pass a safetensors file or a torch state dict saved with torch.save") from None
    for key in ("state_dict", "model", "model_state", "model_state_dict", "net"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RobcurveError(f"{p} does not hold a state dict of tensors", where=str(p), fix="save model.state_dict()")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_into(net: nn.Module, sd: dict[str, torch.Tensor], source: str, spec: str) -> None:
    """``load_state_dict(strict=True)`` with one clear error on missing keys or shape mismatch."""
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3])[:300] if len(lines) > 1 else lines[0][:300]
        raise RobcurveError(f"the weights in {source} do not fit {spec}: {detail}", where=source,
                            fix="check that the architecture name (and num_classes / in_chans) matches the checkpoint") from None


def guess_family(net: nn.Module) -> str:
    """'transformer' if the network has attention modules, 'cnn' if it convolves, else 'other'."""
    names = {type(m).__name__.lower() for m in net.modules()}
    if any("attention" in n or n in ("multiheadattention",) for n in names):
        return "transformer"
    if any(isinstance(m, nn.Conv2d) for m in net.modules()):
        return "cnn"
    return "other"
