"""torch.distributed plumbing: launched by torchrun (env:// rendezvous), gloo on CPU, NCCL on GPU.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise UserError("device=cuda but this machine has no CUDA device (or this torch has no CUDA): "
                            "use device=auto or device=cpu, or install a CUDA build of torch")
        return torch.device(f"cuda:{local_rank}")
    return torch.device(spec)


def init_distributed(device_spec: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (or an already initialised one)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_initialized():
        world = dist.get_world_size()
    if world <= 1:
        return DistInfo(device=pick_device(device_spec))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_spec, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def average_gradients(params: list[torch.Tensor], info: DistInfo) -> None:
    """Average the gradients of replicated (not DDP-wrapped) parameters over ranks, in one call."""
    if not info.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = all_reduce_sum(torch.cat([g.flatten() for g in grads]), info)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g) / info.world_size)
        offset += g.numel()


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (a list in rank order) on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group cleanly (call after the DDP/FSDP modules are gone)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
