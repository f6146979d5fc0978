"""FLUX.2 [klein] as an rdmx generator: (latent noise, prompt id) -> image in [0, 1].

For noise ε of shape (B, 4c, h, w) (c VAE latent channels, 2 × 2 patches: 128 × 32 × 32 at 512²)
and prompt ids y, with S = the cached Qwen3 states of prompt y (``rdmx_flux2.text_states``):

1. tokens x₁ = ε as a (B, h·w, 4c) sequence, image position ids (0, i, j, 0), text ids (0, 0, 0, l);
2. flow-matching Euler from t = 1 on the FLUX.2 schedule (``flow_schedule``):
   x ← x + (t' − t) · v_θ(x, t, S); one step is x₀ = ε − v_θ(ε, 1, S);
3. latents: tokens back to (B, 4c, h, w), times the VAE's batch-norm std plus its mean, 2 × 2
   un-patchified to (B, c, 2h, 2w);
4. image = clamp((D(latents) + 1) / 2, 0, 1) with D the frozen VAE decoder.

Every step is differentiable: gradients reach the transformer's (float32) parameters through
the decoder, whose own parameters are frozen. The transformer runs under bf16 autocast inside
``forward`` (``autocast = "bfloat16"``); ``checkpoint_blocks`` recomputes every block in backward
(diffusers' per-block activation checkpointing); ``shard_units()`` are the 5 double-stream and
20 single-stream blocks, which the engine may wrap with FSDP2. Only the transformer is trained:
the VAE encoder is never built here, the text encoder never lives in the generator.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.represent.presets import seeded
from rdmx.train.generator import DataInfo, Generator
from rdmx_flux2.plugin import (
    CHECKPOINT, KLEIN_4B_TRANSFORMER, KLEIN_4B_VAE, QWEN3_4B, SOURCES, TINY_QWEN3, TINY_TRANSFORMER, TINY_VAE,
)
from rdmx_flux2.text_states import Qwen3PromptEncoder, PromptStates, prompt_states, resolve_text_source

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def flow_schedule(steps: int, seq_len: int) -> list[float]:
    """t_0 = 1 > ... > t_steps = 0: ``1 − i/steps`` shifted by FLUX.2's resolution-dependent
    exponential time shift t ↦ e^μ / (e^μ + 1/t − 1), μ = diffusers' ``compute_empirical_mu``."""
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    mu = compute_empirical_mu(image_seq_len=seq_len, num_steps=steps)
    out = []
    for i in range(steps):
        t = 1.0 - i / steps
        out.append(math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0)))
    return out + [0.0]


def positions(h: int, w: int, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(h·w, 4) image ids (0, i, j, 0) in row-major token order and (L, 4) text ids (0, 0, 0, l)."""
    one = torch.arange(1)
    img = torch.cartesian_prod(one, torch.arange(h), torch.arange(w), one)
    txt = torch.cartesian_prod(one, one, one, torch.arange(text_len))
    return img, txt


class Flux2Decoder(nn.Module):
    """The frozen half of the FLUX.2 VAE that turns normalised latent tokens into pixels."""

    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder
        self.register_buffer("bn_mean", vae.bn.running_mean.detach().clone().float())
        self.register_buffer("bn_var", vae.bn.running_var.detach().clone().float())
        self.eps = float(vae.config.batch_norm_eps)
        self.patch = tuple(vae.config.patch_size)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Flux2Decoder:  # frozen: always eval
        return super().train(False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 4c, h, w) normalised latents -> (B, 3, 16h, 16w) float32 image in [0, 1]."""
        b, ch, h, w = latents.shape
        ph, pw = self.patch
        z = latents * torch.sqrt(self.bn_var.view(1, -1, 1, 1) + self.eps) + self.bn_mean.view(1, -1, 1, 1)
        z = z.reshape(b, ch // (ph * pw), ph, pw, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, ch // (ph * pw), h * ph, w * pw)
        dtype = next(self.decoder.parameters()).dtype
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z.to(dtype))
        image = self.decoder(z.to(dtype)).to(latents.dtype if latents.dtype == torch.float64 else torch.float32)
        return ((image + 1.0) / 2.0).clamp(0.0, 1.0)


class Flux2KleinGenerator(Generator):
    """See the module docstring. Conditions are prompt ids into ``prompts`` (the active pool)."""

    def __init__(self, config, info: DataInfo, transformer, vae, text: Qwen3PromptEncoder):
        super().__init__(info)
        self.config = config
        self.transformer = transformer.float().train()
        self.vae = Flux2Decoder(vae)
        self.text = text
        scale = 2 ** (len(vae.config.block_out_channels) - 1) * vae.config.patch_size[0]
        channels = int(vae.config.latent_channels) * math.prod(vae.config.patch_size)
        if transformer.config.in_channels != channels:
            raise RdmxError(f"generator 'flux2-klein': transformer in_channels {transformer.config.in_channels} != "
                            f"{channels} VAE latent channels")
        side = config.resolution // scale
        self.noise_shape = (channels, side, side)
        self.schedule = flow_schedule(config.steps, side * side)
        self.autocast_dtype = None if config.autocast == "none" else DTYPES[config.autocast]
        if config.checkpoint_blocks:
            self.transformer.enable_gradient_checkpointing()
        self._prompts: tuple[str, ...] = ()
        self.states: PromptStates | None = None
        self.set_prompts(info.prompts)

    # -- conditions -------------------------------------------------------------------------
    @property
    def prompts(self) -> tuple[str, ...]:
        return self._prompts

    def set_prompts(self, prompts) -> None:
        """Make prompt ids index ``prompts`` (their states are cached by fingerprint)."""
        prompts = tuple(prompts)
        if prompts == self._prompts and self.states is not None:
            return
        c = self.config
        self.states = prompt_states(prompts, self.text, cache_dir=c.cache_dir, path=c.prompt_states,
                                    batch=c.text_batch)
        width = self.states.shape[1]
        if width != self.transformer.config.joint_attention_dim:
            raise RdmxError(f"generator 'flux2-klein': prompt states are {width} wide, the transformer expects "
                            f"{self.transformer.config.joint_attention_dim} (text encoder / layers mismatch)")
        self._prompts = prompts

    def sample_noise(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normal latents (n, 4c, h, w), drawn in float32; float64 when the transformer is
        (exactness tests)."""
        noise = super().sample_noise(n, generator, device)
        return noise.double() if self.transformer.dtype == torch.float64 else noise

    def shard_units(self) -> list[nn.Module]:
        """The transformer blocks (double- then single-stream): the units FSDP2 shards."""
        return [*self.transformer.transformer_blocks, *self.transformer.single_transformer_blocks]

    # -- the map ----------------------------------------------------------------------------
    def velocity(self, tokens: torch.Tensor, t: float, ctx: torch.Tensor, img_ids, txt_ids) -> torch.Tensor:
        timestep = torch.full((tokens.shape[0],), t, dtype=tokens.dtype, device=tokens.device)
        return self.transformer(hidden_states=tokens, encoder_hidden_states=ctx, timestep=timestep, img_ids=img_ids,
                                txt_ids=txt_ids, guidance=None, return_dict=False)[0]

    def denoise(self, noise: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        """Euler from t = 1 over ``schedule``: (B, 4c, h, w) noise -> (B, 4c, h, w) normalised latents."""
        b, ch, h, w = noise.shape
        img_ids, txt_ids = (i.to(noise.device) for i in positions(h, w, ctx.shape[1]))
        x = noise.flatten(2).transpose(1, 2)
        for t, t_next in zip(self.schedule[:-1], self.schedule[1:]):
            x = x + (t_next - t) * self.velocity(x, t, ctx, img_ids, txt_ids)
        return x.transpose(1, 2).reshape(b, ch, h, w)

    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is None:
            raise RdmxError("generator 'flux2-klein' is text-conditional: pass prompt ids")
        dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32  # float64 stays (exactness tests)
        ctx = self.states.rows(cond).to(device=noise.device, dtype=dtype)
        enabled = self.autocast_dtype is not None
        with torch.autocast(noise.device.type, dtype=self.autocast_dtype or torch.float32, enabled=enabled):
            latents = self.denoise(noise.to(dtype), ctx)
        return self.vae(latents.to(dtype))


def _missing(sources) -> WeightsMissingError:
    where = "; ".join(s.describe() for s in sources if s.locate() is None)
    return WeightsMissingError(
        f"generator 'flux2-klein': pretrained weights for {CHECKPOINT} are not in the local cache ({where}). Run "
        f"`rdmx weights fetch flux2-klein` on a machine with network access, or set weights = \"<local diffusers "
        f"FLUX.2 [klein] directory>\" (or \"random\")."
    )


def student_file(config) -> Path | None:
    """``weights`` naming the release's student file (a ``.pth``): the base is the pretrained
    pipeline (random when tiny), the student's transformer is loaded over it."""
    path = Path(config.weights).expanduser()
    return path if path.suffix in (".pth", ".pt") else None


def _weights_dir(config) -> Path | None:
    """The diffusers-format directory holding transformer/ and vae/, or None for random weights."""
    if config.tiny or config.weights == "random":
        return None
    if config.weights == "pretrained" or student_file(config) is not None:
        located = {k: s.locate() for k, s in SOURCES.items()}
        needed = [k for k in ("transformer", "vae") + (() if config.text_encoder else ("text_encoder", "tokenizer"))
                  if located[k] is None]
        if needed:
            raise _missing([SOURCES[k] for k in needed])
        return located["transformer"][0].parent
    path = Path(config.weights).expanduser()
    if not (path / "transformer").is_dir() or not (path / "vae").is_dir():
        raise RdmxError(f"generator 'flux2-klein': weights = {config.weights!r} is not a diffusers FLUX.2 [klein] "
                        "directory (with transformer/ and vae/), \"pretrained\" or \"random\"")
    return path


def build_models(config):
    """(transformer, vae) in float32 / ``vae_dtype``: random (tiny or real size) or from the weights."""
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel

    folder = _weights_dir(config)
    vae_dtype = DTYPES[config.vae_dtype]
    if folder is None:
        with seeded(config.seed):
            transformer = Flux2Transformer2DModel(**(TINY_TRANSFORMER if config.tiny else KLEIN_4B_TRANSFORMER))
            vae = AutoencoderKLFlux2(**(TINY_VAE if config.tiny else KLEIN_4B_VAE))
        if vae_dtype != torch.float32:
            vae = nn.Module.to(vae, vae_dtype)  # every VAE module in vae_dtype (no float32 exceptions in FLUX.2's)
    else:
        transformer = Flux2Transformer2DModel.from_pretrained(str(folder / "transformer"), torch_dtype=torch.float32,
                                                              local_files_only=True)
        vae = AutoencoderKLFlux2.from_pretrained(str(folder / "vae"), torch_dtype=vae_dtype, local_files_only=True)
    return transformer, vae, folder


def build(config, info: DataInfo) -> Flux2KleinGenerator:
    if not info.is_image:
        raise RdmxError(f"generator 'flux2-klein' makes images; the data has samples of shape {info.sample_shape}")
    if not info.text_conditional:
        raise RdmxError("generator 'flux2-klein' is text-to-image: it needs a prompt pool (captioned data, whose "
                        "captions are the pool, or a [prompts] block)")
    transformer, vae, folder = build_models(config)
    random_text = (TINY_QWEN3 if config.tiny else QWEN3_4B) if folder is None else None
    source = resolve_text_source(config, folder, random_text)
    text = Qwen3PromptEncoder(source, config.ctx_len, config.text_layers, config.text_device)
    generator = Flux2KleinGenerator(config, info, transformer, vae, text)
    student = student_file(config)
    if student is not None:  # the release's one-step student as a warm start
        from rdmx_flux2.export import read_release

        if not student.is_file():
            raise RdmxError(f"generator 'flux2-klein': weights = {config.weights!r}: no such file")
        state = read_release(student, generator)
        if state is None:
            raise RdmxError(f"generator 'flux2-klein': {student} is not the release's student file (a state dict of "
                            "FLUX.2 transformer weights under 'model', Black Forest Labs' key names)")
        generator.load_state_dict(state)
    return generator
