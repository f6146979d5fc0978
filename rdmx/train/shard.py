"""Big generators: FSDP2 sharding, activation checkpointing and ``torch.compile`` (convention 2:
a generator made of repeated blocks lists them in ``shard_units()``).

* ``train.shard = "fsdp"`` under torchrun: ``torch.distributed.fsdp.fully_shard`` on every unit,
  then on the generator (the parameters outside the units), on a 1-D mesh of all ranks. Each rank
  computes the gradient of its own rows of the global batch, so the reduce-scatter must **sum**
  (FSDP2 averages by default): every FSDP module gets divide factor 1 with SUM-only collectives
  (gloo has no PREMUL_SUM). The sharded gradient then equals a single process's, and
  ``clip_grad_norm_`` / AdamW act on the DTensor shards. Parameters stay float32 (a generator runs
  bf16 autocast in its own forward), so all-gathers and updates are exact.
* ``train.activation_checkpointing``: each unit's forward is recomputed in backward
  (``torch.utils.checkpoint``, non-reentrant, RNG state preserved); the module tree and
  state-dict keys do not change. Without grad (phase 1, evaluation) units run plainly.
* ``train.compile``: ``Module.compile(dynamic=False)`` on the generator and on every encoder, in
  place (types, attributes and state-dict keys unchanged); a step sees few shapes (the micro
  batch, the evaluation chunk, a ragged last chunk), each compiled once.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def shard_units(generator: nn.Module) -> list[nn.Module]:
    """The generator's repeated blocks (``shard_units()``), or none."""
    fn = getattr(generator, "shard_units", None)
    return list(fn()) if callable(fn) else []


def _checkpointed(forward, *args, **kwargs):
    if not torch.is_grad_enabled():
        return forward(*args, **kwargs)
    from torch.utils.checkpoint import checkpoint

    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def checkpoint_units(units: list[nn.Module]) -> None:
    """Recompute each unit's forward in backward instead of keeping its activations."""
    for unit in units:
        if not getattr(unit, "_rdmx_checkpointed", False):
            unit.forward = functools.partial(_checkpointed, unit.forward)
            unit._rdmx_checkpointed = True


def fully_shard_generator(generator: nn.Module, units: list[nn.Module], device: torch.device, world: int) -> nn.Module:
    """Shard ``generator`` over ``world`` ranks (torch.distributed must be initialised), per unit."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(generator, mesh=mesh)
    for module in generator.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # sum: each rank holds the gradient of its own rows
            module.set_force_sum_reduction_for_comms(True)
    return generator


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; a plain tensor as is."""
    return t.to_local() if hasattr(t, "to_local") else t


def compile_modules(generator: nn.Module, encoders) -> None:
    """``torch.compile`` the generator and every encoder in place."""
    generator.compile(dynamic=False)
    for enc in encoders.values():
        enc.compile(dynamic=False)
