"""Multi-process training through PyTorch DDP, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m dukd_cli distill ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; when ``WORLD_SIZE > 1`` the process group is initialised (NCCL on CUDA, gloo on the
CPU), each rank uses ``cuda:LOCAL_RANK``, the student is wrapped in ``DistributedDataParallel``,
data is sharded as consecutive slices of one global batch, and rank 0 alone writes and logs.
Multi-node runs use torchrun's usual rendezvous options (``--nnodes``, ``--node_rank``,
``--rdzv_endpoint``); nothing here is node-specific.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """What ``torchrun`` (or any launcher following its variables) says about this process."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return DistInfo(world, rank, local)


def init(device_type: str) -> DistInfo:
    """Initialise the process group when launched with several processes (idempotent)."""
    info = env_info()
    if not info.enabled:
        return info
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def any_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True when ``flag`` is True on any rank (every rank gets the same answer)."""
    if not info.enabled:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_scalars(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Average logged scalars over ranks."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    t /= info.world
    return dict(zip(keys, t.tolist(), strict=True))


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
