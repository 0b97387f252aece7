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

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

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
        mean, std: per-channel normalisation applied inside ``forward``; length C.
        features_fn: optional ``(net, x_norm) -> (logits, features)``.
        info: description stored with results.
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
        self.net = net
        c = len(mean) if mean is not None else 1
        mean_t = torch.tensor(list(mean) if mean is not None else [0.0] * c).view(1, -1, 1, 1)
        std_t = torch.tensor(list(std) if std is not None else [1.0] * c).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        self.info = info or ModelInfo()
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
    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, K) for images x (N, C, H, W) in [0, 1]."""
        if self.features_mode == "timm":
            return self.net(self.normalize(x))
        if self.features_mode == "fn":
            return self.logits_and_features(x)[0]
        return self.net(self.normalize(x))

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
            return self._features_fn(self.net, xn)
        if self.features_mode == "timm":
            feats = self.net.forward_head(self.net.forward_features(xn), pre_logits=True)
            return self.net.get_classifier()(feats), feats
        if self.features_mode == "hook":
            lin = _last_linear(self.net)
            assert lin is not None
            box: list[Tensor] = []

            def grab(_m: nn.Module, inp: tuple[Tensor, ...]) -> None:
                box.append(inp[0])

            h = lin.register_forward_pre_hook(grab)
            try:
                out = self.net(xn)
            finally:
                h.remove()
            return out, box[-1].flatten(1)
        raise RuntimeError(
            "this model has no penultimate features: pass features_fn=(net, x) -> (logits, features)"
        )

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


def as_robmodel(model: nn.Module, features_fn: FeaturesFn | None = None) -> RobcurveModel:
    """Return ``model`` in the RobcurveModel contract; a plain module is taken as [0, 1] -> logits."""
    if isinstance(model, RobcurveModel):
        if features_fn is not None:
            return RobcurveModel(model.net, model.mean.flatten().tolist(), model.std.flatten().tolist(), features_fn, model.info)
        return model
    return RobcurveModel(model, features_fn=features_fn, info=ModelInfo(name=type(model).__name__))
