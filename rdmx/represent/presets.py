"""Shared helpers for encoder presets: config base, weight sources, local-cache look-ups.

Torch-free at import: plugin registration modules import this to declare configs and to answer
"are the weights here?" by looking at the file system only (Hugging Face hub cache, torch hub
cache, or a plain directory). Loading helpers import torch lazily.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.files import file_sha256
from rdmx.registry import ComponentConfig, Seed


class PresetConfig(ComponentConfig):
    """Options shared by every encoder preset."""

    weights: str = Field("pretrained", description='"pretrained", "random", or a local weights file path')
    seed: Seed = Field(0, description="init seed when weights = 'random'")
    tiny: bool = Field(False, description="a tiny model of the same family (CPU tests); implies random weights")
    resolution: int | None = Field(None, ge=16, description="input resolution override (changes the fingerprint)")

    @field_validator("weights")
    @classmethod
    def _weights_value(cls, v: str) -> str:
        if not v:
            raise ValueError('weights must be "pretrained", "random" or a file path')
        return v


# -- cache locations (same rules as huggingface_hub and torch.hub) -------------------------
def hf_hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "huggingface" / "hub"


def torch_hub_dir() -> Path:
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "torch" / "hub"


def hf_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"}
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def cached_revisions(repo: str) -> list[str]:
    """Commits of a hub repo that have a snapshot in the local cache, newest first."""
    snaps = hf_hub_cache() / ("models--" + repo.replace("/", "--")) / "snapshots"
    if not snaps.is_dir():
        return []
    found = sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return [p.name for p in found]


def hf_snapshots(repo: str) -> list[Path]:
    """Snapshot folders of a cached hub repo, the ``refs/main`` one first."""
    root = hf_hub_cache() / ("models--" + repo.replace("/", "--"))
    ref = root / "refs" / "main"
    main = ref.read_text().strip() if ref.is_file() else None
    revs = cached_revisions(repo)
    order = ([main] if main in revs else []) + [r for r in revs if r != main]
    return [root / "snapshots" / r for r in order]


def _commit_of(path: Path) -> str:
    """The snapshot (commit) a cached file lies in: ``.../snapshots/<commit>/...``."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else ""


# -- pinned revisions ---------------------------------------------------------------------
PINS_FILE = Path(__file__).with_name("pins.toml")
PINS_ENV = "RDMX_WEIGHTS_PINS"


def pins() -> dict[str, str]:
    """Hub repo → pinned commit: rdmx's own pins (``rdmx/represent/pins.toml``), then a project's
    lock file named by ``$RDMX_WEIGHTS_PINS`` on top (``rdmx weights pin`` writes one)."""
    import tomllib

    out: dict[str, str] = {}
    for path in (PINS_FILE, os.environ.get(PINS_ENV)):
        if not path or not Path(path).is_file():
            continue
        try:
            table = tomllib.loads(Path(path).read_text()).get("pins", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RdmxError(f"{path}: not a TOML pins file ({exc})") from None
        for repo, commit in table.items():
            if not (isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit)):
                raise RdmxError(f"{path}: pins.{repo!r} must be a 40-hex commit hash, not {commit!r}")
            out[repo] = commit
    return out


# -- weight sources --------------------------------------------------------------------
@dataclass(frozen=True)
class HFSource:
    """Files of a Hugging Face hub repo. Each entry of ``files`` is a tuple of alternatives.

    ``revision`` pins a commit (else rdmx's and the project's pins apply, see :func:`pins`); a
    pinned source is found only in that commit's snapshot, so weights never change silently
    under a recipe. Cache look-ups and downloads go through ``huggingface_hub``."""

    repo: str
    files: tuple[tuple[str, ...], ...]
    subfolder: str = ""
    snapshot: bool = False  # fetch every file under subfolder (remote code, tokenizers)
    revision: str | None = None

    def pinned(self) -> str | None:
        return self.revision or pins().get(self.repo)

    def _name(self, name: str) -> str:
        return f"{self.subfolder}/{name}" if self.subfolder else name

    def _cached(self, revision: str) -> tuple[Path | None, list[str]]:
        """(the folder holding one alternative of every file at ``revision``, or None; the files missing)."""
        from huggingface_hub import try_to_load_from_cache

        base, missing = None, []
        for alts in self.files:
            hit = None
            for name in alts:
                got = try_to_load_from_cache(self.repo, self._name(name), cache_dir=hf_hub_cache(), revision=revision)
                if isinstance(got, str):
                    hit = Path(got)
                    break
            if hit is None:
                missing.append(self._name(alts[0]))
            else:
                base = hit.parent
        return (base if not missing else None), missing

    def locate(self, pinned: bool = True) -> tuple[Path, str] | None:
        """(snapshot folder, commit) holding one alternative of every file, or None: the pinned
        commit's snapshot; unpinned (or ``pinned=False``), the ``refs/main`` one, else the newest
        complete snapshot."""
        pin = self.pinned() if pinned else None
        if pin:
            base, _ = self._cached(pin)
            return (base, pin) if base is not None else None
        for rev in ["main", *cached_revisions(self.repo)]:
            base, _ = self._cached(rev)
            if base is not None:
                return base, _commit_of(base)
        return None

    def diagnose(self) -> str:
        """Why :meth:`locate` finds nothing: the pin absent, a partial snapshot, or no cache."""
        pin, revs = self.pinned(), cached_revisions(self.repo)
        if pin and pin not in revs:
            others = f" (cached: {', '.join(r[:12] for r in revs)})" if revs else ""
            return f"the pinned revision {pin[:12]} of {self.describe()} is not in the local cache{others}"
        for rev in [pin] if pin else revs:
            _, missing = self._cached(rev)
            if missing:
                return (f"{self.describe()} is cached only in part: snapshot {rev[:12]} lacks {', '.join(missing)} "
                        f"(an interrupted download?)")
        return f"{self.describe()} is not in the local cache"

    def file(self, alternatives: Sequence[str]) -> tuple[Path, str] | None:
        found = self.locate()
        if found is None:
            return None
        base, rev = found
        for name in alternatives:
            if (base / name).is_file():
                return base / name, rev
        return None

    def describe(self) -> str:
        sub = f"/{self.subfolder}" if self.subfolder else ""
        pin = self.pinned()
        return f"hf://{self.repo}{sub}" + (f"@{pin[:12]}" if pin else "")

    def fetch(self) -> Path:
        """Download into the hub cache (the hub's own progress bars): the pinned commit, else main."""
        from huggingface_hub import hf_hub_download, snapshot_download

        rev, cache = self.pinned(), hf_hub_cache()
        endpoint = os.environ.get("HF_ENDPOINT") or None  # read now (the hub library reads it at import)
        if self.snapshot:
            allow = [f"{self.subfolder}/*"] if self.subfolder else None
            return Path(snapshot_download(self.repo, revision=rev, allow_patterns=allow, cache_dir=cache,
                                          etag_timeout=10, endpoint=endpoint))
        last: Path | None = None
        for alts in self.files:
            err: Exception | None = None
            for name in alts:
                try:
                    last = Path(hf_hub_download(self.repo, name, subfolder=self.subfolder or None, revision=rev,
                                                cache_dir=cache, etag_timeout=10, endpoint=endpoint))
                    err = None
                    break
                except Exception as exc:  # noqa: BLE001 - try the next alternative
                    err = exc
            if err is not None:
                raise err
        assert last is not None
        return last.parent


HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")  # torch.hub's convention: name-<sha256 prefix>.pth


@dataclass(frozen=True)
class URLSource:
    """A file downloaded from a URL into a directory (``directory()`` is evaluated lazily).

    ``sha256`` (or the prefix a torch.hub-style name carries, ``name-6726825d.pth``) is checked
    after every download: a mismatch is refused and the file removed. Downloads show progress
    and resume an interrupted transfer (HTTP Range)."""

    url: str
    directory: Callable[[], Path]
    filename: str
    unzip_check: tuple[str, ...] = ()  # when set: the URL is a zip; these paths must exist after unzip
    sha256: str | None = None

    def expected_hash(self) -> str | None:
        if self.sha256:
            return self.sha256.lower()
        m = HASH_IN_NAME.search(self.filename)
        return m.group(1) if m else None

    def locate(self) -> tuple[Path, str] | None:
        d = self.directory()
        if self.unzip_check:
            ok = all((d / p).exists() for p in self.unzip_check)
            return (d, "") if ok else None
        path = d / self.filename
        return (path, "") if path.is_file() else None  # the revision: the file's own digest (resolve_weights)

    def diagnose(self) -> str:
        part = self.directory() / (self.filename + ".part")
        if part.is_file():
            return f"{self.url} was downloaded only in part ({part.stat().st_size:,} bytes in {part}; fetch resumes it)"
        return f"{self.url} is not in the local cache ({self.directory() / self.filename})"

    def describe(self) -> str:
        check = "" if self.expected_hash() else " (no published sha256: unverified)"
        return f"{self.url} -> {self.directory() / self.filename}{check}"

    def fetch(self) -> Path:
        import zipfile

        from rdmx.represent.download import download

        d = self.directory()
        dest = download(self.url, d / self.filename, self.expected_hash())
        if self.unzip_check:
            with zipfile.ZipFile(dest) as z:
                z.extractall(d)
        return d


Source = HFSource | URLSource


def sources_available(sources: Sequence[Source]) -> bool:
    return all(s.locate() is not None for s in sources)


def availability(sources: Sequence[Source]) -> Callable[[], bool]:
    """A zero-arg, torch-free check for registration meta ``weights_available``."""
    return lambda: sources_available(sources)


def pretrained_meta(sources: Sequence[Source], modality: str = "image") -> dict:
    """Registration meta of a preset whose weights come from ``sources``: its weights status
    (checked lazily, torch-free), the sources themselves, and the input modality."""
    return {"weights": "pretrained", "weights_available": availability(sources),
            "weights_sources": tuple(sources), "modality": modality}


def missing_error(preset: str, checkpoint: str, sources: Sequence[Source]) -> WeightsMissingError:
    where = "; ".join(s.diagnose() for s in sources if s.locate() is None) or "local cache"
    return WeightsMissingError(
        f"encoder '{preset}': pretrained weights for {checkpoint} are missing: {where}. Run `rdmx weights fetch {preset}` on a machine with network access, or set "
        f"weights = \"<path to a weights file>\" (or \"random\")."
    )


def file_digest(path: str | Path, length: int = 16) -> str:
    """sha256 of a file's bytes, hex, truncated (a weights file's revision)."""
    return file_sha256(path)[:length]


@dataclass
class ResolvedWeights:
    """Where an encoder's weights come from: mode is "random", "cache" or "file"."""

    mode: str
    path: Path | None = None
    revision: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec_weights(self) -> str:
        return "random" if self.mode == "random" else ("pretrained" if self.mode == "cache" else str(self.path))


def resolve_weights(
    config: PresetConfig, preset: str, checkpoint: str, sources: Sequence[Source], main: Sequence[str] = ()
) -> ResolvedWeights:
    """Resolve ``config.weights`` to random / a cached file / a user file, or raise WeightsMissingError.

    ``main`` names the alternatives of the file to load from the first source (for "cache").
    """
    if config.tiny or config.weights == "random":
        return ResolvedWeights("random")
    if config.weights == "pretrained":
        located = [s.locate() for s in sources]
        if any(loc is None for loc in located):
            raise missing_error(preset, checkpoint, sources)
        base, rev = located[0]  # type: ignore[misc]
        path = base
        if main:
            hit = next((base / m for m in main if (base / m).is_file()), None)
            if hit is None:
                raise missing_error(preset, checkpoint, sources)
            path = hit
        return ResolvedWeights("cache", path, rev or (file_digest(path) if path.is_file() else ""))
    path = Path(config.weights).expanduser()
    if not path.exists():
        raise RdmxError(
            f"encoder '{preset}': weights = {config.weights!r} is neither \"pretrained\", \"random\" "
            f"nor an existing file"
        )
    return ResolvedWeights("file", path, file_digest(path) if path.is_file() else "")


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """A state dict from safetensors or torch.load(weights_only=True)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return sd


def seeded(seed: int):
    """Context manager: a forked RNG seeded with ``seed`` (random-weight init)."""
    import contextlib

    import torch

    @contextlib.contextmanager
    def _ctx():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    return _ctx()


def preset_config(base: type[PresetConfig], preset: str) -> type[PresetConfig]:
    """A subclass of ``base`` that knows its preset name (``Config.preset``), so one lazy factory
    string can serve every preset of a family."""
    from typing import ClassVar

    safe = preset.replace("-", "_").replace(".", "_")
    return type(
        f"{base.__name__}_{safe}",
        (base,),
        {"__annotations__": {"preset": ClassVar[str]}, "preset": preset, "__module__": base.__module__,
         "__doc__": f"{base.__doc__ or ''} (preset '{preset}')"},
    )


def check_encoder_contract(encoder: Any, config: Any = None, **kwargs: Any) -> Any:
    """Moved to :func:`rdmx.testing.check_encoder_contract` (kept here for older plugin tests)."""
    from rdmx.testing import check_encoder_contract as check

    return check(encoder, config, **kwargs)
