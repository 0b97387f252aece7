"""The model contract every robcurve measurement relies on (METHOD.md §0).

A :class:`RobcurveModel` maps images in [0, 1] pixel space, shape (N, C, H, W), to logits (N, K).
Input normalisation (mean/std) lives inside, so every ε and distance is in [0, 1] pixel
units. ``features(x)`` returns the penultimate representation (N, D): the vector the
classifier head consumes. ``logits_and_features(x)`` gives both from one forward pass.

Three ways to get the penultimate features, chosen automatically:

* ``timm``: ``forward_head(forward_features(x), pre_logits=True)`` and the classifier
  ``get_classifier()`` applied to it (ViT, Swin, ResNet, ConvNeXt alike);
* ``hook``: the input of the last ``nn.Linear`` in the module, captured with a forward
  pre-hook during an ordinary forward (any classifier ending in a linear layer, e.g.
  RobustBench's WideResNets);
* ``fn``: a user function ``features_fn(net, x_normalised) -> (logits, features)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.errors import ModelError, one_line

FeaturesFn = Callable[[nn.Module, Tensor], tuple[Tensor, Tensor]]


@dataclass
class ModelInfo:
    """What a model is; stored with every result."""

    spec: str = ""
    source: str = ""
    name: str = ""
    arch: str = ""
    family: str = "other"  # "transformer" | "cnn" | "other"
    dataset: str = ""
    num_classes: int = 0
    input_size: tuple[int, int, int] = (0, 0, 0)
    weights: str | None = None
    weights_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d


def _last_linear(net: nn.Module) -> nn.Linear | None:
    last = None
    for m in net.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def is_timm_model(net: nn.Module) -> bool:
    return all(hasattr(net, a) for a in ("forward_features", "forward_head", "get_classifier"))


class RobcurveModel(nn.Module):
    """A classifier in robcurve's contract: [0, 1] input, normalisation inside, eval mode.

    Args:
        net: the raw network (expects normalised input).
        mean, std: per-channel normalisation applied inside ``forward``; length C (or 1,
            applied to every channel). Finite, std > 0, both of the same length.
        features_fn: optional ``(net, x_norm) -> (logits, features)``.
        info: description stored with results; ``info.input_size[0]`` (when > 0) is the
            number of input channels the model takes.

    Inputs are checked: images must be (N, C, H, W) with the model's channel count (known
    from a mean/std of length C > 1 or from ``info.input_size``), so a 3-channel model is not
    silently fed broadcast grey images. The first forward at each image shape that the
    network rejects becomes a :class:`~robcurve.errors.ModelError` naming the shape.
    """

    def __init__(
        self,
        net: nn.Module,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        features_fn: FeaturesFn | None = None,
        info: ModelInfo | None = None,
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ModelError(f"a RobcurveModel wraps a torch nn.Module, got {type(net).__name__}", fix="pass the network module")
        self.net = net
        mean_l, std_l = check_norm_stats(mean, std, info)
        c = len(mean_l)
        mean_t = torch.tensor(mean_l, dtype=torch.float32).view(1, -1, 1, 1)
        std_t = torch.tensor(std_l, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        self.info = info or ModelInfo()
        size0 = int(self.info.input_size[0]) if self.info.input_size and self.info.input_size[0] else 0
        #: input channels the model takes (None: not known; then any channel count is passed on)
        self.in_channels: int | None = c if c > 1 else (size0 or None)
        if size0 and c > 1 and size0 != c:
            raise ModelError(f"model {self.info.spec or self.info.name!r} has mean/std for {c} channels but takes {size0}-channel input",
                             fix=f"give mean and std with {size0} values (one per input channel)")
        self._ok_shapes: set[tuple[int, ...]] = set()
        #: run every forward under ``torch.autocast`` with this dtype (None: off); the outputs
        #: are cast back to the input's dtype. Set by ``--autocast bf16|fp16``.
        self.autocast_dtype: torch.dtype | None = None
        self._features_fn = features_fn
        if features_fn is not None:
            self.features_mode = "fn"
        elif is_timm_model(net):
            self.features_mode = "timm"
        elif _last_linear(net) is not None:
            self.features_mode = "hook"
        else:
            self.features_mode = "none"
        self.eval()

    # -- contract -------------------------------------------------------------------------
    def _name(self) -> str:
        return self.info.spec or self.info.name or type(self.net).__name__

    def check_input(self, x: Tensor) -> None:
        """Refuse images the model cannot take: not (N, C, H, W), or the wrong channel count."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ModelError(f"model {self._name()!r} takes images (N, C, H, W), got {shape}",
                             fix="add a batch dimension (x.unsqueeze(0)) for a single image")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            what = "grey" if x.shape[1] == 1 else f"{x.shape[1]}-channel"
            raise ModelError(f"model {self._name()!r} takes {self.in_channels}-channel images but got {what} images "
                             f"of shape {tuple(x.shape[1:])}",
                             fix="use a dataset with matching channels, or a model built for them "
                                 "(for timm: --model-kwargs '{\"in_chans\": " + str(x.shape[1]) + "}' with matching weights)")

    def normalize(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def _run(self, fn: Callable[[], Any], x: Tensor) -> Any:
        """Call ``fn`` (a forward of the network); the first failure at a new image shape becomes a ModelError."""
        key = tuple(x.shape[1:])
        if self.autocast_dtype is not None:
            fn = self._autocast(fn, x)
        if key in self._ok_shapes:
            return fn()
        try:
            out = fn()
        except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as e:
            if "out of memory" in str(e).lower():
                raise
            raise ModelError(f"model {self._name()!r} cannot take images of shape (C, H, W) = {key}: "
                             f"{type(e).__name__}: {one_line(e, 240) or 'no message'}",
                             fix="check that the model and the dataset match (channels, image size, number of classes)") from e
        self._ok_shapes.add(key)
        return out

    def _autocast(self, fn: Callable[[], Any], x: Tensor) -> Callable[[], Any]:
        dtype = self.autocast_dtype

        def run() -> Any:
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                out = fn()
            if isinstance(out, Tensor):
                return out.to(x.dtype)
            if isinstance(out, tuple):
                return tuple(o.to(x.dtype) if isinstance(o, Tensor) else o for o in out)
            return out

        return run

    def _check_logits(self, out: Any, n: int) -> Tensor:
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != n:
            got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise ModelError(f"model {self._name()!r} returned {got} for {n} images, expected logits (N, K)",
                             fix="make the network return one row of class scores per image")
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, K) for images x (N, C, H, W) in [0, 1]."""
        if self.features_mode == "fn":
            return self.logits_and_features(x)[0]
        xn = self.normalize(x)
        return self._check_logits(self._run(lambda: self.net(xn), x), x.shape[0])

    def logits(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (N, D) for images x in [0, 1]."""
        return self.logits_and_features(x)[1]

    def logits_and_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(logits (N, K), penultimate features (N, D)) from one forward pass."""
        xn = self.normalize(x)
        if self.features_mode == "fn":
            assert self._features_fn is not None
            fn = self._features_fn
            out = self._run(lambda: fn(self.net, xn), x)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ModelError(f"features_fn of model {self._name()!r} returned {type(out).__name__}, expected (logits, features)",
                                 fix="return a pair (logits (N, K), features (N, D))")
            return self._check_logits(out[0], x.shape[0]), out[1]
        if self.features_mode == "timm":
            def both() -> tuple[Tensor, Tensor]:
                feats = self.net.forward_head(self.net.forward_features(xn), pre_logits=True)
                return self.net.get_classifier()(feats), feats

            logits, feats = self._run(both, x)
            return self._check_logits(logits, x.shape[0]), feats
        if self.features_mode == "hook":
            lin = _last_linear(self.net)
            assert lin is not None
            box: list[Tensor] = []

            def grab(_m: nn.Module, inp: tuple[Tensor, ...]) -> None:
                box.append(inp[0])

            h = lin.register_forward_pre_hook(grab)
            try:
                out = self._run(lambda: self.net(xn), x)
            finally:
                h.remove()
            if not box:
                raise ModelError(f"the last nn.Linear of model {self._name()!r} is not used by its forward, so robcurve "
                                 "cannot take the penultimate features from it",
                                 fix="wrap it as RobcurveModel(net, mean, std, features_fn=lambda net, x: (logits, features))")
            return self._check_logits(out, x.shape[0]), box[-1].flatten(1)
        raise ModelError(
            f"model {self._name()!r} has no nn.Linear layer, so robcurve cannot find its penultimate features "
            "(needed by trajectory, travel and jump-out)",
            fix="return robcurve.models.RobcurveModel(net, mean, std, features_fn=lambda net, x: (logits, features)) "
                "from your factory, or measure only clean/pgd/deepfool/corruptions")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return self.mean.dtype


def check_norm_stats(mean: Sequence[float] | None, std: Sequence[float] | None,
                      info: ModelInfo | None) -> tuple[list[float], list[float]]:
    """Mean and std as float lists of one length (default 0 and 1); ModelError if they do not fit."""
    name = (info.spec or info.name) if info else ""
    where = f" of model {name!r}" if name else ""

    def as_list(v: Any, what: str, default: float, n: int) -> list[float]:
        if v is None:
            return [default] * n
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            v = [v]
        try:
            out = [float(t) for t in (v.flatten().tolist() if isinstance(v, Tensor) else v)]
        except (TypeError, ValueError):
            raise ModelError(f"{what}{where} must be a list of numbers, got {v!r}", fix=f"give {what} as e.g. [0.5] or [0.485, 0.456, 0.406]") from None
        if not out or not all(math.isfinite(t) for t in out):
            raise ModelError(f"{what}{where} must be a non-empty list of finite numbers, got {v!r}", fix=f"fix {what}")
        return out

    n = len(mean) if isinstance(mean, (list, tuple)) else (len(std) if isinstance(std, (list, tuple)) else 1)
    m = as_list(mean, "mean", 0.0, n)
    s = as_list(std, "std", 1.0, len(m))
    if len(m) != len(s):
        raise ModelError(f"mean{where} has {len(m)} values but std has {len(s)}", fix="give one mean and one std per input channel")
    if any(t <= 0 for t in s):
        raise ModelError(f"std{where} must be positive, got {s}", fix="give the standard deviation of each channel (> 0)")
    return m, s


def as_robmodel(model: nn.Module, features_fn: FeaturesFn | None = None) -> RobcurveModel:
    """Return ``model`` in the RobcurveModel contract; a plain module is taken as [0, 1] -> logits."""
    if isinstance(model, RobcurveModel):
        if features_fn is not None:
            return RobcurveModel(model.net, model.mean.flatten().tolist(), model.std.flatten().tolist(), features_fn, model.info)
        return model
    return RobcurveModel(model, features_fn=features_fn, info=ModelInfo(name=type(model).__name__))
