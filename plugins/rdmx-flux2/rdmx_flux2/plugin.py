"""Entry point of rdmx-flux2: registers the ``flux2-klein`` generator (torch-free).

Facts (the paper's release, ``configs/flux.yaml`` and its FLUX.2 generator): the 4-step
guidance- and step-distilled FLUX.2 [klein] 4B is post-trained into a one-step model at 512²;
its text condition is the Qwen3 hidden states of layers 9, 18 and 27 stacked (3 × 2560 = 7680
channels) over a fixed context of 48 tokens; latents are 128 × 32 × 32 (16× VAE compression
with 2 × 2 patches); a full fine-tune of the transformer with float32 parameters and bf16
autocast, per-block activation checkpointing, gradients through the frozen VAE decoder.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rdmx.hookspecs import hookimpl
from rdmx.registry import ComponentConfig
from rdmx.represent.presets import HFSource, availability

REPO = "black-forest-labs/FLUX.2-klein-4B"
CHECKPOINT = f"hf-hub:{REPO}"
SAFETENSORS = ("diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.safetensors")
SOURCES = {
    "transformer": HFSource(REPO, (("config.json",), SAFETENSORS), subfolder="transformer", snapshot=True),
    "vae": HFSource(REPO, (("config.json",), SAFETENSORS), subfolder="vae", snapshot=True),
    "text_encoder": HFSource(REPO, (("config.json",), ("model.safetensors.index.json", "model.safetensors")),
                             subfolder="text_encoder", snapshot=True),
    "tokenizer": HFSource(REPO, (("tokenizer_config.json",), ("tokenizer.json",)), subfolder="tokenizer",
                          snapshot=True),
}

# FLUX.2 [klein] 4B (transformer/, vae/ and text_encoder/ config.json of the diffusers layout)
KLEIN_4B_TRANSFORMER = {
    "patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 7680, "timestep_guidance_channels": 256, "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32), "rope_theta": 2000, "eps": 1e-6, "guidance_embeds": False,
}
KLEIN_4B_VAE = {
    "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 32,
    "norm_num_groups": 32, "use_quant_conv": True, "use_post_quant_conv": True, "batch_norm_eps": 1e-4,
    "patch_size": (2, 2),
}
QWEN3_4B = {
    "vocab_size": 151936, "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 40960,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000, "tie_word_embeddings": True,
}
# tiny random models of the same classes (CPU tests): 64 px images, 4 × 4 latent tokens, 48-wide text states
TINY_TRANSFORMER = {
    **KLEIN_4B_TRANSFORMER, "in_channels": 16, "num_layers": 1, "num_single_layers": 1, "attention_head_dim": 8,
    "num_attention_heads": 2, "joint_attention_dim": 48, "timestep_guidance_channels": 16,
    "axes_dims_rope": (2, 2, 2, 2),
}
TINY_VAE = {**KLEIN_4B_VAE, "block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 4}
TINY_QWEN3 = {**QWEN3_4B, "vocab_size": 512, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 28,
              "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "max_position_embeddings": 256}


class Flux2KleinConfig(ComponentConfig):
    """FLUX.2 [klein] as a one-step (or few-step) text-to-image generator."""

    weights: str = Field("pretrained", description='"pretrained" (local HF cache), "random", or a local '
                         "diffusers-format FLUX.2 [klein] directory (transformer/, vae/, text_encoder/, tokenizer/)")
    tiny: bool = Field(False, description="tiny random models of the same classes (CPU tests); implies random")
    seed: int = Field(0, description="init seed of random weights")
    resolution: int = Field(512, ge=16, description="output side length in pixels (a multiple of 16)")
    steps: int = Field(1, ge=1, description="flow-matching Euler steps from t = 1 (1: the student; 4: the teacher)")
    autocast: Literal["bfloat16", "none"] = Field("bfloat16", description="transformer compute dtype (params stay float32)")
    vae_dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="dtype of the frozen VAE decoder")
    checkpoint_blocks: bool = Field(False, description="activation checkpointing of every transformer block")
    ctx_len: int = Field(48, ge=1, description="prompt tokens (pad / truncate): the text-state sequence length")
    text_layers: list[int] = Field(default_factory=lambda: [9, 18, 27], description="Qwen3 hidden states stacked")
    text_encoder: str | None = Field(None, description="Qwen3 text encoder: hub id or local directory "
                                     "(default: the weights' text_encoder/ and tokenizer/)")
    tokenizer: str | None = Field(None, description="tokenizer directory (default: next to the text encoder)")
    text_batch: int = Field(16, ge=1, description="prompts encoded at once when precomputing prompt states")
    text_device: str = Field("auto", description="device of the text encoder while it precomputes states")
    prompt_states: str | None = Field(None, description="a precomputed prompt-state directory to use (refused "
                                      "when its fingerprint differs); default: the cache, keyed by fingerprint")
    cache_dir: str = Field(".rdmx-cache", description="where prompt states are cached (prompt-states/<fingerprint>)")

    @field_validator("resolution")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"resolution must be a multiple of 16 (8× VAE and 2 × 2 patches), got {v}")
        return v

    @field_validator("text_layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if not v or any(i < 1 for i in v):
            raise ValueError("text_layers must name hidden-state indices >= 1 (0 is the embedding output)")
        return v


@hookimpl
def rdmx_register_generators(register):
    register(
        "flux2-klein",
        "rdmx_flux2.generator:build",
        config=Flux2KleinConfig,
        description="FLUX.2 [klein] 4B one-step text-to-image generator (diffusers): full fine-tune of the "
        "transformer, frozen VAE decoder, cached Qwen3 prompt states (layers 9/18/27, 48 tokens)",
        family="diffusers",
        checkpoint=CHECKPOINT,
        resolution=512,
        weights="pretrained",
        weights_available=availability(list(SOURCES.values())),
        weights_sources=tuple(SOURCES.values()),
        exports={"diffusers": "rdmx_flux2.export:diffusers"},
        foreign_weights="rdmx_flux2.export:read_release",
    )
