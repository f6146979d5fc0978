"""Pretrained-weight status and fetching for registered encoders and generators.

A component's registration meta may declare ``weights_sources`` (HFSource / URLSource objects
from :mod:`rdmx.represent.presets`) and ``weights_available`` (a torch-free check). Fetching
downloads into the libraries' standard caches (Hugging Face hub cache, torch hub cache); with
``HF_HUB_OFFLINE`` set it fails at once instead of trying the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rdmx.errors import RdmxError, close_matches
from rdmx.registry import Registry
from rdmx.represent.presets import HFSource, hf_offline

WEIGHT_KINDS = ("encoders", "generators", "metrics")  # the kinds whose components can have pretrained weights


@dataclass
class WeightStatus:
    name: str
    plugin: str
    checkpoint: str
    available: bool | None  # None: the component declares no pretrained weights
    where: str
    kind: str = "encoders"
    path: str = ""  # where the first source lies in the local cache (when cached)

    @property
    def label(self) -> str:
        return {True: "cached", False: "missing", None: "n/a"}[self.available]


def _registries(registry: Registry | Sequence[Registry] | None = None) -> list[Registry]:
    if registry is None:
        from rdmx.plugins import get_plugins

        plugins = get_plugins()
        return [plugins.registry(k) for k in WEIGHT_KINDS]
    return [registry] if isinstance(registry, Registry) else list(registry)


def status(registry: Registry | Sequence[Registry] | None = None) -> list[WeightStatus]:
    """Weight status of every registered encoder and generator, and of the metrics that declare
    weights (e.g. ``fid``'s Inception); file-system checks only."""
    out = []
    for reg in _registries(registry):
        for e in reg.entries():
            sources = e.meta.get("weights_sources") or ()
            if reg.kind == "metrics" and not sources:
                continue
            avail = e.meta_value("weights_available") if sources else None
            if isinstance(avail, str):  # a failing check reports its error text
                avail = False
            where = "; ".join(s.describe() for s in sources)
            located = sources[0].locate() if avail else None
            out.append(WeightStatus(e.name, e.plugin, str(e.meta.get("checkpoint", "")), avail, where, reg.kind,
                                    str(located[0]) if located else ""))
    return out


def _entries(names: list[str], registries: list[Registry]):
    """The entries of every kind that carry each name (an unknown name is an error)."""
    found = []
    for name in names:
        hits = [reg.get(name) for reg in registries if name in reg]
        if not hits:
            known = sorted({n for reg in registries for n in reg.names()})
            kinds = " or ".join(reg.kind[:-1] for reg in registries)
            raise RdmxError(f"weights fetch: unknown {kinds} '{name}'{close_matches(name, known)}")
        found += hits
    return found


def fetch(names: list[str], registry: Registry | Sequence[Registry] | None = None) -> list[WeightStatus]:
    """Download the weights of the named components; already cached sources are skipped."""
    regs = _registries(registry)
    done = []
    for e in _entries(names, regs):
        what = f"{e.kind[:-1]} '{e.name}'"
        sources = e.meta.get("weights_sources") or ()
        if not sources:
            raise RdmxError(f"{what} (plugin {e.plugin}) declares no downloadable weights")
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
        done.extend(s for s in status(regs) if s.name == e.name and s.kind == e.kind)
    return done
