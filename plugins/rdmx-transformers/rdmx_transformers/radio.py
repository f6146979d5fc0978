"""C-RADIOv3 as an encoder. Its architecture is remote code in the Hub repo, so it is built only
when the config opts in (``trust_remote_code``) and the repo's code is in the local cache."""

from __future__ import annotations

import torch

from rdmx.errors import RdmxError
from rdmx.represent.encoder import Encoder, EncoderSpec
from rdmx.represent.presets import missing_error, resolve_weights, seeded
from rdmx_transformers.plugin import RADIO, RADIO_REPO

PRESET_VERSION = "1"


class RadioEncoder(Encoder):
    """The summary token; RADIO takes [0, 1] images and normalises them itself."""

    def __init__(self, spec: EncoderSpec, model: torch.nn.Module):
        super().__init__(spec)
        self.model = model
        self.freeze()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        summary = out.summary if hasattr(out, "summary") else out[0]
        return summary


def build(config) -> RadioEncoder:
    if config.tiny:
        raise RdmxError("encoder 'radio': there is no tiny RADIO (its architecture is the repo's remote code)")
    if not config.trust_remote_code:
        raise RdmxError(
            f"encoder 'radio': {RADIO_REPO} is defined by model code inside its Hub repo; set "
            "trust_remote_code = true in the encoder's config to run it"
        )
    from transformers import AutoConfig, AutoModel

    if config.weights == "random":
        found = RADIO.locate()
        if found is None:
            raise RdmxError(
                "encoder 'radio': random weights still need the repo's model code in the local cache "
                f"(run `rdmx weights fetch radio`); it is not cached: {missing_error('radio', RADIO_REPO, [RADIO])}"
            )
        cfg = AutoConfig.from_pretrained(str(found[0]), trust_remote_code=True, local_files_only=True)
        with seeded(config.seed):
            model = AutoModel.from_config(cfg, trust_remote_code=True)
        weights, revision = "random", found[1]
    else:
        w = resolve_weights(config, "radio", RADIO_REPO, [RADIO])
        model = AutoModel.from_pretrained(str(w.path), trust_remote_code=True, local_files_only=True)
        weights, revision = w.spec_weights, w.revision
    with torch.no_grad():
        probe = model(torch.zeros(1, 3, config.resolution or 256, config.resolution or 256))
    dim = (probe.summary if hasattr(probe, "summary") else probe[0]).shape[-1]
    spec = EncoderSpec(
        name="radio",
        family="transformers",
        checkpoint=RADIO_REPO,
        dim=int(dim),
        resolution=config.resolution or 256,
        weights=weights,
        revision=revision,
        mean=(0.0, 0.0, 0.0),  # RADIO normalises internally
        std=(1.0, 1.0, 1.0),
        pooling="summary",
        dtype="bfloat16",
        preset_version=PRESET_VERSION,
        seed=config.seed if weights == "random" else None,
        extra=(("trust_remote_code", True),),
    )
    return RadioEncoder(spec, model.eval())
