"""Process-group setup under ``torchrun`` and the student wrappers (DDP everywhere, FSDP2 on CUDA).

``torchrun --nproc_per_node N -m gpfm pretrain ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; :func:`init_distributed`
then starts NCCL on CUDA and gloo on CPU. Without those variables the run is a single process and nothing is
initialised. The EMA teacher and the experts are never wrapped for gradients (spec §9.4).
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
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

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
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30),
                                device_id=dev if dev.type == "cuda" else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


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


def wrap_student(student: nn.Module, info: DistInfo, parallel: str, find_unused: bool = False) -> nn.Module:
    """Wrap the student for data parallelism.

    Args:
        student: the :class:`~gpfm.pretrain.student.StudentModel`.
        info: process placement.
        parallel: ``ddp`` (CPU or CUDA) or ``fsdp2`` (CUDA only: ``fully_shard`` per block, then the root).
        find_unused: let DDP tolerate parameters without a gradient in a step.

    Returns:
        The module whose forward runs the student (``student`` itself when not distributed).
    """
    if not info.distributed:
        return student
    if parallel == "fsdp2":
        if info.device.type != "cuda":
            raise ValueError("train.parallel=fsdp2 needs CUDA; use train.parallel=ddp on CPU")
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in student.backbone.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(student, mp_policy=policy)
        return student
    ids = [info.device.index] if info.device.type == "cuda" else None
    # with the faithful heads every parameter is used each step (the mask token through torch.where, the
    # heads on CLS/masked tokens), so DDP needs no unused-parameter search
    return nn.parallel.DistributedDataParallel(student, device_ids=ids, broadcast_buffers=False,
                                               find_unused_parameters=find_unused)


def shard_teacher_like_student(teacher: nn.Module, parallel: str, info: DistInfo) -> None:
    """Under FSDP2, shard the teacher's backbone/heads like the student so the EMA runs shard by shard."""
    if not info.distributed or parallel != "fsdp2":
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in teacher.backbone.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(teacher, mp_policy=policy)
