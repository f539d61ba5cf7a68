"""Process-group set-up shared by single-process and ``torchrun`` launches.

One code path: :func:`init_distributed` looks at the variables ``torchrun`` exports (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``); only when ``WORLD_SIZE > 1`` does it create a process group (NCCL when
the rank trains on CUDA, gloo on CPU). A plain ``python``/``magphase`` launch gets rank 0 of 1 and never
touches ``torch.distributed``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from magphase.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank, 0 .. world_size - 1.
        world_size: number of training processes (1 without ``torchrun``).
        local_rank: rank within this node (selects the GPU ``cuda:local_rank``).
        device: the device this rank trains on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs metrics and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def is_main_process() -> bool:
    """Rank 0 of a ``torchrun`` job (from ``RANK``), or a plain process; usable before any process group."""
    return _env_int("RANK", 0) == 0


def resolve_device_name(requested: str | None) -> str:
    """``auto`` (or None) -> ``cuda`` when CUDA is available, else ``cpu``; any other name unchanged.

    A name for configs and settings, not a device: a bare ``cuda`` stays ``cuda`` so that
    :func:`resolve_device` later gives each ``torchrun`` rank its own GPU.
    """
    if requested is None or requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(requested)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device: {requested!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from exc
    return requested


def resolve_device(requested: str | None, local_rank: int = 0) -> torch.device:
    """Turn ``auto | cpu | cuda | cuda:N | mps`` into a device.

    ``auto`` picks ``cuda:local_rank`` when CUDA is available, else CPU. Under ``torchrun`` a bare
    ``cuda`` also means ``cuda:local_rank`` so that each rank gets its own GPU.
    """
    req = (requested or "auto").lower()
    if req == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if req == "cuda":
        return torch.device(f"cuda:{local_rank}")
    try:
        return torch.device(req)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device: {requested!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from exc


def init_distributed(device: str | None = "auto") -> DistInfo:
    """Join the ``torchrun`` process group if launched by it; otherwise describe a single process.

    Idempotent: a second call (e.g. ``magphase run`` training several stages in one process) reuses the
    existing group. The group is left open for later stages; :func:`shutdown_distributed` closes it.

    Args:
        device: requested device (see :func:`resolve_device`).
    Returns:
        The rank, world size, local rank and device of this process.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size <= 1:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=resolve_device(device, 0))

    dev = resolve_device(device, local_rank)
    if dev.type == "cuda" and dev.index != local_rank:
        log.warning("device %s ignored under torchrun: rank %d uses cuda:%d", dev, rank, local_rank)
        dev = torch.device(f"cuda:{local_rank}")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        # device_id binds NCCL communicators eagerly to this GPU (avoids a lazy-init hang on first use).
        kwargs: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, **kwargs)
        log.info("joined process group: backend=%s rank=%d/%d device=%s", backend, rank, world_size, dev)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    """Destroy the process group if one exists (call once at the end of a ``torchrun`` program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo | None = None) -> None:
    """Wait for every rank (no-op in a single process or before a process group exists).

    NCCL is given this rank's GPU explicitly (``info.device``, else the current CUDA device, which
    :func:`init_distributed` set); without it NCCL guesses a device and can hang.
    """
    if info is not None and not info.is_distributed:
        return
    if not (dist.is_available() and dist.is_initialized()):
        return
    if dist.get_backend() == "nccl":
        index = info.device.index if info is not None and info.device.type == "cuda" else None
        dist.barrier(device_ids=[torch.cuda.current_device() if index is None else index])
    else:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not info.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=info.device if info.device.type == "cuda" else None)
    return box[0]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process)."""
    if not info.is_distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no-op in a single process)."""
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


__all__ = [
    "DistInfo",
    "all_reduce_sum_",
    "barrier",
    "broadcast_object",
    "gather_objects",
    "init_distributed",
    "is_main_process",
    "resolve_device",
    "resolve_device_name",
    "shutdown_distributed",
]
