"""Data-parallel training (DDP) in one place: rank and device, process group, wrap, reductions.

Run the trainer under ``torchrun --nproc_per_node N``: every rank reads ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` from the environment (:func:`dist_info`), joins the process group (gloo on
CPU, nccl on CUDA; :func:`init_process_group`), wraps its network
(:func:`wrap_ddp`), takes rank 0's normalisation statistics (:func:`broadcast_from_main`) and
logs the loss averaged over ranks (:func:`mean_over_ranks`).  With ``WORLD_SIZE`` unset or 1
every function is a no-op and nothing from :mod:`torch.distributed` is touched.
"""

from __future__ import annotations

import os

import torch

from .model import default_device

__all__ = ["dist_info", "select_device", "init_process_group", "wrap_ddp", "broadcast_from_main",
           "mean_over_ranks", "barrier"]


def dist_info() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment (``(0, 1, 0)`` otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def select_device(device: str, local_rank: int) -> torch.device:
    """The training device for a config's ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``) on this rank.

    ``"auto"`` takes CUDA when :func:`zssd_engine.prior.model.default_device` does; a CUDA rank uses
    GPU ``local_rank`` (modulo the GPUs present).  ``ValueError`` if CUDA is asked for but absent.
    """
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or (device == "auto" and default_device().type == "cuda"):
        if not torch.cuda.is_available():
            raise ValueError("training config asks for device 'cuda' but CUDA is not available")
        return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")


def init_process_group(device: torch.device, world: int) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU) unless already joined; no-op for one process."""
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)


def wrap_ddp(net: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """``net`` wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` (``net`` itself for one process)."""
    if world <= 1:
        return net
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(net, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_from_main(t: torch.Tensor, device: torch.device, world: int) -> torch.Tensor:
    """Rank 0's value of ``t`` on every rank (returned on the CPU; ``t`` itself for one process)."""
    if world <= 1:
        return t
    import torch.distributed as dist

    buf = t.to(device)
    dist.broadcast(buf, 0)
    return buf.cpu()


def mean_over_ranks(t: torch.Tensor, world: int) -> torch.Tensor:
    """The mean of ``t`` over all ranks (all-reduce; ``t`` itself for one process)."""
    if world <= 1:
        return t
    import torch.distributed as dist

    dist.all_reduce(t)
    return t / world


def barrier(world: int) -> None:
    """Wait for every rank (no-op for one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
