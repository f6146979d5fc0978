"""Gradient caching: the full-batch gradient of a loss coupling all N generated samples,
computed with memory bounded by one micro-chunk of the generator and one encoder.

Phase 1 generates and encodes every chunk without grad and keeps the features (and the
chunk's RNG state, for stochastic generators). Phase 2 evaluates the loss on the features of
the whole (global) batch and backpropagates to the feature leaves only: ``G_e = ∂L/∂F_e``.
Phase 3 re-generates each chunk once with grad and caches the loss gradient **at the image**:

    x = g_θ(z)        x̂ = x.detach() (a leaf)
    for each encoder e, one after the other:   x̂.grad += ∂/∂x̂ Σ F_e(x̂)·G_e   (graph freed)
    x.backward(x̂.grad)                          (once into the generator)

By the chain rule ``∂L/∂θ = Σ_e (∂F_e/∂x · G_e)·∂x/∂θ``, the same gradient as backpropagating
``Σ_e F_e·G_e`` through all encoders at once (``mode="features"``, the previous scheme, kept as
the benchmark's baseline), but only one encoder's activations are alive at any time: peak memory
is the generator chunk plus the largest encoder, not the sum over the battery. Encoders whose
feature gradient is exactly zero (balancer weight 0) are skipped in phase 3.

Encoders are replayed in reverse battery order: autograd, backpropagating through all encoders
at once, adds their image gradients last-created first, so the sum at the image is formed in
the same order as before and a float32 run reproduces the previous scheme bit for bit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from rdmx.represent.encoder import Encoder

LossFn = Callable[[dict[str, torch.Tensor], torch.Tensor | None], tuple[torch.Tensor, dict[str, torch.Tensor]]]
Phase = Callable[[str], contextlib.AbstractContextManager]
CacheMode = Literal["image", "features"]

# phase names reported to a ``phase`` callback (benchmarks time them; CUDA must be synchronised there)
PHASES = ("generate", "encode", "loss", "regenerate", "encoders", "generator_backward")


@dataclass
class StepResult:
    loss: torch.Tensor  # the aggregated loss value (detached)
    raws: dict[str, torch.Tensor]  # per-encoder raw distances (detached)


def _no_phase(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


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


def _rows(cond: torch.Tensor | None, sl: slice) -> torch.Tensor | None:
    return None if cond is None else cond[sl]


def cached_backward(
    generator: torch.nn.Module,
    encoders: Mapping[str, Encoder],
    noise: torch.Tensor,
    cond: torch.Tensor | None,
    loss_fn: LossFn,
    micro_batch: int,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    grad_scale: float = 1.0,
    *,
    mode: CacheMode = "image",
    phase: Phase | None = None,
) -> StepResult:
    """Accumulate into ``generator``'s ``.grad`` the gradient of ``grad_scale · loss_fn(features)``.

    ``gather`` maps local features to global-batch features keeping gradients (identity in one
    process; a gradient-preserving all-gather under torchrun). ``loss_fn(features, cond)`` returns
    the total loss and the per-encoder raw distances. ``mode`` chooses where phase 3 caches the
    loss gradient: ``"image"`` (one encoder alive at a time) or ``"features"`` (every encoder's
    graph at once; the previous scheme). ``phase(name)`` wraps each phase (see ``PHASES``).
    """
    if mode not in ("image", "features"):
        raise ValueError(f"gradient caching mode must be 'image' or 'features', got {mode!r}")
    phase = phase or _no_phase
    n = noise.shape[0]
    chunks = _chunks(n, micro_batch or n)
    device = noise.device
    # phase 1: every chunk without grad; keep the features and the RNG state before each chunk
    states, feats = [], {k: [] for k in encoders}
    with torch.no_grad():
        for sl in chunks:
            states.append(_rng_state(device))
            with phase("generate"):
                x = generator(noise[sl], _rows(cond, sl))
            with phase("encode"):
                for k, f in _encode(encoders, x).items():
                    feats[k].append(f)
            del x
    # phase 2: the loss on the global batch's features, backpropagated to the feature leaves
    with phase("loss"):
        leaves = {k: torch.cat(v).requires_grad_(True) for k, v in feats.items()}
        del feats
        full = {k: gather(v) for k, v in leaves.items()} if gather else leaves
        full_cond = gather(cond) if (gather and cond is not None) else cond
        loss, raws = loss_fn(full, full_cond)
        (loss * grad_scale).backward()
        grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in leaves.items()}
        del full, leaves
    # phase 3: re-run each chunk with grad, replaying its RNG state
    after = _rng_state(device)
    replay = _replay_image if mode == "image" else _replay_features
    active = [k for k in encoders if bool(grads[k].any())] if mode == "image" else list(encoders)
    for sl, state in zip(chunks, states, strict=True):
        _set_rng_state(state, device)
        replay(generator, {k: encoders[k] for k in active}, noise[sl], _rows(cond, sl),
               {k: grads[k][sl] for k in active}, phase)
    _set_rng_state(after, device)
    return StepResult(loss.detach(), {k: v.detach() for k, v in raws.items()})


def _replay_image(generator, encoders: Mapping[str, Encoder], noise, cond, grads, phase: Phase) -> None:
    """One chunk of phase 3 with the loss gradient cached at the image."""
    with phase("regenerate"):
        x = generator(noise, cond)
    leaf = x.detach().requires_grad_(True)
    with phase("encoders"):
        for k in reversed(list(encoders)):  # reverse order: the image gradient sums as autograd's would
            f = encoders[k](leaf)
            if f.requires_grad:
                f.backward(grads[k])
            del f
    with phase("generator_backward"):
        if x.requires_grad:  # every rank runs this backward (sharded generators communicate in it)
            x.backward(leaf.grad if leaf.grad is not None else torch.zeros_like(x))


def _replay_features(generator, encoders: Mapping[str, Encoder], noise, cond, grads, phase: Phase) -> None:
    """One chunk of phase 3 backpropagating ``Σ_e F_e·G_e`` through every encoder at once."""
    with phase("regenerate"):
        x = generator(noise, cond)
    with phase("encoders"):
        out = _encode(encoders, x)
        surrogate = sum((f * grads[k]).sum() for k, f in out.items())
    with phase("generator_backward"):
        if torch.is_tensor(surrogate) and surrogate.requires_grad:
            surrogate.backward()


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
