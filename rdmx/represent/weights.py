"""Pretrained-weight status and fetching for registered encoders (and generators and metrics with weights).

An encoder's (or generator's) registration meta may declare ``weights_sources`` (HFSource / URLSource objects
from :mod:`rdmx.represent.presets`) and ``weights_available`` (a torch-free check). Fetching
downloads into the libraries' standard caches (Hugging Face hub cache, torch hub cache); with
``HF_HUB_OFFLINE`` set it fails at once instead of trying the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdmx.errors import RdmxError
from rdmx.represent.presets import HFSource, hf_offline


@dataclass
class WeightStatus:
    name: str
    plugin: str
    checkpoint: str
    available: bool | None  # None: the encoder declares no pretrained weights
    where: str

    @property
    def label(self) -> str:
        return {True: "cached", False: "missing", None: "n/a"}[self.available]


WEIGHT_KINDS = ("encoders", "generators", "metrics")


class _Combined:
    """Every encoder, and the generators and metrics that declare weights, as one list of entries
    (looked up in that kind order)."""

    def __init__(self, registries):
        self.registries = list(registries)

    def entries(self):
        return [e for r in self.registries for e in r.entries()
                if e.kind == "encoders" or e.meta.get("weights_sources")]

    def get(self, name: str, where: str = ""):
        for r in self.registries:
            if name in r:
                return r.get(name)
        return self.registries[0].get(name, where)  # the registry's own "unknown name" error


def _registry(registry=None):
    if registry is None:
        from rdmx.plugins import get_plugins

        registry = _Combined(get_plugins().registry(k) for k in WEIGHT_KINDS)
    return registry


def status(registry=None) -> list[WeightStatus]:
    """Weight status of every registered encoder (file-system checks only)."""
    out = []
    for e in _registry(registry).entries():
        sources = e.meta.get("weights_sources") or ()
        avail = e.meta_value("weights_available") if "weights_available" in e.meta else None
        if isinstance(avail, str):  # a failing check reports its error text
            avail = False
        where = "; ".join(s.describe() for s in sources)
        out.append(WeightStatus(e.name, e.plugin, str(e.meta.get("checkpoint", "")), avail, where))
    return out


def fetch(names: list[str], registry=None) -> list[WeightStatus]:
    """Download the weights of the named encoders; already cached sources are skipped."""
    reg = _registry(registry)
    entries = [reg.get(n, where="weights fetch") for n in names]
    done = []
    for e in entries:
        sources = e.meta.get("weights_sources") or ()
        if not sources:
            raise RdmxError(f"{e.kind[:-1]} '{e.name}' (plugin {e.plugin}) declares no downloadable weights")
        for src in sources:
            if src.locate() is not None:
                continue
            if isinstance(src, HFSource) and hf_offline():
                raise RdmxError(
                    f"cannot fetch '{e.name}': HF_HUB_OFFLINE is set; unset it on a machine with "
                    f"network access (source {src.describe()})"
                )
            try:
                src.fetch()
            except Exception as exc:  # noqa: BLE001 - one clear message per failed source
                raise RdmxError(
                    f"cannot fetch '{e.name}' from {src.describe()}: {type(exc).__name__}: {exc}"
                ) from exc
        done.extend(s for s in status(reg) if s.name == e.name)
    return done
