"""The encoder contract, as one check a plugin's tests call.

``check_encoder_contract("my-encoder", {"width": 16})`` builds a registered encoder (the same
checked build the engine uses) or takes an instance, and verifies on random images in [0, 1]:

1. registration: the built spec's ``dim`` / ``resolution`` equal the registered ones;
2. shape: ``(B, spec.dim)`` features;
3. dtype: float32 output (float64 input stays float64 — exactness tests rely on it);
4. finite features;
5. frozen: every module in eval mode, no parameter requires grad, no buffer changes in a forward;
6. not constant: different images give different features;
7. differentiable: gradients reach the input, non-zero and finite (through a random projection:
   the plain sum of layer-normed features can be constant);
8. deterministic: the same batch twice gives the same features;
9. batch-independent: each row equals the features of its image alone, within ``rtol`` of the
   feature norm (loose by default: bf16 presets are not bit-invariant);
10. fingerprint: a 16-hex-digit string equal to ``spec.fingerprint()``; for a registered name,
    building it again with the same config gives the same fingerprint.

Rules 2–9 (:func:`contract_problems`) also run in ``rdmx run --dry-run`` and before every run's
reference build, on a few generated images, for every encoder of the battery. An encoder that is
stochastic on purpose declares ``contract_skip = ("deterministic",)`` in its registration (the
optional rules: :data:`OPTIONAL`); nothing else can be skipped.

A violation raises :class:`ContractError` (an AssertionError) saying which rule, with the
numbers, and naming the encoder and its plugin.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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


# properties an encoder may opt out of in its registration (``contract_skip = ("deterministic",)``),
# e.g. a deliberately stochastic encoder; every other property is checked for every encoder
OPTIONAL = ("deterministic", "batch_independent")

FIXES = {
    "shape": "return (B, spec.dim) features (Encoder.features) and register the dim the spec says",
    "dtype": "return float32 (Encoder.forward casts; do not override forward)",
    "finite": "look for a division by a norm or a log of zero in the features",
    "frozen": "call self.freeze() at the end of the constructor (eval mode, no parameter requires grad)",
    "deterministic": "switch off dropout and random augmentation inside the encoder (eval mode), or declare "
                     "contract_skip = (\"deterministic\",) if it is stochastic on purpose",
    "batch_independent": "features must not use statistics of the batch (BatchNorm in train mode, batch-wise "
                         "normalisation); compute per image",
    "differentiable": "no torch.no_grad(), .detach() or numpy round trip between the input and the features",
    "not_constant": "the features do not depend on the image: check the preprocessing and the layer read",
}


@dataclass
class Problem:
    rule: str
    detail: str
    hint: str = ""  # the likely fix when it is not the rule's usual one

    @property
    def fix(self) -> str:
        return self.hint or FIXES.get(self.rule, "")


def contract_problems(encoder: Any, x: Any, *, rtol: float = 3e-2, skip: tuple[str, ...] = ()) -> list[Problem]:
    """The encoder's behavioural problems on images ``x`` (B ≥ 2, values in [0, 1]), each with a
    number that shows it; [] when it behaves. ``skip``: declared opt-outs (:data:`OPTIONAL`)."""
    import torch

    problems: list[Problem] = []
    spec = encoder.spec
    batch = x.shape[0]
    training = [f"{n or '(root)'} ({type(m).__name__})" for n, m in encoder.named_modules() if m.training]
    if training:
        problems.append(Problem("frozen", f"modules in training mode: {', '.join(training[:4])}"))
    grads = [n for n, p in encoder.named_parameters() if p.requires_grad]
    if grads:
        problems.append(Problem("frozen", f"{len(grads)} parameters require grad, e.g. {', '.join(grads[:3])}"))
    buffers = {n: b.detach().clone() for n, b in encoder.named_buffers()}
    x = x.detach().clone().requires_grad_(True)
    f = encoder(x)
    changed = [n for n, b in encoder.named_buffers() if n in buffers and not torch.equal(b, buffers[n])]
    if changed:
        problems.append(Problem("frozen", f"a forward changed the buffers {', '.join(changed[:3])} (running "
                                          "statistics updated: a module in training mode)"))
    if tuple(f.shape) != (batch, spec.dim):
        problems.append(Problem("shape", f"features of {batch} images have shape {tuple(f.shape)}, expected "
                                         f"({batch}, {spec.dim}) from spec.dim"))
        return problems
    if f.dtype != torch.float32 and x.dtype != torch.float64:
        problems.append(Problem("dtype", f"features are {f.dtype}"))
    bad = int((~torch.isfinite(f)).sum())
    if bad:
        problems.append(Problem("finite", f"{bad} of {f.numel()} feature values are NaN or infinite"))
        return problems
    spread = f.detach().double().std(dim=0).max().item()
    scale = f.detach().double().abs().max().item()
    if spread <= 1e-7 * max(scale, 1e-12):
        problems.append(Problem("not_constant", f"{batch} different images give the same features (largest spread "
                                                f"across them {spread:.3g})"))
    w = torch.randn(f.shape, generator=torch.Generator().manual_seed(0)).to(f.device, f.dtype)
    if f.requires_grad:
        (f * w).sum().backward()
    g = x.grad
    if g is None or not torch.isfinite(g).all() or g.abs().sum() == 0:
        state = ("none: the features are detached from the images" if g is None else
                 "non-finite" if not torch.isfinite(g).all() else "all zero")
        hint = ("a square root, norm or division at zero gives NaN gradients: add an epsilon"
                if g is not None and not torch.isfinite(g).all() else "")
        problems.append(Problem("differentiable", f"the gradient at the input images is {state}", hint))
    with torch.no_grad():
        again = encoder(x.detach())
        if "deterministic" not in skip and not torch.equal(f.detach(), again):
            diff = (again - f.detach()).abs().max().item()
            problems.append(Problem("deterministic", f"the same images twice give features differing by up to "
                                                     f"{diff:.3g}"))
        if "batch_independent" not in skip:
            singles = torch.cat([encoder(x[i : i + 1].detach()) for i in range(batch)])
            norm = f.detach().norm(dim=1, keepdim=True).clamp_min(1e-6)
            err = ((singles - f.detach()).norm(dim=1, keepdim=True) / norm).max().item()
            if err > rtol:
                problems.append(Problem("batch_independent", f"an image's features alone and in a batch of {batch} "
                                                             f"differ by a relative {err:.3g} (> {rtol})"))
    return problems


def behaviour_report(encoders: dict[str, Any], x: Any) -> list[str]:
    """One line per problem of every encoder on the images ``x``: who, which property, the number,
    the likely fix (rdmx run --dry-run and every run's start call it)."""
    from rdmx.components import describe_encoder

    lines = []
    for label, enc in encoders.items():
        skip = tuple(getattr(enc, "rdmx_contract_skip", ()) or ())
        for p in contract_problems(enc, x, skip=skip):
            lines.append(f"{describe_encoder(label, enc)}: {p.rule.replace('_', '-')}: {p.detail} ({p.fix})")
    return lines


def check_encoder_contract(encoder: Any, config: Any = None, *, batch: int = 3, size: int = 48,
                           channels: int | None = None, seed: int = 0, rtol: float = 3e-2, plugins: Any = None):
    """Check the encoder contract (module docstring); returns the features of the random batch.

    ``encoder``: a registered encoder name (built with ``config``, a dict or the config model)
    or an Encoder instance. ``channels``: input channels (default: 1 when the spec normalises a
    single channel, else 3). The behavioural checks are :func:`contract_problems`, the same code
    ``rdmx run --dry-run`` and every run's start use."""
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
    if channels is None:
        channels = 1 if len(spec.mean) == 1 else 3
    x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
    skip = tuple(getattr(encoder, "rdmx_contract_skip", ()) or ())
    for p in contract_problems(encoder, x, rtol=rtol, skip=skip):
        raise ContractError(f"{who}: {p.rule.replace('_', '-')}: {p.detail} ({p.fix})")
    with torch.no_grad():
        f = encoder(x)
    fp = encoder.fingerprint
    if not (isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{16}", fp) and fp == spec.fingerprint()):
        raise ContractError(f"{who}: fingerprint: {fp!r} is not spec.fingerprint() ({spec.fingerprint()!r})")
    if entry is not None:
        _, rebuilt = _build(entry.name, config, plugins)
        if rebuilt.fingerprint != fp:
            raise ContractError(f"{who}: fingerprint: two builds with the same config give {fp} and "
                                f"{rebuilt.fingerprint}")
    return f
