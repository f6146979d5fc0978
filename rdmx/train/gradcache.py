"""Gradient caching: the full-batch gradient of a loss coupling all N generated samples,
computed with memory bounded by one micro-chunk.

Phase 1 generates and encodes every chunk without grad and keeps the features (and the
chunk's RNG state, for stochastic generators). Phase 2 evaluates the loss on the features of
the whole (global) batch and backpropagates to the feature leaves only. Phase 3 re-runs each
chunk with grad and backpropagates ``Σ F·∂L/∂F`` into the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from rdmx.represent.encoder import Encoder

LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor | None], tuple[torch.Tensor, dict[str, torch.Tensor]]]


@dataclass
class StepResult:
    loss: torch.Tensor  # the aggregated loss value (detached)
    raws: dict[str, torch.Tensor]  # per-encoder raw distances (detached)


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _encode(encoders: Mapping[str, Encoder], x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: enc(x) for name, enc in encoders.items()}


def _chunks(n: int, micro: int) -> list[slice]:
    return [slice(s, min(s + micro, n)) for s in range(0, n, micro)]


def cached_backward(
    generator: torch.nn.Module,
    encoders: Mapping[str, Encoder],
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    loss_fn: LossFn,
    micro_batch: int,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    grad_scale: float = 1.0,
) -> StepResult:
    """Accumulate into ``generator``'s ``.grad`` the gradient of ``grad_scale · loss_fn(features)``.

    ``gather`` maps local features to global-batch features keeping gradients (identity in one
    process; a gradient-preserving all-gather under torchrun). ``loss_fn(features, cond)`` returns
    the total loss and the per-encoder raw distances.
    """
    n = noise.shape[0]
    chunks = _chunks(n, micro_batch or n)
    device = noise.device
    states, feats = [], {k: [] for k in encoders}
    with torch.no_grad():
        for sl in chunks:
            states.append(_rng_state(device))
            out = _encode(encoders, generator(noise[sl], None if cond is None else cond[sl]))
            for k, f in out.items():
                feats[k].append(f)
    leaves = {k: torch.cat(v).requires_grad_(True) for k, v in feats.items()}
    full = {k: gather(v) for k, v in leaves.items()} if gather else leaves
    full_cond = gather(cond) if (gather and cond is not None) else cond
    loss, raws = loss_fn(full, full_cond)
    (loss * grad_scale).backward()
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in leaves.items()}
    after = _rng_state(device)
    for sl, state in zip(chunks, states, strict=True):
        _set_rng_state(state, device)
        out = _encode(encoders, generator(noise[sl], None if cond is None else cond[sl]))
        surrogate = sum((f * grads[k][sl]).sum() for k, f in out.items())
        if torch.is_tensor(surrogate) and surrogate.requires_grad:
            surrogate.backward()
    _set_rng_state(after, device)
    return StepResult(loss.detach(), {k: v.detach() for k, v in raws.items()})


def direct_backward(
    generator: torch.nn.Module,
    encoders: Mapping[str, Encoder],
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    loss_fn: LossFn,
    grad_scale: float = 1.0,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> StepResult:
    """The same gradient by one ordinary forward/backward over the whole batch (the baseline)."""
    full = _encode(encoders, generator(noise, cond))
    if gather:
        full = {k: gather(v) for k, v in full.items()}
        cond = gather(cond) if cond is not None else None
    loss, raws = loss_fn(full, cond)
    (loss * grad_scale).backward()
    return StepResult(loss.detach(), {k: v.detach() for k, v in raws.items()})
