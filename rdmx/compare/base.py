"""What an estimator needs from the frozen reference, and the estimator interface."""

from __future__ import annotations

import abc
import contextlib
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch

from rdmx.errors import RdmxError
from rdmx.fingerprint import fingerprint

if TYPE_CHECKING:
    from rdmx.reference.bundle import Reference


NYSTROM_FIELDS = ("landmarks", "kmeans_iters", "kmeans_subsample", "krr_subsample")
# the real rows a statistic is taken over: a seeded subsample of the whole pool (rdmx), or the first rows in the
# pool's order (the release: its class-sorted feature pool; an image folder's sorted class folders and files)
ROW_RULES = ("random", "first")


@dataclass(frozen=True)
class ReferenceRequest:
    """The reference statistics one consumer needs. Sizes of 0 mean "not needed"."""

    landmarks: int = 4096
    kmeans_iters: int = 20
    kmeans_subsample: int = 200_000
    sigma_subsample: int = 10_000
    sigma_scale: float = 1.0
    sigma: float | None = None  # a fixed base bandwidth instead of the median heuristic
    scales: tuple[float, ...] = (1.0,)
    krr_subsample: int = 100_000  # the release: k_rr, a V-statistic over 100,000 train rows
    rff_features: int = 0
    moments: bool = False
    bank: int = 0
    seed: int = 0
    krr_rows: str = "random"  # which rows k_rr is taken over: a seeded subsample, or the pool's "first" (the release)
    krr: bool = False  # k_rr without landmarks (mmd-exact's real term as the release computes it)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(sorted({float(s) for s in self.scales})))
        if self.krr_rows not in ROW_RULES:
            raise RdmxError(f"reference rows must be one of {ROW_RULES}, got {self.krr_rows!r}")

    def merge(self, other: ReferenceRequest) -> ReferenceRequest:
        """The union: the larger of each size, or-ed flags, the union of the scales.

        sigma, sigma_scale and seed define the reference itself and must agree."""
        for name in ("sigma", "sigma_scale", "seed", "krr_rows"):
            if getattr(self, name) != getattr(other, name):
                raise RdmxError(
                    f"reference requests disagree on {name}: {getattr(self, name)} vs "
                    f"{getattr(other, name)}; one reference cannot serve both"
                )
        nystrom = [r for r in (self, other) if r.landmarks > 0]
        with_krr = [r for r in (self, other) if r.landmarks > 0 or r.krr]
        sizes = {}
        for f in fields(self):
            if f.name in ("sigma", "sigma_scale", "seed", "scales", "moments", "krr_rows", "krr"):
                continue
            # Nystrom sizes of a request that wants no landmarks are irrelevant defaults
            pool = with_krr if f.name == "krr_subsample" else nystrom if f.name in NYSTROM_FIELDS else (self, other)
            sizes[f.name] = max((getattr(r, f.name) for r in pool), default=0)
        return replace(
            self,
            **sizes,
            scales=tuple(self.scales) + tuple(other.scales),
            moments=self.moments or other.moments,
            krr=self.krr or other.krr,
        )

    @property
    def wants_krr(self) -> bool:
        """Whether the reference computes the constant k_rr (Nyström, or asked for)."""
        return self.landmarks > 0 or self.krr

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales)
        for key, default in (("krr_rows", "random"), ("krr", False)):
            if d[key] == default:  # defaults leave the request's (and its bundles') fingerprint as before
                d.pop(key)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceRequest:
        return cls(**{**d, "scales": tuple(d.get("scales", (1.0,)))})

    def fingerprint(self) -> str:
        return fingerprint({"kind": "reference-request", **self.to_dict()})


@contextlib.contextmanager
def full_precision(device: torch.device):
    """Disable autocast so kernel arithmetic really runs in float32 (or float64)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 inputs (tests, gradcheck) stay float64; everything else is float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class Estimator(abc.ABC):
    """A distance between one encoder's generated features and its frozen real reference.

    ``loss`` gets the WHOLE generated batch (N, d) and returns the raw distance as a
    differentiable scalar. The engine applies self-normalisation when ``self_normalise`` (the
    class default, overridden by a config's ``self_normalise`` field)."""

    self_normalise: bool = True

    def __init__(self, config: Any = None):
        self.config = config
        if isinstance(getattr(config, "self_normalise", None), bool):
            self.self_normalise = config.self_normalise

    @abc.abstractmethod
    def request(self) -> ReferenceRequest:
        """What this estimator needs in the reference."""

    def loss(
        self,
        gen: torch.Tensor,
        ref: Reference,
        cond: torch.Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if gen.ndim != 2 or gen.shape[1] != ref.dim:
            raise RdmxError(
                f"{type(self).__name__}: generated features have shape {tuple(gen.shape)}, the "
                f"reference was built for (N, {ref.dim})"
            )
        with full_precision(gen.device):
            joint = ref.combine(gen.to(compute_dtype(gen)), cond)
            if joint.shape[1] != ref.joint_dim:
                raise RdmxError(
                    f"{type(self).__name__}: the joint feature has width {joint.shape[1]}, the reference's "
                    f"is {ref.joint_dim}; are the conditions of the kind the reference was built with?"
                )
            return self._loss(joint, ref, generator)

    @abc.abstractmethod
    def _loss(self, gen: torch.Tensor, ref: Reference, generator: torch.Generator | None) -> torch.Tensor:
        """The raw distance of joint-space features ``gen`` to ``ref``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def scale_indices(ref: Reference, scales: list[float] | tuple[float, ...]) -> list[int]:
    """Positions of ``scales`` in the reference's scales, or a clear error."""
    out = []
    for s in scales:
        matches = [i for i, r in enumerate(ref.scales) if abs(r - float(s)) <= 1e-12 * max(1.0, abs(r))]
        if not matches:
            raise RdmxError(
                f"the reference has kernel scales {list(ref.scales)}, not {s}; rebuild it with "
                f"this estimator's request"
            )
        out.append(matches[0])
    return out


def draw_rows(rows: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
    """n row indices: without replacement when n <= rows, else with replacement."""
    if n <= rows:
        return torch.randperm(rows, generator=generator)[:n]
    return torch.randint(rows, (n,), generator=generator)
