"""Reading pMF checkpoints into the generator: the release's layouts normalised, then a strict load.

Accepted files: safetensors, or a torch file read with ``weights_only=True`` (a bare state
dict, or one under ``model`` / ``state_dict`` / ``module``; ``allow_pickle`` opts in to a full
unpickle of a trusted file). Accepted key layouts, all mapped onto this package's names
(``net.<MiT parameter>``, the release's ``pMFDenoiser`` layout):

* the iRDM release's own (``net.`` prefix) and rdmx checkpoints' generator state;
* the upstream FD-Loss/pMF layout: ``._flax_linear.`` / ``._flax_embedding.`` for
  ``.linear.`` / ``.embedding.``, prefix tokens stored as (1, n, width), a ``rope_freqs`` buffer;
* wrapper prefixes ``module.`` (DDP) and ``_orig_mod.`` (torch.compile), or no ``net.`` at all.

The disabled v-head (``net.v_heads.*``, ``net.v_final_layer.*``) of a network trained with both
heads is dropped: the one-step sampler reads the u-head only. Every other key must match the
module exactly (names and shapes): a mismatch is an error listing what differs.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from rdmx.errors import RdmxError

V_HEAD = ("net.v_heads.", "net.v_final_layer.")
TOKENS = ("time_tokens", "class_tokens", "omega_tokens", "t_min_tokens", "t_max_tokens")


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (see the module docstring for the accepted containers)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RdmxError(f"generator weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(path):
            raise RdmxError(f"{path}: not a readable torch or safetensors file") from None
        culprit = next((ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln), "")
        raise RdmxError(
            f"{path}: holds objects other than tensors, which weights_only loading refuses"
            f"{f' ({culprit})' if culprit else ''}. If you trust the file, set generator.allow_pickle = "
            f"true, or convert it once to safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise RdmxError(f"{path}: not a readable torch or safetensors file ({type(exc).__name__}: {exc})") from None
    for key in ("model", "state_dict", "module", "generator"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(torch.is_tensor(v) for v in obj.values()):
        raise RdmxError(f"{path}: no state dict of tensors found (top-level keys: {list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__})")
    return dict(obj)


def normalise_keys(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a release/upstream state dict onto ``net.<name>`` keys; returns (state, dropped keys)."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = key
        for wrapper in ("module.", "_orig_mod."):
            name = name.replace(wrapper, "")
        name = name.replace("._flax_linear.", ".linear.").replace("._flax_embedding.", ".embedding.")
        if not name.startswith("net."):
            name = "net." + name
        if "rope_freqs" in name or name.startswith(V_HEAD):
            dropped.append(key)
            continue
        if name.rsplit(".", 1)[-1] in TOKENS and value.dim() == 3 and value.shape[0] == 1:
            value = value[0]
        out[name] = value
    return out, dropped


def check_layout(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise an error naming every missing, unexpected and mis-shaped key."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} ≠ {expected[k]}" for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k]
    )
    if missing or unexpected or shapes:
        parts = []
        for what, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {what}: {', '.join(items[:5])}{more}")
        raise RdmxError(f"{source} does not fit this network: " + "; ".join(parts))


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Normalise, check and load ``state`` (as float32) into ``module``; returns the dropped keys.

    A module on the meta device takes the tensors themselves (``assign``), so a large network is
    never initialised only to be overwritten."""
    state, dropped = normalise_keys(state)
    check_layout(module, state, source)
    on_meta = any(p.is_meta for p in module.parameters())
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    module.load_state_dict(state, strict=True, assign=on_meta)
    return dropped
