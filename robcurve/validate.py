"""Cheap range checks shared by the config schema and the public API functions.

Units: images live in [0, 1] pixel space, so every perturbation budget is in [0, 1] pixel
units. An L∞ budget above 1 can change nothing more than a budget of 1 does (and is almost
always a budget written in 0..255 units, e.g. ``8`` for ``8/255``); an L2 budget may exceed
1 (the L2 norm of an image can reach sqrt(C·H·W)) but must be finite.

Every check raises :class:`robcurve.errors.InputError` (a ``RobcurveError`` and a
``ValueError``) whose one-line message names the argument, its range and the fix, and
returns the value as a plain ``float`` so a caller can write ``eps = check_budget("eps", eps, norm)``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from robcurve.errors import InputError, ModelError
from robcurve.naming import Norm, parse_norm

NORMS = tuple(n.value for n in Norm)


def check_norm(norm: Any, name: str = "norm") -> str:
    """``"Linf"`` or ``"L2"`` (case-insensitive, ``"inf"``/``"2"`` accepted); InputError otherwise."""
    n = parse_norm(norm)
    if n is None:
        raise InputError(f"{name} must be one of {', '.join(NORMS)}, got {norm!r}", fix=f"pass {name}='Linf' or {name}='L2'")
    return n.value


def as_finite_float(name: str, value: Any) -> float:
    """``value`` as a finite float; InputError for non-numbers (bool included), NaN and ±inf."""
    if isinstance(value, bool) or value is None:
        raise InputError(f"{name} must be a number, got {value!r}", fix=f"pass {name} as a float")
    try:
        if hasattr(value, "numel") and value.numel() != 1:  # a tensor with several values
            raise InputError(f"{name} must be a single number, got a tensor of shape {tuple(value.shape)}",
                             fix=f"pass one {name} for all samples")
        v = float(value)
    except InputError:
        raise
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}", fix=f"pass {name} as a float") from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v}", fix=f"pass a finite {name}")
    return v


def _did_you_mean_255(v: float) -> str:
    if 1 < v <= 255:
        return f" (did you mean {v:g}/255 = {v / 255:.4g}?)"
    return ""


def _many(value: Any) -> bool:
    """Whether ``value`` is a list, tuple, tensor or array holding more than one number."""
    if isinstance(value, (list, tuple)):
        return len(value) != 1
    size = value.numel() if hasattr(value, "numel") else getattr(value, "size", None)
    return isinstance(size, int) and size != 1 and not isinstance(value, (str, bytes))


def check_budget(name: str, value: Any, norm: str = "Linf", *, allow_zero: bool = True) -> Any:
    """Check a perturbation budget in [0, 1] pixel units; return it (a float for a scalar).

    Args:
        name: the argument's name as the user wrote it (``"eps"``, ``"pgd.eps"``, ``"eta"``).
        value: the budget: a number, a one-element tensor, or a list/tuple/tensor/array of
            per-sample budgets (then every element is checked and ``value`` is returned unchanged).
        norm: ``"Linf"`` (budget must be in [0, 1]) or ``"L2"`` (budget must be >= 0 and finite).
        allow_zero: whether 0 is accepted (a zero budget is the clean input).

    Raises:
        InputError: a non-number, NaN/inf, a negative budget, zero when not allowed, or an L∞
            budget above 1 (the message suggests ``value/255`` for values in (1, 255]).
    """
    n = check_norm(norm)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if _many(value):
        import numpy as np

        try:
            arr = value.detach().cpu().double().numpy() if hasattr(value, "detach") else np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be numbers, got {value!r}", fix=f"pass {name} as a float or one float per sample") from None
        if arr.size == 0:
            raise InputError(f"{name} is empty", fix=f"pass one {name} per sample or a single number")
        bad = arr[~np.isfinite(arr)]
        if bad.size:
            raise InputError(f"{name} must be finite, got {bad.flat[0]}", fix=f"pass finite values of {name}")
        for v in (float(arr.min()), float(arr.max())):
            try:
                check_budget(name, v, n, allow_zero=allow_zero)
            except InputError as e:
                raise InputError(f"per-sample {e.what}", fix=e.fix) from None
        return value
    v = as_finite_float(name, value)
    if v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be {bound} (a budget in [0, 1] pixel units), got {v:g}",
                         fix=f"pass a {'non-negative' if allow_zero else 'positive'} {name}")
    if n == "Linf" and v > 1:
        raise InputError(f"{name}={v:g} is outside [0, 1]: L-inf budgets are in [0, 1] pixel units"
                         + _did_you_mean_255(v), fix=f"pass {name} in [0, 1], e.g. {name}=8/255 for the common CIFAR budget")
    return v


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools and fractional numbers refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {value!r}", fix=f"pass {name} as a whole number >= {minimum}")
    if int(value) < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}", fix=f"pass {name} >= {minimum}")
    return int(value)


def check_model_on_data(model: Any, images: Any, labels: Any, *, dataset: str = "the dataset", probe: int = 2) -> None:
    """Refuse a model that cannot serve a dataset, from one forward of ``probe`` images.

    Checks (cheap; call once after loading both): the model takes the images (channels,
    size), returns logits (N, K) that are finite on clean images, and has a class for every
    label (``labels.max() < K``). Images (N, C, H, W) in [0, 1]; labels (N,) integers.

    Raises:
        ModelError: with one line naming the model, the dataset and the mismatch.
    """
    import torch

    name = getattr(getattr(model, "info", None), "spec", "") or type(model).__name__
    x = images[: max(1, int(probe))]
    dev = getattr(model, "device", None)
    dt = getattr(model, "dtype", None)
    x = x.to(device=dev, dtype=dt) if dev is not None else x
    with torch.no_grad():
        try:
            logits = model(x)
        except ModelError:
            raise
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as e:
            if "out of memory" in str(e).lower():
                raise
            raise ModelError(f"model {name!r} cannot take images of shape {tuple(x.shape[1:])} from {dataset}: "
                             f"{type(e).__name__}: {' '.join(str(e).split())[:240]}",
                             fix="use a model built for this dataset (channels, image size)") from e
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ModelError(f"model {name!r} returned {got} for {x.shape[0]} images of {dataset}, expected logits (N, K)",
                         fix="make the network return one row of class scores per image")
    if not torch.isfinite(logits).all():
        raise ModelError(f"model {name!r} returns non-finite logits (NaN or inf) on clean images of {dataset}",
                         fix="check the weights (a diverged or damaged checkpoint) and the normalisation (std > 0)")
    k = int(logits.shape[1])
    if labels is not None and len(labels):
        top = int(labels.max())
        if top >= k:
            raise ModelError(f"model {name!r} has {k} classes but the labels of {dataset} go up to {top}",
                             fix="use a model trained on this dataset (or one with at least as many classes)")
