"""Generate from fixed noise and encode in chunks (shared by training-time and checkpoint evaluation)."""

from __future__ import annotations

from collections.abc import Mapping

import torch


@torch.no_grad()
def generate(generator, n: int, seed: int, chunk: int, device: torch.device,
             cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` samples from noise drawn with ``seed`` (the same for every checkpoint); uniform random
    classes unless ``cond`` is given."""
    g = torch.Generator().manual_seed(seed)
    noise = generator.sample_noise(n, g, device)
    if cond is None:
        cond = generator.sample_conditions(n, g, device)
    was = generator.training
    generator.eval()
    outs = [generator(noise[s : s + chunk], None if cond is None else cond[s : s + chunk]) for s in range(0, n, chunk)]
    generator.train(was)
    return torch.cat(outs), cond


@torch.no_grad()
def encode_all(encoders: Mapping[str, torch.nn.Module], samples: torch.Tensor, chunk: int) -> dict[str, torch.Tensor]:
    """Every encoder's features of ``samples`` (float32, on the CPU)."""
    n = samples.shape[0]
    return {k: torch.cat([enc(samples[s : s + chunk]) for s in range(0, n, chunk)]).cpu() for k, enc in encoders.items()}
