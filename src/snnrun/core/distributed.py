"""Ranks: one process per device under ``torchrun``, PyTorch's own distributed engine.

``torchrun --nproc_per_node=K -m snnrun ...`` sets ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE`` (a SLURM job launched by submitit with several tasks gets them from
``submitit.helpers.TorchDistributedEnvironment``); :func:`init` joins the process group
(NCCL on CUDA, gloo on the CPU) once per process. ``batch_size`` is the GLOBAL batch: each
rank takes ``batch_size / world_size`` samples of every step's batch (:class:`ShardedBatches`),
so K ranks see the batches one process sees. Rank 0 alone owns the run dir, the logger and
the console. Without torchrun everything here is a no-op for a world of one. torch is imported
where it is used: the command's start-up (``--help``, a refused override) never loads it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snnrun.core.errors import SnnrunError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place, from torchrun's environment, or from SLURM's for a submitit job
    with several tasks (``hydra.launcher.tasks_per_node``); a world of one otherwise."""
    if "WORLD_SIZE" not in os.environ and _slurm_tasks() > 1:
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), size)


def _slurm_tasks() -> int:
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return 1
    return int(os.environ.get("SLURM_NTASKS", "1"))


def init() -> World:
    """Join the process group once (no-op for a world of one)."""
    w = world()
    if w.size == 1:
        return w
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(w.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo")
    return w


def shutdown() -> None:
    """Leave the process group before the interpreter exits (gloo's threads outliving it end
    the process with SIGABRT: "terminate called without an active exception"), after a barrier,
    so that no rank tears the group down while another still has a collective in flight."""
    if "torch" not in sys.modules:  # nothing imported it: no group to leave
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            with contextlib.suppress(RuntimeError):  # every rank done with its collectives
                dist.barrier()
        dist.destroy_process_group()


def active() -> bool:
    if "torch" not in sys.modules:
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over every rank (in place, returned); itself for a world of one."""
    if active():
        import torch.distributed as dist

        if t.device.type == "cpu" and dist.get_backend() == "nccl":
            moved = t.cuda()
            dist.all_reduce(moved)
            t.copy_(moved.cpu())
        else:
            dist.all_reduce(t)
    return t


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def agree(ok: bool, message: str) -> None:
    """Collective check: raise on every rank when any rank says not ``ok``."""
    import torch

    flag = torch.tensor([0.0 if ok else 1.0])
    if sum_over_ranks(flag).item() > 0:
        raise SnnrunError(message)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (one tiny all-reduce when distributed)."""
    if not active():
        return flag
    import torch

    return bool(sum_over_ranks(torch.tensor([1.0 if flag else 0.0])).item() > 0)


class ShardedBatches:
    """Batches of sample indices: a seeded permutation per epoch (``seed``, ``epoch``), cut into
    global batches of ``batch_size``; this rank takes every ``world``-th index of each.

    The order depends on nothing but (seed, epoch), so a resumed run sees the same batches.
    With several ranks, a last training batch too small to give every rank a sample is dropped
    (every rank must take the same number of steps); for testing, ranks with no share of it
    just skip it.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, w: World) -> None:
        if batch_size % w.size:
            raise SnnrunError(
                f"batch_size={batch_size} is the global batch and must divide over "
                f"{w.size} ranks; use a multiple of {w.size}"
            )
        self.n, self.batch_size, self.shuffle, self.seed, self.w = n, batch_size, shuffle, seed, w
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        import torch

        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for start in range(0, self.n, self.batch_size):
            batch = order[start : start + self.batch_size]
            share = batch[self.w.rank :: self.w.size].tolist()
            if (self.shuffle and len(batch) < self.w.size) or not share:
                return
            yield share

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        last = rest >= self.w.size if self.shuffle else rest > self.w.rank
        return full + (1 if last else 0)
