"""Layer profile: turning angle and straightness at every block output (METHOD.md §0, §2).

The same trajectories x + ε d are run once with forward hooks; each hooked activation is
flattened per image and measured like the penultimate features. Layers measured by default:

* timm ViT (``blocks[i]``) and Swin (``layers[j].blocks[i]``), per block, in forward order:
  ``attn``     the attention branch output (``ls1`` output where the block has one, else ``attn``;
               for Swin the windowed attention output, a fixed permutation of its tokens);
  ``attn_res`` the residual stream after the attention branch is added (input of ``norm2``);
  ``mlp``      the MLP branch output (``ls2`` output, else ``mlp``);
  ``block``    the block output (residual stream after the MLP branch).
* timm ResNet (``layer1..4``) and ConvNeXt (``stages[j].blocks[i]``): every block output.
* any other model with a ``blocks`` sequence: every block output; otherwise pass ``modules``.
* always last: ``features`` (penultimate) and ``logits``, as :func:`curvature` measures them.

Memory: the activations of one group of ``chunk_size // T`` samples (at least one) are kept
for all hooked layers at once (chunk_size × Σ layer widths numbers).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.errors import RobcurveError
from robcurve.geometry.directions import check_direction, check_images
from robcurve.geometry.trajectory import (
    MIN_REGION_POINTS,
    GridScale,
    _as_grid,
    centre_index,
    grid_inputs,
    has_exact_zero,
    predict,
    region_mask,
    space_measures,
)
from robcurve.memory import check_chunk
from robcurve.models.wrapper import FeaturesFn, RobcurveModel, as_robmodel


@dataclass(frozen=True)
class LayerSpec:
    """One measured point: ``name`` (reported), ``module`` (path in the raw net), ``kind``,
    ``hook`` ("output": the module's output; "input": its first input), ``block`` index."""

    name: str
    module: str
    kind: str
    hook: str = "output"
    block: int = -1


def _transformer_block_specs(prefix: str, blk: nn.Module, index: int) -> list[LayerSpec]:
    attn = "ls1" if isinstance(getattr(blk, "ls1", None), nn.Module) else "attn"
    mlp = "ls2" if isinstance(getattr(blk, "ls2", None), nn.Module) else "mlp"
    specs = [LayerSpec(f"{prefix}.attn", f"{prefix}.{attn}", "attn", "output", index)]
    if isinstance(getattr(blk, "norm2", None), nn.Module):
        specs.append(LayerSpec(f"{prefix}.attn_res", f"{prefix}.norm2", "attn_res", "input", index))
    specs.append(LayerSpec(f"{prefix}.mlp", f"{prefix}.{mlp}", "mlp", "output", index))
    specs.append(LayerSpec(prefix, prefix, "block", "output", index))
    return specs


def _is_transformer_block(m: nn.Module) -> bool:
    return isinstance(getattr(m, "attn", None), nn.Module) and isinstance(getattr(m, "mlp", None), nn.Module)


def default_layers(net: nn.Module) -> list[LayerSpec]:
    """The layers measured by default for ``net`` (the raw network inside a RobcurveModel)."""
    specs: list[LayerSpec] = []
    blocks = getattr(net, "blocks", None)
    layers = getattr(net, "layers", None)
    stages = getattr(net, "stages", None)
    if isinstance(blocks, nn.Module) and len(list(blocks.children())) and all(_is_transformer_block(b) for b in blocks.children()):
        for i, blk in enumerate(blocks.children()):  # ViT
            specs += _transformer_block_specs(f"blocks.{i}", blk, i)
        return specs
    if isinstance(layers, nn.Module) and all(isinstance(getattr(st, "blocks", None), nn.Module) for st in layers.children()):
        k = 0  # Swin
        for j, st in enumerate(layers.children()):
            for i, blk in enumerate(st.blocks.children()):
                if _is_transformer_block(blk):
                    specs += _transformer_block_specs(f"layers.{j}.blocks.{i}", blk, k)
                else:
                    specs.append(LayerSpec(f"layers.{j}.blocks.{i}", f"layers.{j}.blocks.{i}", "block", "output", k))
                k += 1
        if specs:
            return specs
    if all(isinstance(getattr(net, f"layer{j}", None), nn.Module) for j in range(1, 5)):
        k = 0  # ResNet
        for j in range(1, 5):
            for i, _ in enumerate(getattr(net, f"layer{j}").children()):
                specs.append(LayerSpec(f"layer{j}.{i}", f"layer{j}.{i}", "block", "output", k))
                k += 1
        return specs
    if isinstance(stages, nn.Module) and all(isinstance(getattr(st, "blocks", None), nn.Module) for st in stages.children()):
        k = 0  # ConvNeXt and other staged nets
        for j, st in enumerate(stages.children()):
            for i, _ in enumerate(st.blocks.children()):
                specs.append(LayerSpec(f"stages.{j}.blocks.{i}", f"stages.{j}.blocks.{i}", "block", "output", k))
                k += 1
        if specs:
            return specs
    if isinstance(blocks, nn.Module):
        return [LayerSpec(f"blocks.{i}", f"blocks.{i}", "block", "output", i) for i, _ in enumerate(blocks.children())]
    raise RobcurveError(f"no default layers for {type(net).__name__}", where="layer_profile",
                        fix="pass modules=[...] with module names from net.named_modules()")


def _resolve(rob: RobcurveModel, name: str) -> tuple[str, nn.Module]:
    for root in (rob.net, rob):  # names in the raw net, or in the wrapper ("net.blocks.0")
        try:
            return name, root.get_submodule(name)
        except AttributeError:
            continue
    names = [n for n, _ in rob.net.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    raise RobcurveError(f"model has no module {name!r}" + (f"; did you mean {', '.join(map(repr, close))}?" if close else ""),
                        where="layer_profile(modules=...)", fix="use names from model.net.named_modules()")


@dataclass
class LayerProfile(GridScale):
    """Per layer and sample: curvature measures of the hooked activations (degrees, ε units).

    Attributes:
        layers: the :class:`LayerSpec` of each row (features and logits last).
        angle: (L, N) mean turning angle at the grid step over the region, degrees.
        total_turning: (L, N) degrees per unit ε.
        straightness: (L, N) over region ∩ [−E, E]; r2: (L, N) linearity R² there.
        local_angle: (L, N) turning angle at ε = 0 from the grid points at ±step, degrees.
        unresolved: (N,) in-class part shorter than 5 grid points (measures NaN when
            region == "in-class").
    """

    layers: list[LayerSpec]
    angle: Tensor
    total_turning: Tensor
    straightness: Tensor
    r2: Tensor
    local_angle: Tensor
    eps: Tensor
    region: str
    unresolved: Tensor
    clean_pred: Tensor
    labels: Tensor | None = None

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.layers]

    def to_dataframe(self) -> Any:
        """Long format: one row per (layer, sample), layers in forward order (``depth``).

        Columns: depth, layer, kind, module, block, sample, unresolved, angle_h<step>,
        total_turning, straightness_E<E>, r2_E<E>, curvedness_E<E>, local_angle_d<step>.
        ``df.attrs`` holds the scale. :meth:`summary` aggregates per layer.
        """
        import pandas as pd

        n = int(self.clean_pred.numel())
        rows: dict[str, list[Any]] = {k: [] for k in ("depth", "layer", "kind", "module", "block", "sample", "unresolved")}
        for li, s in enumerate(self.layers):
            rows["depth"] += [li] * n
            rows["layer"] += [s.name] * n
            rows["kind"] += [s.kind] * n
            rows["module"] += [s.module] * n
            rows["block"] += [s.block] * n
            rows["sample"] += list(range(n))
            rows["unresolved"] += self.unresolved.tolist()
        h, E = self.step, self.E
        rows[f"angle_h{h:g}"] = self.angle.flatten().tolist()
        rows["total_turning"] = self.total_turning.flatten().tolist()
        rows[f"straightness_E{E:g}"] = self.straightness.flatten().tolist()
        rows[f"r2_E{E:g}"] = self.r2.flatten().tolist()
        rows[f"curvedness_E{E:g}"] = (1 - self.r2).flatten().tolist()
        rows[f"local_angle_d{h:g}"] = self.local_angle.flatten().tolist()
        df = pd.DataFrame(rows)
        df.attrs.update({"step": h, "E": E, "T": int(self.eps.numel()), "region": self.region})
        return df

    def summary(self) -> Any:
        """One row per layer: mean and median of each measure over samples (NaN skipped), n."""
        df = self.to_dataframe()
        meas = [c for c in df.columns if c.split("_")[0] in ("angle", "total", "straightness", "r2", "curvedness", "local")]
        g = df.groupby(["depth", "layer", "kind"], sort=True)[meas]
        out = g.agg(["mean", "median"])
        out.columns = [f"{a}_{b}" for a, b in out.columns]
        out["n"] = g.count().iloc[:, 0]
        return out.reset_index()


def layer_profile(model: nn.Module, x: Tensor, direction: Tensor, eps: Tensor | Sequence[float] | float, *,
                  modules: Sequence[str] | None = None, T: int = 21, region: str = "in-class",
                  features_fn: FeaturesFn | None = None, chunk_size: int = 1024, clamp: bool = False,
                  y: Tensor | None = None) -> LayerProfile:
    """Turning angle, straightness and R² at every block (and branch) output along x + ε d.

    Args:
        model: module mapping images in [0, 1] to logits.
        x: images (N, C, H, W) in [0, 1]; direction: d like x.
        eps: increasing, uniform 1-D grid of ε; or a number E, meaning T points in [−E, E].
        modules: module names (in the raw net, e.g. ``"blocks.3.mlp"``) to hook instead of the
            defaults (see the module docstring); each is measured at its output.
        region: ``"in-class"`` (default, as :func:`curvature`) or ``"full"``; the region is
            fixed by the model's predictions and is the same for every layer.
        chunk_size: images per forward; samples are processed in groups of chunk_size // T.
        y: labels (N,), stored.

    Returns:
        :class:`LayerProfile`; ``to_dataframe()`` has one row per layer × sample.
    """
    rob = as_robmodel(model, features_fn)
    x = check_images(x, "layer_profile").to(rob.device)
    d = check_direction(x, direction, "layer_profile(direction=...)")
    if isinstance(eps, (int, float)):
        grid = _as_grid(None, T, float(eps), "layer_profile")
    else:
        grid = _as_grid(eps, T, 0.1, "layer_profile")
    if grid.numel() < 3:
        raise RobcurveError("layer profile needs at least 3 grid points", where="layer_profile", fix="e.g. eps=0.1 with T=21")
    dif = grid.diff()
    if (dif - dif.median()).abs().max() > 1e-6 * dif.median():
        raise RobcurveError("layer profile needs a uniform ε grid", where="layer_profile", fix="use equally spaced ε")
    chunk = check_chunk(chunk_size, "layer_profile")
    if modules is None:
        specs = default_layers(rob.net)
    else:
        specs = [LayerSpec(str(m), str(m), "custom", "output", i) for i, m in enumerate(modules)]
    targets = [_resolve(rob, s.module)[1] for s in specs]

    n, t_len = x.shape[0], grid.numel()
    n_l = len(specs) + 2
    res = {k: torch.full((n_l, n), float("nan"), dtype=torch.float64)
           for k in ("angle", "total_turning", "straightness", "r2", "local_angle")}
    unresolved = torch.zeros(n, dtype=torch.bool)
    clean_all = torch.zeros(n, dtype=torch.long)
    state: dict[str, Any] = {"on": False, "B": 1}
    store: list[list[Tensor]] = [[] for _ in specs]

    def make_hook(j: int, kind: str):
        def grab(t: Any) -> None:
            if not state["on"]:
                return
            if isinstance(t, (tuple, list)):
                t = next(v for v in t if isinstance(v, Tensor))
            store[j].append(t.detach().reshape(state["B"], -1).cpu())

        if kind == "input":
            return lambda _m, inp: grab(inp)
        return lambda _m, _inp, out: grab(out)

    handles = []
    try:
        for j, (s, mod) in enumerate(zip(specs, targets, strict=True)):
            h = make_hook(j, s.hook)
            handles.append(mod.register_forward_pre_hook(h) if s.hook == "input" else mod.register_forward_hook(h))
        group = max(1, chunk // t_len)
        kw = dict(ladder=(1,), intervals=(float(grid.abs().max()),), delta_k=1)
        with torch.no_grad():
            for s0 in range(0, n, group):
                s1 = min(n, s0 + group)
                xs, ds = x[s0:s1], d[s0:s1]
                total = (s1 - s0) * t_len
                for lst in store:
                    lst.clear()
                feats, logits = [], []
                state["on"] = True
                for q, a in enumerate(range(0, total, chunk)):
                    b = min(a + chunk, total)
                    state["B"] = b - a
                    lg, ft = rob.logits_and_features(grid_inputs(xs, ds, grid, a, b, clamp))
                    for j, lst in enumerate(store):
                        if len(lst) != q + 1:
                            raise RobcurveError(f"module {specs[j].module!r} ran {len(lst) - q} times in one forward",
                                                where="layer_profile", fix="hook modules that run exactly once per forward")
                    feats.append(ft.reshape(b - a, -1).cpu())
                    logits.append(lg.cpu())
                state["on"] = False
                lgt = torch.cat(logits).view(s1 - s0, t_len, -1)
                preds = lgt.argmax(-1)
                clean = preds[:, centre_index(grid)] if has_exact_zero(grid) else predict(rob, xs, chunk).cpu()
                mask, lo, hi, _, _ = region_mask(preds, clean, grid, region)
                unres = (hi - lo + 1) < MIN_REGION_POINTS
                unresolved[s0:s1] = unres
                clean_all[s0:s1] = clean
                zs = [torch.cat(lst).view(s1 - s0, t_len, -1) for lst in store]
                zs += [torch.cat(feats).view(s1 - s0, t_len, -1), lgt]
                for li, z in enumerate(zs):
                    m = space_measures(z, grid, mask, **kw)  # type: ignore[arg-type]
                    vals = {"angle": m["ladder_angle"][:, 0], "total_turning": m["total_turning"],
                            "straightness": m["straightness"][:, 0], "r2": m["r2"][:, 0], "local_angle": m["local_angle"]}
                    for k, v in vals.items():
                        if region == "in-class" and k != "local_angle":
                            v = v.masked_fill(unres, float("nan"))
                        res[k][li, s0:s1] = v
    finally:
        for hd in handles:
            hd.remove()
    layers = list(specs) + [LayerSpec("features", "penultimate", "features", "output", -1),
                            LayerSpec("logits", "logits", "logits", "output", -1)]
    labels = None if y is None else torch.as_tensor(y).long().view(-1).cpu()
    return LayerProfile(layers, res["angle"], res["total_turning"], res["straightness"], res["r2"], res["local_angle"],
                        grid, region, unresolved, clean_all, labels)
