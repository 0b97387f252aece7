"""Sharded runs with torch.distributed: ``torchrun --nproc-per-node K -m robcurve.cli bench ...``.

Any launcher that sets torch.distributed's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``; torchrun, SLURM with srun, Kubernetes jobs) works. Rank r
of W measures the batches whose index b satisfies ``b % W == r`` and writes them to its own
store shard ``<out>/shards/rank<r>-of-<W>.sqlite`` (no two processes write one SQLite file).
Every random choice is seeded per batch from the config seed and the batch's first sample,
so the rows do not depend on W. After a barrier, rank 0 merges the shards into
``<out>/results.sqlite`` and writes the outputs; the merged store equals a single-process
run's row for row. A killed rank is resumed by rerunning the same command: each rank skips
the batches its shard (or the merged store) already holds. Backend: NCCL on CUDA, else gloo.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import torch

from robcurve.errors import RobcurveError
from robcurve.run.store import Store


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def mine(self, batch_index: int) -> bool:
        return batch_index % self.world == self.rank


def from_env() -> Dist:
    """The launcher's rank layout (a single process when WORLD_SIZE is unset or 1)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise RobcurveError("RANK / WORLD_SIZE / LOCAL_RANK must be integers", fix="launch with torchrun") from None
    return Dist(rank, world, local)


def init(dist: Dist, device: torch.device) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA) if not joined yet."""
    import torch.distributed as td

    if dist.active and not td.is_initialized():
        td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def barrier(dist: Dist) -> None:
    import torch.distributed as td

    if dist.active and td.is_initialized():
        td.barrier()


def finish(dist: Dist) -> None:
    import torch.distributed as td

    if dist.active and td.is_initialized():
        td.destroy_process_group()


def shard_path(out: Path, dist: Dist) -> Path:
    return Path(out) / "shards" / f"rank{dist.rank}-of-{dist.world}.sqlite"


def merge(out: Path, world: int, target: Path) -> int:
    """Copy every shard's rows and meta into ``target`` (one transaction); return the rows merged."""
    store = Store(target)
    n = 0
    try:
        with store.con:
            for r in range(world):
                p = Path(out) / "shards" / f"rank{r}-of-{world}.sqlite"
                if not p.is_file():
                    continue
                con = sqlite3.connect(str(p))
                try:
                    rows = con.execute("SELECT * FROM results").fetchall()
                    meta = con.execute("SELECT key, value FROM meta").fetchall()
                finally:
                    con.close()
                store.con.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                for k, v in meta:
                    if k == "compute_s" and r > 0:  # add the ranks' compute times
                        import json

                        old = store.con.execute("SELECT value FROM meta WHERE key='compute_s'").fetchone()
                        acc = json.loads(old[0]) if old else {}
                        for m, s in json.loads(v).items():
                            acc[m] = round(acc.get(m, 0.0) + s, 3)
                        v = json.dumps(acc, sort_keys=True)
                    store.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))
                n += len(rows)
    finally:
        store.close()
    return n
