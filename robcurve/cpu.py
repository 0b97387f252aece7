"""What CPUs a run may use, and how its OpenMP threads wait (issue 26); no torch import here.

``choose_wait_policy`` runs before torch is imported (first thing in the ``robcurve`` command):
when other processes already keep a CPU busy, torch's OpenMP threads spinning in their
barriers fight them (measured with ``benchmarks/pipeline.py --busy --hog torch``, leaderboard config,
n = 8: next to another torch job the active default ran 2.9–3.7× slower than quiet, PASSIVE 1.3–1.5×
its own quiet time; on a quiet machine PASSIVE costs 32–39%). So robcurve sets PASSIVE
only when the machine is busy at start, and never overrides a value the user set. The wait
policy changes no number (same threads, same reductions), only how idle threads wait.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_STATE: dict[str, str] = {}


def allowed_cpus() -> tuple[int, str]:
    """How many CPUs this process may use, and what says so (the smallest of the limits found)."""
    limits: list[tuple[int, str]] = []
    try:
        limits.append((len(os.sched_getaffinity(0)), "CPU affinity"))
    except (AttributeError, OSError):
        limits.append((os.cpu_count() or 1, "os.cpu_count()"))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            limits.append((max(1, int(int(quota) // int(period))), "cgroup CPU quota"))
    except (OSError, ValueError):
        pass
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            limits.append((int(v), var))
    return min(limits)


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            parts = f.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def busy_cpus(interval: float = 0.1) -> float | None:
    """CPUs kept busy right now by the machine's processes (this one is asleep meanwhile); None if unknown."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(interval)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def choose_wait_policy(threshold: float = 0.5) -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when other work keeps at least ``threshold`` CPUs busy and the user set
    none; call before torch is imported. Returns what was decided (also kept for :func:`wait_policy_note`)."""
    if "OMP_WAIT_POLICY" in os.environ:
        _STATE["note"] = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} (set by you)"
    else:
        busy = busy_cpus()
        if busy is not None and busy >= threshold:
            os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
            _STATE["note"] = (f"OpenMP threads wait passively: {busy:.1f} CPU(s) were busy with other work at start "
                              "(set OMP_WAIT_POLICY to choose)")
        else:
            _STATE["note"] = ""
    return _STATE["note"]


def wait_policy_note() -> str:
    return _STATE.get("note", "")
