"""Memory budgets: how many images one forward (or one attack step) may hold at once.

Every batched computation in robcurve is split into chunks whose *estimated* working memory
fits a budget in bytes:

* no-grad forwards (trajectories, travel search, predictions): the chunk is at most
  ``budget // (3 * memory_per_image)`` images (a third of the budget: the rest is slack
  for what the estimate does not see), with the per-image estimate of
  :func:`robcurve.geometry.trajectory.memory_per_image` (measured to be 1.2-4.6x the true
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
from collections.abc import Iterator

import torch

from robcurve.errors import RobcurveError

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
