"""One fine-tuning run over several processes (torchrun: DistributedDataParallel, gloo on CPU, nccl on CUDA): the
process group and the few collective operations the training loop needs. Every helper is a no-op in one process."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def maybe_init_distributed(device: str | None) -> bool:
    """Initialise the process group when started by torchrun (WORLD_SIZE > 1); return True if we did."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def per_rank_sum(saved: list) -> list[float]:
    """Sum the per-process epoch sums [loss, correct, count] saved in a state file."""
    return [float(sum(p[1][i] for p in saved)) for i in range(3)]


def gather_objects(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def end_process_group(started: bool) -> None:
    """Destroy the process group if ``maybe_init_distributed`` started it."""
    if started:
        dist.destroy_process_group()
