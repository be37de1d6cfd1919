"""Process setup for the train stage: one process, or several under torchrun / the deepspeed launcher.

NCCL on GPUs, gloo on CPU. A single process fills in the rendezvous variables itself, so the same
code path runs with and without a launcher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from workbench.processes import free_port


@dataclass
class DistState:
    rank: int
    world_size: int
    local_rank: int
    device: Any


def setup_distributed(use_deepspeed: bool) -> DistState:
    """Single process: fill the rendezvous variables; under torchrun/deepspeed: use theirs."""
    import torch

    cuda = torch.cuda.is_available()
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if use_deepspeed or world > 1:
        if not launched:
            os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        if not cuda:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if use_deepspeed:
            import deepspeed
            import deepspeed.ops

            if not cuda:
                # the shared-memory all-reduce op only helps several CPU processes on one host;
                # building it is a ~80 s JIT compile, so single-process CPU runs skip it
                deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
            if not torch.distributed.is_initialized():
                deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
        elif not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if cuda else "gloo")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return DistState(rank, world, local_rank, device)


def barrier() -> None:
    import torch

    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()
