"""Data-parallel training on torch.distributed: one process per device, launched by torchrun.

    torchrun --nproc-per-node 2 -m cnnzoo train lenet5 --data digits --out runs/ddp

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `Distributed.from_env()` reads them and joins the process group
(gloo on CPU, nccl on CUDA). The global batch (the recipe's batch size) is split evenly across the processes,
DistributedDataParallel averages the gradients, so a step sees the same samples and the same mean gradient as
one process with the whole batch. Checkpoints, metrics and the console belong to rank 0.

What is not the same as one process: batch normalisation normalises each process's share of the batch with that
share's statistics, and dropout draws its masks per process. Nets without either (LeNet-5) end with the same
weights as a single process, within floating-point rounding of the gradient average.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Distributed"]


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owned: bool = False  # this object joined the process group (and so leaves it in close())

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> "Distributed":
        """Join the process group torchrun describes in the environment (a single process: nothing to join)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        owned = not dist.is_initialized()
        if owned:
            backend = "nccl" if device_type == "cuda" else "gloo"
            if device_type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend)
        return cls(rank=rank, local_rank=local, world_size=world, owned=owned)

    def device(self, device: torch.device) -> torch.device:
        """This process's device: its own GPU under CUDA."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.enabled else device

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Sum numbers over the processes (float64, so counts of correct answers stay exact)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any process raised the flag (a signal seen by one stops all, at the same step)."""
        return bool(self.sum([float(flag)], device)[0]) if self.enabled else flag

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if `from_env` joined it (a caller's own group is the caller's to close)."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
