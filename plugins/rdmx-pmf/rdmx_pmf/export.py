"""pMF generators leaving rdmx in the iRDM release's own layout, and the release's files read in.

* ``release`` export: ``model.pth``, the dict the release's training writes and its evaluation
  reads (``{"model": state_dict, "step": k}``, ``net.<MiT parameter>`` keys, float32; the name of
  the file in its Hugging Face repository), so code written for the release loads it.
* foreign weights: a release (or upstream pMF) checkpoint given to ``rdmx eval`` / ``rdmx sample -c``
  is read with ``weights_only`` and normalised onto this package's keys (rdmx_pmf.weights).
"""

from __future__ import annotations

from pathlib import Path

import torch

RELEASE_FILE = "model.pth"


def release_pth(generator, config, folder: Path, export) -> list[Path]:
    state = {k: v.detach().cpu().to(torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in generator.state_dict().items()}
    path = Path(folder) / RELEASE_FILE
    torch.save({"model": state, "step": int(export.checkpoint.step)}, path)
    return [path]


def read_release(path: str | Path, generator) -> dict[str, torch.Tensor] | None:
    """The state dict of a release / upstream pMF file in this package's layout (checked against
    ``generator``); None when the file is not one (e.g. an rdmx checkpoint)."""
    from rdmx_pmf.weights import check_layout, normalise_keys, read_state_dict

    path = Path(path)
    if path.suffix not in (".pth", ".pt", ".bin", ".safetensors") or not path.is_file():
        return None
    state, _ = normalise_keys(read_state_dict(path))
    check_layout(generator, state, f"{path} (a pMF checkpoint in the release's layout)")
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
