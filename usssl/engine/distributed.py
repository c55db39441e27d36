"""Gather embeddings from every process while keeping the local gradient.

Contrastive losses need negatives from the whole (global) batch. ``torch.distributed.nn``'s
all-gather is differentiable: the backward pass sends each rank the gradient of its own slice, so
every contrastive loss in usssl calls this one helper and needs no other distributed code.
With one process (or no process group) it returns its input unchanged.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """x: (B, D) on each of R ranks → (R·B, D), rank order, gradient flowing to the local slice."""
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def sync_batchnorm_decision(wanted: bool, world_size: int, device_type: str) -> tuple[bool, str]:
    """Whether to turn BatchNorm into SyncBatchNorm, and the one log line that says why.

    Synchronised statistics need several processes (``world_size`` > 1) and CUDA tensors: torch's
    ``SyncBatchNorm`` does not run on CPU tensors, so a CPU (gloo) DDP run keeps plain BatchNorm,
    each process normalising over its own share of the batch.

    Args:
        wanted: the method's setting (e.g. ``pretrain.cvrl.sync_batchnorm``).
        world_size: processes training together (``trainer.world_size``).
        device_type: the device of this process's tensors (``"cuda"``, ``"cpu"``, ``"mps"``).
    """
    if not wanted:
        return False, "BatchNorm: plain (sync_batchnorm is off)"
    if world_size <= 1:
        return False, "BatchNorm: plain (one process, nothing to synchronise)"
    if device_type != "cuda":
        return False, (f"BatchNorm: plain, not synchronised: {world_size} processes on {device_type} (torch's "
                       "SyncBatchNorm runs on CUDA tensors only), so each process normalises over its own batch")
    return True, f"BatchNorm: SyncBatchNorm over {world_size} processes (statistics of the global batch)"


def rank() -> int:
    """This process's rank in the default process group (0 when there is none)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def launcher_rank() -> int:
    """The global rank even before the process group exists: from the group when it does, else
    from the launcher's environment (torchrun's ``RANK``, SLURM's ``SLURM_PROCID``), else 0.
    Used to decide who logs; losses use :func:`rank`."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def is_main_process() -> bool:
    """True in the one process that ingests, evaluates, writes files and logs.

    torchrun and SLURM start every rank at once (``RANK`` / ``SLURM_PROCID``); Lightning's own
    launcher re-runs the command for ranks > 0 with ``LOCAL_RANK`` (and ``NODE_RANK``) set.
    """
    if launcher_rank() != 0:
        return False
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def launched_together() -> bool:
    """Whether all ranks were started at once by an external launcher (torchrun, SLURM)."""
    return any(k in os.environ for k in ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID")) and "RANK" in os.environ or (
        "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ and os.environ["SLURM_NTASKS"] != "1"
    )
