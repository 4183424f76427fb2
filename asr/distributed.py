"""Data-parallel training over processes started by torchrun: the process group, and the few
collective operations the training loop needs (agreeing to skip a batch, gathering dev results).

`asr train ...` under `torchrun --nproc_per_node N` (or `--nnodes/--rdzv-*` for several machines)
joins the group from torchrun's environment; NCCL on GPUs, gloo on CPUs. Without torchrun it is
a group of one and every function here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 writes metrics, logs and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def join(device: torch.device) -> tuple[Group, torch.device]:
    """Join torchrun's process group (if any); on CUDA each process takes the GPU of its local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Group(rank, world, local), device


def leave(group: Group) -> None:
    if group.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, group: Group) -> bool:
    """True when `flag` is true on any rank (all ranks must then take the same branch)."""
    if not group.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather(obj: Any, group: Group) -> list[Any]:
    """`obj` from every rank, in rank order."""
    if not group.enabled:
        return [obj]
    out: list[Any] = [None] * group.world
    dist.all_gather_object(out, obj)
    return out


def barrier(group: Group) -> None:
    if group.enabled:
        dist.barrier()
