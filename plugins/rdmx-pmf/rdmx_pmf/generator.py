"""The pMF one-step generator: the MiT network behind rdmx's generator interface.

Sampling (pMF's average-velocity parameterisation with x-prediction): from noise z at t = 1,
each of ``steps`` Euler steps of length h = 1/steps at time t computes
    x̂ = MiT(z; h, ω, [t_min, t_max], y),   u = (z − x̂) / clip(t, t_eps, 1),   z ← z − h·u,
under bf16 autocast (parameters stay float32). One step (the paper's setting) gives z − u(z, t=1,
h=1) = x̂. Images leave in [−1, 1] and are mapped to [0, 1] (then clamped, as the release does).

Noise: ``sample_noise`` draws ``noise_scale · N(0, I)`` (on an accelerator, on the device from
a seed taken from the caller's generator). The iRDM release trains and evaluates
pMF-H with unscaled N(0, I) (its sampler takes the noise as given), which is the default here;
pMF's own sampler scales by 2 (``noise_scale = 2``, the denoiser's training noise level).
"""

from __future__ import annotations

import contextlib

import torch

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.represent.presets import seeded
from rdmx.train.generator import DataInfo, Generator
from rdmx_pmf.mit import MiT
from rdmx_pmf.presets import PRESETS, PMFPreset, arch_for
from rdmx_pmf.weights import load_into, read_state_dict


class PMFGenerator(Generator):
    """``forward(noise, classes)`` → images in [0, 1]; ``net`` holds the MiT (checkpoint layout)."""

    def __init__(self, config, info: DataInfo, preset: PMFPreset, device: torch.device | str | None = None):
        super().__init__(info)
        if not info.is_image or info.sample_shape[0] != 3 or info.sample_shape[1] != info.sample_shape[2]:
            raise ValueError(f"generator '{preset.name}' makes square RGB images; the data has samples of shape "
                             f"{info.sample_shape}")
        self.config = config
        self.preset = preset
        size = info.sample_shape[-1]
        self.noise_shape = (3, size, size)
        arch = arch_for(preset.name, config.tiny)
        if size % arch.patch:
            raise ValueError(f"generator '{preset.name}': image size {size} is not a multiple of the patch size {arch.patch}")
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.net = MiT(arch, size, info.num_classes)

    # -- conditions and noise --------------------------------------------------------------
    def sample_noise(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """``noise_scale · N(0, I)`` of shape (n, 3, S, S); see :func:`draw_normal` for where it is drawn."""
        device = torch.device(device)
        return draw_normal((n, *self.noise_shape), generator, device, on_device=device.type != "cpu") * self.config.noise_scale

    def _classes(self, cond: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        if cond is None:
            if self.info.num_classes:
                raise ValueError(f"generator '{self.preset.name}' is class-conditional: pass class ids")
            return torch.zeros(n, dtype=torch.long, device=device)  # the "no class" id (= num_classes = 0)
        return cond.to(device=device, dtype=torch.long)

    # -- sampling --------------------------------------------------------------------------
    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        n, device = noise.shape[0], noise.device
        y = self._classes(cond, n, device)

        def full(v: float) -> torch.Tensor:
            return torch.full((n,), float(v), device=device)

        omega, t_min, t_max = full(c.guidance), full(c.interval[0]), full(c.interval[1])
        z = noise.float()
        h = 1.0 / c.steps
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.autocast == "bf16"):
            for k in range(c.steps):
                t = 1.0 - k * h
                x_hat = self.net(z, full(h), omega, t_min, t_max, y)
                u = (z - x_hat.float()) / min(max(t, c.t_eps), 1.0)
                z = z - h * u
        return (z * 0.5 + 0.5).clamp(0.0, 1.0)

    def shard_units(self) -> list[torch.nn.Module]:
        """The repeated transformer blocks (trunk, then u-head): FSDP / activation-checkpointing units."""
        return list(self.net.blocks)


def draw_normal(shape: tuple[int, ...], generator: torch.Generator, device: torch.device, on_device: bool) -> torch.Tensor:
    """N(0, I) samples, a function of ``generator``'s state alone (the same on every rank).

    On the CPU they come from ``generator`` itself. For an accelerator (``on_device``) one seed is
    taken from ``generator`` and the values are drawn on the device: an ImageNet step needs
    5120 × 3 × 256² ≈ 1 G values, seconds of CPU time if drawn there."""
    if not on_device:
        return torch.randn(shape, generator=generator).to(device)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(seed))


def _weights_file(config, preset: PMFPreset) -> str | None:
    """The file to load, or None for a random initialisation."""
    if config.tiny or config.weights == "random":
        return None
    if config.weights == "pretrained":
        if preset.source is None:
            raise RdmxError(f"generator '{preset.name}' has no released weights; set weights = \"<path to a "
                            f"checkpoint>\" or \"random\"")
        found = preset.source.locate()
        if found is None:
            raise WeightsMissingError(
                f"generator '{preset.name}': the released weights {preset.checkpoint} are not in the local "
                f"Hugging Face cache ({preset.source.describe()}). Run `rdmx weights fetch {preset.name}` on a "
                f"machine with network access, or set weights = \"<path to the file>\" (or \"random\")."
            )
        return str(found[0] / preset.source.files[0][0])
    return config.weights


def build(config, info: DataInfo) -> PMFGenerator:
    """Factory: a preset generator, warm-started from its weights or randomly initialised."""
    preset = PRESETS[config.preset]
    path = _weights_file(config, preset)
    if path is None:
        with seeded(config.seed):
            gen = PMFGenerator(config, info, preset)
            gen.net.init_weights(zero_init=config.zero_init)
        return gen
    if config.weights == "pretrained" and info.num_classes != preset.classes:
        raise RdmxError(f"generator '{preset.name}': the released weights are conditioned on {preset.classes} "
                        f"classes (ImageNet); the data has {info.num_classes}")
    state = read_state_dict(path, allow_pickle=config.allow_pickle)
    gen = PMFGenerator(config, info, preset, device="meta")
    load_into(gen, state, source=f"generator '{preset.name}': weights {path}")
    return gen
