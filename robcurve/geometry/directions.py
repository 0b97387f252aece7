"""Directions of travel d (METHOD.md §1).

A direction is a tensor with the shape of the images, (N, C, H, W), one per sample. ε in
every geometry measurement multiplies it, so its normalisation fixes what ε means:

* ``fgsm`` (default): sign of the gradient of the cross-entropy at the true label with
  respect to the input; entries in {-1, 0, 1}, ‖d‖∞ = 1, so ε is a per-pixel L∞ step in
  [0, 1] pixel units.
* ``random``: seeded random signs (±1), ‖d‖∞ = 1.
* ``orthogonal``: seeded random signs projected orthogonal (per sample, in the flattened
  pixel space) to the FGSM direction, then rescaled to ‖d‖∞ = 1. It is no longer a sign
  vector: ε is still the largest per-pixel change, but ‖d‖₂ is smaller than a sign vector's.
* ``pgd`` / ``deepfool``: x_adv − x from :mod:`robcurve.attacks`, rescaled per sample to
  ‖d‖∞ = 1 (option ``normalize="L2"`` gives ‖d‖₂ = 1 instead). A sample the attack did not
  move gets the zero direction.
* ``custom``: the user's tensor, used as given (no rescaling).

Random draws use a CPU ``torch.Generator`` seeded with ``seed``, so they are identical on
every device; they depend on the batch (the k-th sample of a batch gets the k-th draw).
Nothing is clamped to [0, 1]. Every rule is a function
``rule(model: RobcurveModel, x, y, *, seed, custom, **options) -> Tensor`` in :data:`directions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robcurve.attacks import deepfool, pgd
from robcurve.errors import RobcurveError
from robcurve.models.wrapper import RobcurveModel, as_robmodel
from robcurve.registry import Registry

DirectionRule = Callable[..., Tensor]

directions: Registry[DirectionRule] = Registry("direction")


# -- helpers ---------------------------------------------------------------------------------
def random_signs(shape: tuple[int, ...], seed: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> Tensor:
    """Seeded random ±1 tensor of ``shape`` (drawn on the CPU, then moved to ``device``)."""
    g = torch.Generator().manual_seed(int(seed))
    bits = torch.randint(0, 2, shape, generator=g)
    return (bits * 2 - 1).to(dtype=dtype, device=device)


def linf_normalize(d: Tensor) -> Tensor:
    """Rescale each sample of d (N, ...) to ‖d‖∞ = 1; an all-zero sample stays zero."""
    n = d.flatten(1).abs().amax(1).view(-1, *([1] * (d.dim() - 1)))
    return torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(d))


def l2_normalize(d: Tensor) -> Tensor:
    """Rescale each sample of d (N, ...) to ‖d‖₂ = 1; an all-zero sample stays zero."""
    n = d.flatten(1).norm(dim=1).view(-1, *([1] * (d.dim() - 1)))
    return torch.where(n > 0, d / n.clamp_min(torch.finfo(d.dtype).tiny), torch.zeros_like(d))


def orthogonal_to(r: Tensor, g: Tensor) -> Tensor:
    """Per sample, the component of r orthogonal to g (flattened pixel space), ‖·‖∞ = 1.

    Where g is zero, r is returned rescaled. Shapes (N, ...) both.
    """
    rf, gf = r.flatten(1), g.flatten(1)
    gg = (gf * gf).sum(1, keepdim=True)
    coef = torch.where(gg > 0, (rf * gf).sum(1, keepdim=True) / gg.clamp_min(torch.finfo(gf.dtype).tiny),
                       torch.zeros_like(gg))
    return linf_normalize((rf - coef * gf).view_as(r))


def _need_labels(y: Tensor | None, kind: str, x: Tensor) -> Tensor:
    if y is None:
        raise RobcurveError(f"direction {kind!r} needs the true labels y", where="get_direction",
                            fix="pass y (N,) integer labels, or use kind='random'")
    y = torch.as_tensor(y, device=x.device).long().view(-1)
    if y.numel() != x.shape[0]:
        raise RobcurveError(f"y has {y.numel()} labels for {x.shape[0]} images", where="get_direction",
                            fix="pass one label per image")
    return y


def fgsm_sign(model: RobcurveModel, x: Tensor, y: Tensor) -> Tensor:
    """sign(∇ₓ CE(f(x), y)) per sample; summed loss, so a sample's sign ignores its batch."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xg)
    return grad.sign().detach()


# -- rules ------------------------------------------------------------------------------------
@directions.register("fgsm", default=True, help="sign of the CE gradient at the true label (‖d‖∞ = 1)")
def _fgsm(model: RobcurveModel, x: Tensor, y: Tensor | None, *, seed: int = 0, custom: Tensor | None = None,
          **options: Any) -> Tensor:
    return fgsm_sign(model, x, _need_labels(y, "fgsm", x))


@directions.register("random", help="seeded random signs (‖d‖∞ = 1)")
def _random(model: RobcurveModel, x: Tensor, y: Tensor | None, *, seed: int = 0, custom: Tensor | None = None,
            **options: Any) -> Tensor:
    return random_signs(tuple(x.shape), seed, dtype=x.dtype, device=x.device)


@directions.register("orthogonal", help="seeded random signs projected orthogonal to FGSM, ‖d‖∞ = 1")
def _orthogonal(model: RobcurveModel, x: Tensor, y: Tensor | None, *, seed: int = 0, custom: Tensor | None = None,
                **options: Any) -> Tensor:
    g = fgsm_sign(model, x, _need_labels(y, "orthogonal", x))
    r = random_signs(tuple(x.shape), seed, dtype=x.dtype, device=x.device)
    return orthogonal_to(r, g)


def _normalized_displacement(x_adv: Tensor, x: Tensor, normalize: str) -> Tensor:
    d = (x_adv.to(x.device, x.dtype) - x).detach()
    if normalize == "Linf":
        return linf_normalize(d)
    if normalize == "L2":
        return l2_normalize(d)
    raise RobcurveError(f"unknown normalisation {normalize!r}", where="get_direction", fix="use 'Linf' or 'L2'")


@directions.register("pgd", help="(x_pgd − x) rescaled to ‖d‖∞ = 1; options: eps (default 8/255), norm, steps, ...")
def _pgd(model: RobcurveModel, x: Tensor, y: Tensor | None, *, seed: int = 0, custom: Tensor | None = None,
         eps: float = 8 / 255, normalize: str = "Linf", **options: Any) -> Tensor:
    res = pgd(model, x, _need_labels(y, "pgd", x), eps, seed=seed, **options)
    return _normalized_displacement(res.x_adv, x, normalize)


@directions.register("deepfool", help="(x_deepfool − x) rescaled to ‖d‖∞ = 1; options: norm, steps, overshoot, ...")
def _deepfool(model: RobcurveModel, x: Tensor, y: Tensor | None, *, seed: int = 0, custom: Tensor | None = None,
              normalize: str = "Linf", **options: Any) -> Tensor:
    res = deepfool(model, x, _need_labels(y, "deepfool", x), **options)
    return _normalized_displacement(res.x_adv, x, normalize)


@directions.register("custom", help="the user's tensor, as given")
def _custom(model: RobcurveModel, x: Tensor, y: Tensor | None, *, seed: int = 0, custom: Tensor | None = None,
            **options: Any) -> Tensor:
    if custom is None:
        raise RobcurveError("direction 'custom' needs a tensor", where="get_direction",
                            fix="pass custom=<tensor shaped like x>")
    return check_direction(x, custom)


def check_direction(x: Tensor, d: Tensor, where: str = "direction") -> Tensor:
    """Validate d against images x (N, C, H, W); (C, H, W) or (1, C, H, W) broadcast to all."""
    d = torch.as_tensor(d)
    if d.dim() == x.dim() - 1:
        d = d.unsqueeze(0)
    if d.dim() != x.dim() or d.shape[1:] != x.shape[1:] or d.shape[0] not in (1, x.shape[0]):
        raise RobcurveError(f"direction shape {tuple(d.shape)} does not match images {tuple(x.shape)}", where=where,
                            fix="pass one direction per image with the images' shape (N, C, H, W)")
    d = d.to(device=x.device, dtype=x.dtype).expand_as(x)
    if not torch.isfinite(d).all():
        raise RobcurveError("direction has NaN or infinite entries", where=where, fix="pass a finite tensor")
    return d


def check_images(x: Tensor, where: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != 4:
        raise RobcurveError(f"images must have shape (N, C, H, W), got {tuple(x.shape)}", where=where,
                            fix="add a batch dimension (x.unsqueeze(0)) for a single image")
    if not x.is_floating_point():
        raise RobcurveError(f"images must be floating point in [0, 1], got {x.dtype}", where=where,
                            fix="convert with x.float() / 255 if they are bytes")
    return x


def get_direction(model: nn.Module, x: Tensor, y: Tensor | None = None, kind: str = "fgsm", seed: int = 0,
                  custom: Tensor | None = None, **options: Any) -> Tensor:
    """The direction of travel d for images x, shape (N, C, H, W) like x (METHOD.md §1).

    Args:
        model: any module mapping [0, 1] images to logits (wrapped with ``as_robmodel``).
        x: images (N, C, H, W) in [0, 1] pixel units.
        y: true labels (N,); needed by ``fgsm``, ``orthogonal``, ``pgd``, ``deepfool``.
        kind: a name in :data:`directions`.
        seed: seed of every random draw (``random``, ``orthogonal``, PGD's random start).
        custom: the tensor for ``kind="custom"``.
        options: passed to the rule (e.g. ``eps``/``steps`` for ``pgd``, ``normalize``).

    Returns:
        d on x's device and dtype; not clamped. See the module docstring for each rule's norm.
    """
    rob = as_robmodel(model)
    x = check_images(x, "get_direction").to(rob.device)
    rule = directions.get(kind)
    return rule(rob, x, y, seed=seed, custom=custom, **options)
