"""Pretrained-weight status and fetching for registered encoders.

An encoder's registration meta may declare ``weights_sources`` (HFSource / URLSource objects
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


def _registry(registry=None):
    if registry is None:
        from rdmx.plugins import get_plugins

        registry = get_plugins().registry("encoders")
    return registry


def _entries(registry=None) -> list:
    """The given registry's entries; by default every encoder and every metric that declares
    downloadable weights (e.g. the ``fid`` metric's Inception)."""
    if registry is not None:
        return list(registry.entries())
    from rdmx.plugins import get_plugins

    plugins = get_plugins()
    metrics = [e for e in plugins.registry("metrics").entries() if e.meta.get("weights_sources")]
    return list(plugins.registry("encoders").entries()) + metrics


def status(registry=None) -> list[WeightStatus]:
    """Weight status of every registered encoder (file-system checks only)."""
    out = []
    for e in _entries(registry):
        sources = e.meta.get("weights_sources") or ()
        avail = e.meta_value("weights_available") if "weights_available" in e.meta else None
        if isinstance(avail, str):  # a failing check reports its error text
            avail = False
        where = "; ".join(s.describe() for s in sources)
        out.append(WeightStatus(e.name, e.plugin, str(e.meta.get("checkpoint", "")), avail, where))
    return out


def fetch(names: list[str], registry=None) -> list[WeightStatus]:
    """Download the weights of the named encoders; already cached sources are skipped."""
    known = {e.name: e for e in _entries(registry)}
    reg = _registry(registry)
    entries = [known[n] if n in known else reg.get(n, where="weights fetch") for n in names]
    done = []
    for e in entries:
        sources = e.meta.get("weights_sources") or ()
        if not sources:
            raise RdmxError(f"encoder '{e.name}' (plugin {e.plugin}) declares no downloadable weights")
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
        done.extend(s for s in status(registry) if s.name == e.name)
    return done
