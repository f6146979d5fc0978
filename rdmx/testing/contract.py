"""The encoder contract, as one check a plugin's tests call.

``check_encoder_contract("my-encoder", {"width": 16})`` builds a registered encoder (the same
checked build the engine uses) or takes an instance, and verifies on random images in [0, 1]:

1. registration: the built spec's ``dim`` / ``resolution`` equal the registered ones;
2. shape: ``(B, spec.dim)`` features;
3. dtype: float32 output (float64 input stays float64 — exactness tests rely on it);
4. finite features;
5. frozen: every module in eval mode, no parameter requires grad;
6. determinism: the same batch twice gives the same features;
7. gradients reach the input, non-zero and finite (through a random projection: the plain sum
   of layer-normed features can be constant);
8. batch-size invariance: each row equals the features of its image alone, within ``rtol`` of
   the feature norm (loose by default: bf16 presets are not bit-invariant);
9. fingerprint: a 16-hex-digit string equal to ``spec.fingerprint()``; for a registered name,
   building it again with the same config gives the same fingerprint.

A violation raises :class:`ContractError` (an AssertionError) saying which rule, with the
numbers, and naming the encoder and its plugin.
"""

from __future__ import annotations

import re
from typing import Any


class ContractError(AssertionError):
    """An encoder breaks the contract; the message says which rule and how."""


def _build(name: str, config: Any, plugins: Any):
    from rdmx.components import build_checked
    from rdmx.errors import RdmxError
    from rdmx.plugins import get_plugins

    plugins = plugins or get_plugins()
    try:
        entry = plugins.get("encoders", name)
        return entry, build_checked(entry, config, label=name)
    except RdmxError as exc:
        raise ContractError(str(exc)) from exc


def check_encoder_contract(encoder: Any, config: Any = None, *, batch: int = 3, size: int = 48,
                           channels: int | None = None, seed: int = 0, rtol: float = 3e-2, plugins: Any = None):
    """Check the encoder contract (module docstring); returns the features of the random batch.

    ``encoder``: a registered encoder name (built with ``config``, a dict or the config model)
    or an Encoder instance. ``channels``: input channels (default: 1 when the spec normalises a
    single channel, else 3)."""
    import torch

    from rdmx.components import describe_encoder
    from rdmx.represent.encoder import Encoder

    entry = None
    if isinstance(encoder, str):
        entry, encoder = _build(encoder, config, plugins)
    if not isinstance(encoder, Encoder):
        raise ContractError(f"{type(encoder).__name__} is not an rdmx.represent.encoder.Encoder")
    spec = encoder.spec
    who = describe_encoder(getattr(encoder, "rdmx_label", spec.name), encoder)

    def fail(rule: str, detail: str) -> None:
        raise ContractError(f"{who}: {rule}: {detail}")

    if channels is None:
        channels = 1 if len(spec.mean) == 1 else 3
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=g, requires_grad=True)
    f = encoder(x)
    if tuple(f.shape) != (batch, spec.dim):
        fail("shape", f"features of {batch} images have shape {tuple(f.shape)}, expected ({batch}, {spec.dim}) "
                      f"from spec.dim={spec.dim}")
    if f.dtype != torch.float32:
        fail("dtype", f"features are {f.dtype}; forward() must return float32 (Encoder.forward casts)")
    if not torch.isfinite(f).all():
        fail("finite", f"{int((~torch.isfinite(f)).sum())} of {f.numel()} feature values are NaN or infinite")
    training = [n or "(root)" for n, m in encoder.named_modules() if m.training]
    if training:
        fail("frozen", f"modules in training mode: {', '.join(training[:5])} (call self.freeze())")
    grads = [n for n, p in encoder.named_parameters() if p.requires_grad]
    if grads:
        fail("frozen", f"parameters that require grad: {', '.join(grads[:5])} (call self.freeze())")
    with torch.no_grad():
        first, again = encoder(x.detach()), encoder(x.detach())
    if not torch.equal(first, again):
        diff = (again - first).abs().max().item()
        fail("determinism", f"the same batch twice differs by up to {diff:.3g}")
    w = torch.randn(f.shape, generator=g)
    if f.requires_grad:
        (f * w).sum().backward()
    if x.grad is None or not torch.isfinite(x.grad).all() or x.grad.abs().sum() == 0:
        state = "none" if x.grad is None else ("non-finite" if not torch.isfinite(x.grad).all() else "all zero")
        fail("gradient", f"the gradient at the input images is {state}; features must be differentiable in "
                         f"the images (no torch.no_grad / detach in preprocess or features)")
    with torch.no_grad():
        singles = torch.cat([encoder(x[i : i + 1].detach()) for i in range(batch)])
        scale = f.detach().norm(dim=1, keepdim=True).clamp_min(1e-6)
        err = ((singles - f.detach()).norm(dim=1, keepdim=True) / scale).max().item()
    if err > rtol:
        fail("batch-size dependence", f"an image's features alone differ from its features in a batch of {batch} "
                                      f"by a relative error {err:.3g} > {rtol}")
    fp = encoder.fingerprint
    if not (isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{16}", fp) and fp == spec.fingerprint()):
        fail("fingerprint", f"{fp!r} is not spec.fingerprint() ({spec.fingerprint()!r})")
    if entry is not None:
        _, rebuilt = _build(entry.name, config, plugins)
        if rebuilt.fingerprint != fp:
            fail("fingerprint", f"two builds with the same config give {fp} and {rebuilt.fingerprint}")
    return f.detach()
