"""Memory budgets: how many images one forward (or one attack step) may hold at once.

Every batched computation in robcurve is split into chunks whose *estimated* working memory
fits a budget in bytes:

* no-grad forwards (trajectories, travel search, predictions): the chunk is at most
  ``budget // (3 * memory_per_image)`` images (a third of the budget: the rest is slack
  for what the estimate does not see), with the per-image estimate of
  :func:`memory_per_image` (measured to be 1.2-4.6x the true
  peak on six models, so the budget holds with room to spare);
* attacks (PGD, DeepFool, PGD distance): sub-batches of at most ``budget // (3 * grad_memory)``
  images, where ``grad_memory`` counts every module output twice (saved for backward, and its
  gradient) plus the image. Sub-batching leaves PGD's results unchanged (its random starts
  are drawn for the whole input, see :mod:`robcurve.attacks.pgd`) and DeepFool's distances
  equal to float rounding (CPU kernels round differently per batch size, ~1e-7 relative).

The budget comes from ``--max-memory`` (``max_memory`` in a config: bytes, or text such as
``"2GiB"``, ``"512MB"``, ``"25%"`` of the free memory), else it defaults to
:data:`DEFAULT_CAP` (2 GiB), lowered to :data:`DEFAULT_FRACTION` of the memory free on the
device when that is less (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of
``/proc/meminfo``, else 4 GiB assumed). A fixed default matters: batch sizes change float
rounding (~1e-6), so a budget read from the free memory would make a run's numbers depend on
what else the machine was doing, and two ranks of a sharded run disagree; with 8 GiB or more
free, every machine gets the same 2 GiB. The default is read once per process and device. The budget bounds robcurve's working
memory *above* the model and the data already resident; it is a machine setting, not part of
a run's identity (two machines with different budgets store the same results up to the
float rounding of different batch sizes, ~1e-6 relative).
"""

from __future__ import annotations

import contextlib
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robcurve.errors import RobcurveError
from robcurve.models.wrapper import FeaturesFn, RobcurveModel, as_robmodel

#: the default budget (bytes), unless DEFAULT_FRACTION of the free memory is less
DEFAULT_CAP = 2 * 2**30
#: share of the free device memory the default budget may take at most
DEFAULT_FRACTION = 0.25
#: assumed free memory when the platform does not say (bytes)
_FALLBACK_FREE = 4 * 2**30

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")

_budget: int | str | None = None  # process-wide setting (set_memory_budget)
_defaults: dict[str, int] = {}


def parse_memory(value: int | float | str, where: str = "max_memory") -> int | str:
    """Bytes (int) for ``2GiB`` / ``512MB`` / ``1e9`` / 10**9, or the text ``"N%"`` kept as is.

    Raises RobcurveError for anything else, for zero and for negative sizes.
    """
    fix = "give bytes or a size with a unit, e.g. 2GiB, 512MiB, 4GB, or a share of the free memory, e.g. 25%"
    if isinstance(value, bool):
        raise RobcurveError(f"{value!r} is not a memory size", where=where, fix=fix)
    if isinstance(value, (int, float)):
        if not value >= 1 or value != value or value == float("inf"):
            raise RobcurveError(f"memory size must be at least 1 byte, got {value!r}", where=where, fix=fix)
        return int(value)
    if isinstance(value, str):
        m = _PERCENT.match(value)
        if m:
            pct = float(m.group(1))
            if not 0 < pct <= 100:
                raise RobcurveError(f"a share of the free memory must be in (0, 100]%, got {value!r}", where=where, fix=fix)
            return f"{pct:g}%"
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            n = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if n != float("inf") and n >= 1:
                return int(n)
            if n == float("inf"):
                raise RobcurveError(f"memory size {value!r} is too large to be a number of bytes", where=where, fix=fix)
        raise RobcurveError(f"cannot read {value!r} as a memory size", where=where, fix=fix)
    raise RobcurveError(f"{type(value).__name__} is not a memory size", where=where, fix=fix)


def free_memory(device: torch.device | str) -> int:
    """Bytes free on ``device`` now (CUDA: mem_get_info; CPU/MPS: MemAvailable of /proc/meminfo)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type == "mps":
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return _FALLBACK_FREE
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return _FALLBACK_FREE


def default_budget(device: torch.device | str, fraction: float = DEFAULT_FRACTION, cap: int | None = DEFAULT_CAP) -> int:
    """min(``cap``, ``fraction`` of the free memory on ``device``), read once per process and device."""
    dev = torch.device(device)
    key = f"{dev}:{fraction}:{cap}"
    if key not in _defaults:
        share = int(fraction * free_memory(dev))
        _defaults[key] = max(2**20, share if cap is None else min(cap, share))
    return _defaults[key]


def set_memory_budget(value: int | float | str | None) -> None:
    """Set the process-wide budget (bytes, ``"2GiB"``, ``"25%"``); None restores the default."""
    global _budget
    _budget = None if value is None else parse_memory(value)


@contextlib.contextmanager
def memory_budget(value: int | float | str | None) -> Iterator[None]:
    """Context manager: the process-wide budget inside the block, the previous one after it."""
    global _budget
    old = _budget
    set_memory_budget(value)
    try:
        yield
    finally:
        _budget = old


def budget_bytes(device: torch.device | str, value: int | float | str | None = None) -> int:
    """The budget in bytes on ``device``: ``value`` if given, else the process setting, else the default."""
    v = _budget if value is None else parse_memory(value)
    if v is None:
        return default_budget(device)
    if isinstance(v, str):  # "N%" of the free memory, as asked (no cap)
        return default_budget(device, float(v[:-1]) / 100, cap=None)
    return int(v)


def describe(device: torch.device | str) -> str:
    """One line for run logs: the budget and where it came from."""
    b = budget_bytes(device)
    src = (f"--max-memory {_budget}" if _budget is not None
           else f"default: {DEFAULT_CAP / 2**30:.0f} GiB or {DEFAULT_FRACTION:.0%} of free memory if less")
    return f"memory budget {b / 2**20:.0f} MiB on {torch.device(device)} ({src})"


def check_chunk(chunk_size: int, where: str) -> int:
    try:
        ok = not isinstance(chunk_size, bool) and int(chunk_size) >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise RobcurveError(f"chunk size must be an int >= 1 (or None / 'auto' where measured), got {chunk_size!r}",
                            where=where, fix="use e.g. 512 images, or None for the measured batch size")
    return int(chunk_size)


# -- batch size: measured per (model, device, input size), bounded by the memory budget ----------
#: batch sizes tried on first use (powers of two), smallest first
AUTO_CANDIDATES = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: the ascending search stops after this many candidates slower than this share of the best rate
_STOP_AFTER, _STOP_BELOW = 2, 0.92
#: candidates re-timed in the second pass: rate within this share of the best
_REFINE_WITHIN = 0.6

ChunkSize = int | str | None


@dataclass
class ChunkChoice:
    """The batch size chosen for one (model, device, dtype, input size, thread count).

    Attributes:
        size: images per forward.
        rates: measured images per second per candidate batch size (best of its timings).
        per_image_bytes: estimated working memory of one image's forward (bytes).
        cap: largest candidate within ``budget`` (images).
        budget: the memory budget (bytes) the choice honours.
        measured: True when the search finished (then it is cached); False when the work ran
            out before it did (the best so far was used and nothing cached).
    """

    size: int
    rates: dict[int, float]
    per_image_bytes: int
    cap: int
    budget: int
    measured: bool

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "rates": dict(self.rates), "per_image_bytes": self.per_image_bytes,
                "cap": self.cap, "budget": self.budget, "measured": self.measured}


# model (the network, weakly referenced) -> key -> choice; in-process only
CHUNK_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, ChunkChoice]] = weakref.WeakKeyDictionary()
_MEMORY_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[int, int]]] = weakref.WeakKeyDictionary()


def chunk_key(rob: RobcurveModel, x: Tensor, budget: int) -> tuple:
    return (str(x.device), str(x.dtype), tuple(x.shape[1:]), rob.features_mode, torch.get_num_threads(), int(budget))


def memory_per_image(model: nn.Module, x: Tensor, features_fn: FeaturesFn | None = None) -> int:
    """Estimated peak working memory (bytes) of one image's forward, for batch-size budgets.

    One forward of a single image with hooks on every leaf module records the size of each
    module's output. The estimate is ``min(sum of all outputs, 10 x the largest output)`` plus
    the input twice (the chunk's input and its construction) and the outputs kept: an upper
    estimate of what a no-grad forward holds at once per image. Measured against the peak
    resident memory of batched forwards (256 and 1024 images) on six models (zoo ViT, ResNet,
    ConvNeXt, Swin at 28 px; timm ResNet-18 and ViT-Tiny/4 at 32 px) it was 1.2-4.6x the true
    peak: the budget is respected with room to spare. Cached per model and input size.
    """
    return _memory_estimates(model, x, features_fn)[0]


def grad_memory_per_image(model: nn.Module, x: Tensor, features_fn: FeaturesFn | None = None) -> int:
    """Estimated working memory (bytes) of one image's forward and backward (attacks).

    Every leaf module's output counted twice (kept for backward, and its gradient) plus the
    image four times (input, its gradient, the perturbation and the attack's copy): autograd
    keeps all activations, so no ``10 x largest`` shortcut applies here.
    """
    return _memory_estimates(model, x, features_fn)[1]


def attack_batch_cap(model: nn.Module, x: Tensor, memory_budget: int | str | None = None,
                     features_fn: FeaturesFn | None = None) -> int:
    """Largest attack sub-batch (>= 1) whose estimated forward+backward memory fits a third of the budget.

    A third, not half: what autograd keeps inside fused operations (attention weights of
    ``scaled_dot_product_attention``, window attention) is no module's output, so the estimate
    misses it; measured with ``benchmarks/memory.py`` on the zoo Swin."""
    budget = budget_bytes(x.device, memory_budget)
    return max(1, budget // (3 * max(1, grad_memory_per_image(model, x, features_fn))))


def _memory_estimates(model: nn.Module, x: Tensor, features_fn: FeaturesFn | None = None) -> tuple[int, int]:
    rob = as_robmodel(model, features_fn)
    key = (str(x.device), str(x.dtype), tuple(x.shape[1:]))
    per_model = _MEMORY_CACHE.setdefault(rob.net, {})
    if key in per_model:
        return per_model[key]
    sizes: list[int] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, Tensor):
            sizes.append(out.numel() * out.element_size())

    leaves = [m for m in rob.net.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            try:
                lg, ft = rob.logits_and_features(x[:1])
                outs = (lg.numel() + ft.numel()) * lg.element_size()
            except Exception:  # no penultimate features (travel needs logits only)
                sizes.clear()
                lg = rob(x[:1])
                outs = lg.numel() * lg.element_size()
    finally:
        for h in handles:
            h.remove()
    img = x[:1].numel() * x.element_size()
    acts = min(sum(sizes), 10 * max(sizes)) if sizes else 16 * img
    est = int(acts + 2 * img + outs)
    grad = int(2 * (sum(sizes) if sizes else 16 * img) + 4 * img + 2 * outs)
    per_model[key] = (est, grad)
    return est, grad


def memory_cap(model: nn.Module, x: Tensor, memory_budget: int | None = None,
               features_fn: FeaturesFn | None = None) -> int:
    """Largest batch size (>= 1) whose estimated working memory fits a third of ``memory_budget`` bytes.

    A third: the rest is left to what a chunk's memory estimate does not see (the allocator's
    retained blocks of other shapes over many batches, the outputs kept, the curvature
    computation); measured by ``benchmarks/memory.py`` (with half, the zoo Swin ended 12%
    above a 64 MiB budget after ten batches)."""
    budget = budget_bytes(x.device, memory_budget)
    return max(1, budget // (3 * max(1, memory_per_image(model, x, features_fn))))


def cached_chunk_size(model: nn.Module, x: Tensor, memory_budget: int | None = None,
                      features_fn: FeaturesFn | None = None) -> int:
    """The measured batch size cached for this model and input, else the memory cap (no timing)."""
    rob = as_robmodel(model, features_fn)
    budget = budget_bytes(x.device, memory_budget)
    hit = CHUNK_CACHE.get(rob.net, {}).get(chunk_key(rob, x, budget))
    if hit is not None:
        return hit.size
    return min(memory_cap(rob, x, budget), AUTO_CANDIDATES[-1])


def clear_chunk_cache() -> None:
    """Forget every measured batch size (the next trajectory measures again)."""
    CHUNK_CACHE.clear()
    _MEMORY_CACHE.clear()


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ChunkTuner:
    """Chooses the batch size on real work: each timed chunk is part of the result.

    Three passes, each timing one chunk per candidate (a candidate's rate is the best of its
    timings, the least disturbed by other load): (1) the candidates (powers of two within the
    memory cap) smallest first, stopping after ``_STOP_AFTER`` in a row below ``_STOP_BELOW``
    of the best rate; (2) again every candidate within ``_REFINE_WITHIN`` of the best; (3) the
    best and its neighbours once more. The search costs no extra forwards, only the slowdown
    of the worse candidates it ran.
    """

    def __init__(self, cap: int):
        self.cands = [c for c in AUTO_CANDIDATES if c <= cap] or [cap]
        self.rates: dict[int, float] = {}
        self.plan: list[int] = list(self.cands)
        self.phase = 1
        self.slow = 0

    @property
    def best(self) -> int:
        return max(self.rates, key=lambda c: (self.rates[c], -c))

    def next_size(self) -> int | None:
        """The next batch size to time, or None when the search is over."""
        while not self.plan and self.rates and self.phase < 3:
            self.phase += 1
            order = sorted(self.rates)
            top = max(self.rates.values())
            if self.phase == 2:
                self.plan = [c for c in order if self.rates[c] >= _REFINE_WITHIN * top]
            else:
                i = order.index(self.best)
                self.plan = order[max(0, i - 1):i + 2]
        return self.plan[0] if self.plan else None

    def record(self, size: int, seconds: float) -> None:
        rate = size / max(seconds, 1e-9)
        self.rates[size] = max(self.rates.get(size, 0.0), rate)
        self.plan.pop(0)
        if self.phase == 1:
            if rate < _STOP_BELOW * max(self.rates.values()):
                self.slow += 1
                if self.slow >= _STOP_AFTER:
                    self.plan = []
            else:
                self.slow = 0
