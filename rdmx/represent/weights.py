"""Pretrained-weight status and fetching for registered encoders and generators.

A component's registration meta may declare ``weights_sources`` (HFSource / URLSource objects
from :mod:`rdmx.represent.presets`) and ``weights_available`` (a torch-free check). Fetching
downloads into the libraries' standard caches (Hugging Face hub cache, torch hub cache); with
``HF_HUB_OFFLINE`` set it fails at once instead of trying the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rdmx.errors import RdmxError, close_matches
from rdmx.registry import Registry
from rdmx.represent.presets import HFSource, URLSource, hf_offline

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
    revision: str = ""  # the cached commit (hub) or the known sha256 (URL) of the first source
    pinned: str = ""  # the commit the first source is pinned to ("" when unpinned)
    detail: str = ""  # why it is missing (a pin not cached, a partial snapshot, ...)
    sha256: str | None = None  # a URL source's expected sha256 (or prefix); "" when none is published

    @property
    def label(self) -> str:
        return {True: "cached", False: "missing", None: "n/a"}[self.available]

    @property
    def revision_label(self) -> str:
        """``pinned abc123 (cached)``, ``unpinned, cached abc123``, ``-``."""
        if self.pinned:
            return f"pinned {self.pinned[:12]} ({'cached' if self.available else 'not cached'})"
        if self.sha256 is not None:  # a URL source: checked by its hash, or not
            return f"sha256 {self.sha256[:12]}" if self.sha256 else "no published sha256"
        if self.available is None:
            return "-"
        return f"unpinned, cached {self.revision[:12]}" if self.revision else "unpinned"


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
            pinned = sources[0].pinned() if sources and isinstance(sources[0], HFSource) else None
            detail = "; ".join(s.diagnose() for s in sources if s.locate() is None) if sources and not avail else ""
            out.append(WeightStatus(e.name, e.plugin, str(e.meta.get("checkpoint", "")), avail, where, reg.kind,
                                    str(located[0]) if located else "", located[1] if located else "",
                                    pinned or "", detail,
                                    (sources[0].expected_hash() or "") if sources and isinstance(sources[0], URLSource)
                                    else None))
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


def pin(names: list[str], file: str | Path, registry: Registry | Sequence[Registry] | None = None,
        online: bool = False) -> dict[str, str]:
    """Pin the hub sources of the named components in the TOML pins file ``file`` (merged with
    what it holds): the cached commit, or with ``online`` the hub's current ``main`` commit."""
    import tomllib

    import tomli_w

    from rdmx.files import atomic_write_text

    file = Path(file)
    table: dict[str, str] = {}
    if file.is_file():
        try:
            table = dict(tomllib.loads(file.read_text()).get("pins", {}))
        except tomllib.TOMLDecodeError as exc:
            raise RdmxError(f"{file}: not a TOML pins file ({exc})") from None
    added: dict[str, str] = {}
    for e in _entries(names, _registries(registry)):
        for src in e.meta.get("weights_sources") or ():
            if not isinstance(src, HFSource):
                continue
            if online:
                from huggingface_hub import HfApi

                commit = HfApi().model_info(src.repo, revision="main").sha
            else:
                found = src.locate(pinned=False)
                if found is None:
                    raise RdmxError(f"weights pin: {src.describe()} ({e.kind[:-1]} '{e.name}') is not in the local "
                                    f"cache; fetch it first (rdmx weights fetch {e.name}) or pin from the hub (--online)")
                commit = found[1]
            added[src.repo] = table[src.repo] = commit
    atomic_write_text(file, tomli_w.dumps({"pins": dict(sorted(table.items()))}))
    return added
