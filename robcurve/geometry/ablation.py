"""What causes the curvature: freeze a nonlinearity at its value at ε = 0 (METHOD.md §8).

``frozen(net, "attention")``: every softmax attention map (timm ``Attention`` of ViTs and
``WindowAttention`` of Swins) is computed once at the clean input x and reused for every point
x + ε d of the sample's path; values, projections, norms and MLPs still respond. The per-sample
ratio of curvedness frozen / unfrozen is the share of the curvature that the attention maps'
response does *not* explain; 1 − ratio is attention's causal share.

``frozen(net, "gates")`` is the control: every ``nn.ReLU`` keeps its on/off pattern (x·1[x0 > 0]),
every ``nn.GELU`` its gate (x·Φ(x0)) and every ``nn.MaxPool2d`` its selected positions from x,
so a ReLU network with batch norm in eval mode becomes exactly affine along the path (a check
the tests run); in a Transformer the same freezes the MLPs' gates, to set beside attention. In a one-block attention
network without norm or MLP, freezing the attention map makes the path exactly affine too.

Usage: record at the clean images, then replay on inputs whose rows come from those images::

    with frozen(net, "attention") as fz:
        fz.record(x)                       # one forward at ε = 0
        fz.rows = sample_index_of_each_row # before each forward of path points
        net(points)
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robcurve.geometry.window import window_curvature


def _attention_modules(net: nn.Module) -> list[nn.Module]:
    from timm.models.swin_transformer import WindowAttention
    from timm.models.vision_transformer import Attention

    return [m for m in net.modules() if isinstance(m, Attention | WindowAttention)]


def has_attention(net: nn.Module) -> bool:
    return bool(_attention_modules(net))


def _gate_types() -> tuple[type, ...]:
    """ReLU and GELU modules: torch's, and timm's own GELU class (ConvNeXt's MLPs use it)."""
    from timm.layers.activations import GELU as TimmGELU

    return (nn.ReLU, nn.GELU, TimmGELU)


def _is_relu(m: nn.Module) -> bool:
    return isinstance(m, nn.ReLU)


def has_gates(net: nn.Module) -> bool:
    return any(isinstance(m, _gate_types()) for m in net.modules())


class Freezer:
    """Holds the recorded nonlinearity states and the row -> recorded-sample map for replay."""

    def __init__(self) -> None:
        self.recording = False
        self.cache: dict[int, Any] = {}
        self.rows: Tensor | None = None  # for each input row of the next forward: its recorded sample
        self.n_recorded = 0

    @torch.no_grad()
    def record(self, net: nn.Module, x: Tensor) -> Tensor:
        self.recording, self.cache = True, {}
        try:
            out = net(x)
        finally:
            self.recording = False
        self.n_recorded = x.shape[0]
        return out

    def take(self, key: int, batch: int) -> Any:
        """The recorded state of module ``key`` for the rows of the current forward (``batch`` rows or windows)."""
        if self.rows is None:
            raise RuntimeError("set .rows (the recorded sample of each input row) before a frozen forward")
        st = self.cache[key]
        per = batch // len(self.rows)  # windows per image (Swin), 1 otherwise
        if per * len(self.rows) != batch:
            raise RuntimeError(f"{batch} rows do not fit {len(self.rows)} images")
        return st.view(self.n_recorded, per, *st.shape[1:])[self.rows].reshape(batch, *st.shape[1:])


def _attn_forward(fz: Freezer, key: int):
    def forward(self: nn.Module, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if fz.recording:
            if hasattr(self, "q_norm"):
                q, k = self.q_norm(q), self.k_norm(k)
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if hasattr(self, "_get_rel_pos_bias"):
                attn = attn + self._get_rel_pos_bias()
            if mask is not None:
                nw = mask.shape[0]
                attn = (attn.view(-1, nw, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)).view(-1, self.num_heads, N, N)
            attn = attn.softmax(-1)
            fz.cache[key] = attn.detach()
        else:
            attn = fz.take(key, B_)
        out = (attn.to(v.dtype) @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj_drop(self.proj(out))

    return forward


def _gate_forward(fz: Freezer, key: int):
    """ReLU(x) = x·1[x > 0] and GELU(x) = x·Φ(x): the gate is recorded at ε = 0 and replayed, so the unit is linear."""
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        if fz.recording:
            if _is_relu(self):
                gate = (x > 0).to(x.dtype)
            else:
                gate = F.gelu(x, approximate=getattr(self, "approximate", "none")) / torch.where(x == 0, torch.ones_like(x), x)
                gate = torch.where(x == 0, torch.full_like(x, 0.5), gate)
            fz.cache[key] = gate.detach()
            return x * gate
        return x * fz.take(key, x.shape[0]).to(x.dtype)

    return forward


def _maxpool_forward(fz: Freezer, key: int):
    def forward(self: nn.Module, x: Tensor) -> Tensor:
        if fz.recording:
            out, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode,
                                    return_indices=True)
            fz.cache[key] = idx.detach()
            return out
        idx = fz.take(key, x.shape[0])
        return x.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)

    return forward


@contextlib.contextmanager
def frozen(net: nn.Module, kind: str = "attention") -> Iterator[Freezer]:
    """Freeze the attention maps (``attention``) or the ReLU / GELU gates and max-pool choices (``gates``) of ``net``."""
    fz = Freezer()
    patched: list[tuple[nn.Module, Any]] = []
    if kind == "attention":
        targets = [(m, _attn_forward) for m in _attention_modules(net)]
    elif kind == "gates":
        targets = [(m, _gate_forward) for m in net.modules() if isinstance(m, _gate_types())]
        targets += [(m, _maxpool_forward) for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    else:
        raise ValueError(f"unknown nonlinearity {kind!r}: attention or gates")
    if not targets:
        raise ValueError(f"the network has no {kind} modules to freeze")
    try:
        for i, (m, make) in enumerate(targets):
            patched.append((m, m.__dict__.get("forward")))
            m.forward = types.MethodType(make(fz, i), m)
        yield fz
    finally:
        for m, old in patched:
            if old is None:
                del m.forward
            else:
                m.forward = old


def ablation_curvature(model: nn.Module, x: Tensor, d: Tensor, t: Tensor, censored: Tensor, kind: str, *,
                       points: int = 41, fraction: float = 1.0, clamp: bool = False, chunk: int = 2048) -> Any:
    """The boundary-relative window curvature with the ``kind`` nonlinearity frozen at ε = 0."""
    with frozen(model, kind) as fz:
        fz.record(model, x)

        def on_chunk(rows: Tensor) -> None:
            fz.rows = rows.to(x.device)

        return window_curvature(model, x, d, t, censored, points=points, fraction=fraction, clamp=clamp, chunk=chunk,
                                on_chunk=on_chunk)
