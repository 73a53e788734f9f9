"""Process-group setup under ``torchrun`` and the student wrappers (DDP everywhere, FSDP2 on CUDA).

``torchrun --nproc_per_node N -m gpfm pretrain ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; :func:`init_distributed`
then starts NCCL on CUDA and gloo on CPU. Without those variables the run is a single process and nothing is
initialised. The EMA teacher and the experts are never wrapped for gradients.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: this process's device.
        started_here: True when :func:`init_distributed` created the process group (its caller must then
            call :func:`cleanup_distributed`; a group created by someone else is left alone).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (which writes logs, checkpoints and exports)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use."""
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise torch.distributed from the torchrun environment (gloo on CPU, NCCL on CUDA).

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    from gpfm.runtime import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(None if device == "auto" else device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    started = False
    if world > 1 and not dist.is_initialized():
        started = True
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(minutes=30),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, started_here=started)


def cleanup_distributed() -> None:
    """Destroy the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """A barrier when distributed (no-op otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_min_flag(ok: bool, device: torch.device) -> bool:
    """True only if ``ok`` holds on every rank (so all ranks stop together, e.g. on a non-finite loss)."""
    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0.5)


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` on every rank (a one-element list when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _fsdp2_policy(info: DistInfo):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    # bf16 compute with fp32 gradient reduction on CUDA; plain fp32 on CPU (gloo), where the point is testing
    if info.device.type == "cuda":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def _fully_shard_vit_owner(module: nn.Module, info: DistInfo) -> None:
    from torch.distributed.fsdp import fully_shard

    policy = _fsdp2_policy(info)
    for block in module.backbone.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(module, mp_policy=policy)


def wrap_student(student: nn.Module, info: DistInfo, parallel: str, find_unused: bool = False) -> nn.Module:
    """Wrap the student for data parallelism.

    Args:
        student: the :class:`~gpfm.pretrain.student.StudentModel`.
        info: process placement.
        parallel: ``ddp`` or ``fsdp2`` (``fully_shard`` per block, then the root; NCCL on CUDA, gloo on CPU).
        find_unused: let DDP tolerate parameters without a gradient in a step.

    Returns:
        The module whose forward runs the student (``student`` itself when not distributed or under FSDP2,
        which shards in place).
    """
    if not info.distributed:
        return student
    if parallel == "fsdp2":
        _fully_shard_vit_owner(student, info)
        return student
    ids = [info.device.index] if info.device.type == "cuda" else None
    # with the faithful heads every parameter is used each step (the mask token through torch.where, the
    # heads on CLS/masked tokens), so DDP needs no unused-parameter search
    return nn.parallel.DistributedDataParallel(
        student, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused
    )


def shard_teacher_like_student(teacher: nn.Module, parallel: str, info: DistInfo) -> None:
    """Under FSDP2, shard the teacher like the student so the EMA runs shard by shard (DTensor to DTensor)."""
    if info.distributed and parallel == "fsdp2":
        _fully_shard_vit_owner(teacher, info)


def reshard(module: nn.Module) -> None:
    """Free the unsharded parameters an FSDP2 root keeps after a forward without backward (the teacher)."""
    if hasattr(module, "reshard"):
        module.reshard()
