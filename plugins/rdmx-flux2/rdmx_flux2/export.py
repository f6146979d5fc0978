"""A trained FLUX.2 [klein] student leaving rdmx as a diffusers pipeline, and the iRDM release's
student file read in.

* ``diffusers`` export: a folder ``diffusers.Flux2KleinPipeline.from_pretrained(DIR)`` loads: the
  trained transformer (float32), the VAE (the base's; its decoder is the one the student trained
  through), the Qwen3 text encoder and tokenizer the run used, the flow-matching scheduler, and
  ``is_distilled = true`` (no classifier-free guidance). With the sampling arguments in
  ``rdmx_sampling.json`` (steps, ``max_sequence_length`` = ctx_len, ``text_encoder_out_layers``,
  size) the pipeline makes, for the same prompt and latents, the image ``rdmx sample`` makes.
* foreign weights: the release saves its student as ``{"model": Flux2AdapterModel.state_dict()}``,
  the transformer of Black Forest Labs' own code under ``model.`` in float32
  (``flux2_klein_1step_rdm_geallcoco_s180.pth``). It is read with ``weights_only``, its keys mapped
  to diffusers' by diffusers' own converter, and completed with this generator's frozen VAE decoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rdmx.errors import RdmxError

# the flow-matching scheduler of FLUX.2 [klein] (its mu is computed per resolution by the pipeline)
KLEIN_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
                   "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
                   "time_shift_type": "exponential"}


def _full_vae(generator, config, base: Path | None):
    """The whole AutoencoderKLFlux2 (encoder too) with the generator's decoder weights in it."""
    from diffusers import AutoencoderKLFlux2

    from rdmx_flux2.plugin import KLEIN_4B_VAE, TINY_VAE

    if base is not None:
        vae = AutoencoderKLFlux2.from_pretrained(str(base / "vae"), local_files_only=True)
    else:
        vae = AutoencoderKLFlux2(**(TINY_VAE if config.tiny else KLEIN_4B_VAE))
    dec = generator.vae
    with torch.no_grad():
        vae.post_quant_conv.load_state_dict(dec.post_quant_conv.state_dict())
        vae.decoder.load_state_dict(dec.decoder.state_dict())
        vae.bn.running_mean.copy_(dec.bn_mean.to(vae.bn.running_mean.dtype))
        vae.bn.running_var.copy_(dec.bn_var.to(vae.bn.running_var.dtype))
    return vae.to(next(dec.parameters()).dtype)


def diffusers(generator, config, folder: Path, export) -> list[Path]:
    from diffusers import FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline

    from rdmx_flux2.generator import _weights_dir

    base = _weights_dir(config)
    if base is not None and (base / "scheduler").is_dir():
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(base / "scheduler"), local_files_only=True)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(**KLEIN_SCHEDULER)
    text = generator.text
    text.load()
    try:
        pipe = Flux2KleinPipeline(scheduler=scheduler, vae=_full_vae(generator, config, base),
                                  text_encoder=text.model, tokenizer=text.tokenizer,
                                  transformer=generator.transformer, is_distilled=True)
        pipe.save_pretrained(str(folder), safe_serialization=True)
    finally:
        text.release()
    sampling = {"num_inference_steps": config.steps, "max_sequence_length": config.ctx_len,
                "text_encoder_out_layers": list(config.text_layers), "height": config.resolution,
                "width": config.resolution, "guidance_scale": 1.0}
    (Path(folder) / "rdmx_sampling.json").write_text(json.dumps(sampling, indent=2))
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def read_release(path: str | Path, generator) -> dict[str, torch.Tensor] | None:
    """The generator's state dict from the release's student file (None: not such a file)."""
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers

    from rdmx.train.checkpoint import mismatch

    path = Path(path)
    if path.suffix not in (".pth", ".pt") or not path.is_file():
        return None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a file that is not a torch zip (or carries code): refused
        raise RdmxError(f"{path}: not a torch weights file that loads without running code ({type(exc).__name__}); "
                        f"the release's student is a plain state dict under 'model'") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        return None
    bfl = {k.removeprefix("model."): v for k, v in state.items()}
    if not any(k.startswith(("double_blocks.", "single_blocks.")) for k in bfl):
        return None
    converted = convert_flux2_transformer_checkpoint_to_diffusers(dict(bfl))
    own = generator.transformer.state_dict()
    mismatch({k: tuple(v.shape) for k, v in converted.items()}, {k: tuple(v.shape) for k, v in own.items()}, path,
             "FLUX.2 [klein] transformer (the release's student)")
    out = {f"transformer.{k}": v.to(own[k].dtype) for k, v in converted.items()}
    out.update({k: v for k, v in generator.state_dict().items() if not k.startswith("transformer.")})
    return out
