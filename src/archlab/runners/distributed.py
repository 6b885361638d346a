"""Data-parallel training under ``torchrun``: one process per device, gradients averaged by
DistributedDataParallel (gloo on the CPU, nccl on CUDA).

Every process loads the same data, draws the same epoch order and mixup parameters from the same
seeded generators, trains on its own equal share of each epoch's order and evaluates on the
whole validation split (identical weights give identical metrics, so early stopping agrees
everywhere). Only rank 0 writes to the registry, the checkpoints and the screen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's share of an epoch's order: every ``world``-th example from ``rank``, cut
        to the same length on every rank (DDP needs the same number of steps everywhere)."""
        usable = len(order) // self.world * self.world
        return order[self.rank : usable : self.world]

    def sum(self, *values: float) -> list[float]:
        """The sums of ``values`` over all ranks."""
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda(self.local_rank)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]


def from_environment(device_type: str) -> Distributed | None:
    """The ``torchrun`` job this process belongs to (joining it on first call), or None when it
    runs alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job, or a process running alone (read from the environment, so
    the CLI can tell before anything is initialised)."""
    return int(os.environ.get("RANK", "0")) == 0
