"""Centering and Sinkhorn-Knopp all-reduce: two gloo processes on half batches = one process on all."""

from __future__ import annotations

import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gpfm.pretrain.losses import DINOLoss, IBOTPatchLoss


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
        part = z[rank * 4 : (rank + 1) * 4]
        dino, ibot = DINOLoss(5), IBOTPatchLoss(5)
        probs = dino.sinkhorn_knopp_teacher(part, 0.3)
        dino.update_center(part)
        ibot.update_center(part[: rank + 1])  # unequal row counts per rank
        torch.save({"probs": probs, "dino_c": dino.center, "ibot_c": ibot.center}, f"{out_dir}/r{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sinkhorn_and_center_all_reduce_match_single_process() -> None:
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    dino, ibot = DINOLoss(5), IBOTPatchLoss(5)
    full_probs = dino.sinkhorn_knopp_teacher(z, 0.3)
    dino.update_center(z)
    ibot.update_center(torch.cat([z[:1], z[4:6]]))
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(2, _free_port(), tmp), nprocs=2, join=True)
        r0, r1 = torch.load(f"{tmp}/r0.pt"), torch.load(f"{tmp}/r1.pt")
    assert torch.allclose(torch.cat([r0["probs"], r1["probs"]]), full_probs, atol=1e-6)
    for r in (r0, r1):
        assert torch.allclose(r["dino_c"], dino.center, atol=1e-6)
        assert torch.allclose(r["ibot_c"], ibot.center, atol=1e-6)
