"""Process-group setup for one training loop that runs on CPU, one GPU, or under torchrun.

A torchrun launch is detected from its environment (RANK, WORLD_SIZE, LOCAL_RANK); anything else is a single
process. The backend follows the device: NCCL on CUDA, gloo on CPU (the tests run DDP and FSDP with gloo). Only rank 0
logs and writes files, except for the shards of a sharded checkpoint, which every process writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from faceturn.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks this process's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun; otherwise describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not torch_dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch_dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        torch_dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over processes (a copy; the input is untouched)."""
    out = values.detach().clone()
    if info.distributed:
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
        out /= info.world_size
    return out


def any_process(flag: bool, info: DistInfo) -> bool:
    """True on every process when the flag is true on any (so all stop at the same step)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def device_mesh(info: DistInfo) -> DeviceMesh:
    """The one-dimensional mesh of all processes that FSDP shards over."""
    return init_device_mesh(info.device.type, (info.world_size,))


def first_problem(problem: str | None, info: DistInfo) -> str | None:
    """The first problem any process found (rank order), the same on every process: when the processes share the
    work of a check, they all raise the same error instead of some waiting forever for the others."""
    if not info.distributed:
        return problem
    found: list[str | None] = [None] * info.world_size
    torch_dist.all_gather_object(found, problem)
    return next((p for p in found if p is not None), None)


def from_rank0(obj: Any, info: DistInfo) -> Any:
    """Rank 0's value of a small picklable object, on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_dicts(part: dict[str, str], info: DistInfo) -> dict[str, str]:
    """The union of every process's dict of strings (on every process)."""
    if not info.distributed:
        return dict(part)
    parts: list[dict[str, str] | None] = [None] * info.world_size
    torch_dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in (p or {}).items()}
