"""Generate from fixed noise and encode in chunks (shared by training-time and checkpoint
evaluation, and ``rdmx sample``). Everything here runs without gradients."""

from __future__ import annotations

from collections.abc import Mapping

import torch


class NonFiniteSamples(ValueError):
    """The generator made samples with NaN or inf values (``bad`` of ``total`` rows)."""

    def __init__(self, bad: int, total: int):
        super().__init__(f"the generator made {bad} of {total} samples with NaN or inf values")
        self.bad, self.total = bad, total


def _fixed_noise(generator, n: int, seed: int, device, cond: torch.Tensor | None = None):
    """Noise (and uniform random classes unless ``cond`` is given) drawn with ``seed``: the same
    samples for every checkpoint."""
    g = torch.Generator().manual_seed(seed)
    noise = generator.sample_noise(n, g, device)
    if cond is None:
        cond = generator.sample_conditions(n, g, device)
    return noise, cond


@torch.no_grad()
def generate(generator, n: int, seed: int, chunk: int, device: torch.device,
             cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` samples from noise drawn with ``seed`` (the same for every checkpoint); uniform random
    classes unless ``cond`` is given."""
    noise, cond = _fixed_noise(generator, n, seed, device, cond)
    was = generator.training
    generator.eval()
    outs = [generator(noise[s : s + chunk], None if cond is None else cond[s : s + chunk]) for s in range(0, n, chunk)]
    generator.train(was)
    return torch.cat(outs), cond


@torch.no_grad()
def generate_features(generator, encoders: Mapping[str, torch.nn.Module], n: int, seed: int, chunk: int,
                      device: torch.device, *, keep_samples: bool = False, dist=None,
                      cond: torch.Tensor | None = None, quantize: str = "none"):
    """Every encoder's features (float32, CPU) of ``n`` samples from the fixed noise of ``seed``
    (``quantize = "uint8"``: the samples rounded to 8-bit levels first, as saved images hold them).

    Each chunk of ``chunk`` samples is generated and encoded by every encoder at once, so no more
    than one chunk of images is ever alive (16,384 samples at 256 px would be 12.9 GB). Under
    torchrun (``dist`` with world > 1) every rank generates and encodes an equal share of the rows
    (the noise is padded to a multiple of the world size, so every rank runs the same number of
    generator calls, as a sharded generator requires) and the features are gathered.
    ``cond`` fixes the conditions (default: uniform random classes drawn with ``seed``).
    Returns ``(features, samples or None, cond)``; samples (CPU) only with ``keep_samples``.
    Raises :class:`NonFiniteSamples` when any sample is not finite (before an encoder is blamed).
    """
    noise, cond = _fixed_noise(generator, n, seed, device, cond)
    world = dist.world if dist is not None else 1
    share = -(-n // world)
    if world > 1:
        pad = share * world - n
        if pad:
            noise = torch.cat([noise, noise[-1:].expand(pad, *noise.shape[1:])])
        rows = slice(dist.rank * share, (dist.rank + 1) * share)
        my_noise, my_cond = noise[rows], None
        if cond is not None:
            my_cond = torch.cat([cond, cond[-1:].expand(pad)])[rows] if pad else cond[rows]
    else:
        my_noise, my_cond = noise, cond
    was = generator.training
    generator.eval()
    feats: dict[str, list[torch.Tensor]] = {k: [] for k in encoders}
    samples: list[torch.Tensor] = []
    bad = torch.zeros((), dtype=torch.long, device=device)
    for s in range(0, my_noise.shape[0], chunk):
        x = generator(my_noise[s : s + chunk], None if my_cond is None else my_cond[s : s + chunk])
        if quantize == "uint8":  # what a saved PNG / samples.npz holds: 8-bit levels of [0, 1]
            x = (x.float().clamp(0, 1) * 255.0 + 0.5).floor() / 255.0
        bad += (~torch.isfinite(x.reshape(len(x), -1))).any(dim=1).sum()
        for k, enc in encoders.items():
            feats[k].append(enc(x).float())
        if keep_samples:
            samples.append(x.float())
        del x
    generator.train(was)
    if world > 1:
        bad = dist.gather(bad.reshape(1)).sum()
    if int(bad):
        raise NonFiniteSamples(min(int(bad), n), n)
    out = {k: torch.cat(v) for k, v in feats.items()}
    kept = torch.cat(samples) if keep_samples else None
    if world > 1:  # equal shares: gather, then drop the padding
        out = {k: dist.gather(v)[:n] for k, v in out.items()}
        kept = dist.gather(kept)[:n] if keep_samples else None
    out = {k: v.cpu() for k, v in out.items()}
    return out, (kept.cpu() if kept is not None else None), cond
