"""Data-parallel training under torchrun (one node or many).

Every rank draws the same global noise, generates and encodes its slice, and gathers the
features of the whole batch. Each rank then evaluates the same loss on the same global
features, so the gradient with respect to the gathered features is identical everywhere and a
rank's slice of it is exactly the gradient of its own rows: the gather's backward needs no
communication. Summing the generator's gradients over ranks then gives the full-batch gradient,
equal to a single process's (tested with 2 gloo processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def sync_before_collective(x: torch.Tensor) -> None:
    """Wait for the kernels queued on ``x``'s CUDA stream before an NCCL collective reads it.

    The iRDM release reports deterministic hangs of the all-gather without this (encoder kernels
    under bf16 autocast racing the collective); the synchronisation costs one stream flush."""
    if x.is_cuda:
        torch.cuda.current_stream(x.device).synchronize()


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward returns this rank's rows of the (identical) gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world)]
        sync_before_collective(x)
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = rank, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows], None, None


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; rank 0 / world 1 when not launched by torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch's rows (gradient-preserving); identity in one process."""
        if self.world == 1:
            return x
        if x.requires_grad or x.is_floating_point():
            return _GatherRows.apply(x, self.rank, self.world)
        parts = [torch.empty_like(x) for _ in range(self.world)]
        sync_before_collective(x)
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def sum_gradients(self, params) -> None:
        """Sum every parameter's gradient over ranks (one flat all-reduce)."""
        if self.world == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def slice(self, n_global: int) -> slice:
        local = n_global // self.world
        return slice(self.rank * local, (self.rank + 1) * local)


def from_environment() -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        store = attempt_store(world)
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]), world_size=world)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank)


def attempt_store(world: int):
    """Under torchrun's elastic restarts (``TORCHELASTIC_RESTART_COUNT`` > 0): the job's store with
    the keys of this attempt apart. The agent keeps one store across restarts, so the process
    groups of a restarted attempt would otherwise read the addresses the killed attempt left
    (measured: ``--max-restarts 1`` with a killed worker hung in the restarted attempt's gloo set-up).
    None otherwise (torch's own env:// rendezvous)."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    if attempt in ("", "0") or "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        return None
    from datetime import timedelta

    host, port, rank = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["RANK"])
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # the agent serves MASTER_ADDR:PORT
    store = dist.TCPStore(host, port, world, is_master=not agent_hosts and rank == 0, timeout=timedelta(minutes=30),
                          multi_tenant=not agent_hosts)
    return dist.PrefixStore(f"rdmx/attempt-{attempt}", store)


def shutdown() -> None:
    """Leave the process group (a gloo group left open aborts the interpreter at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
