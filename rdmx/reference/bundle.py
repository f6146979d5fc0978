"""Frozen reference bundles: build (two streamed passes), save (safetensors + JSON), load.

Pass 1 draws one uniform reservoir subsample of the real stream (bottom-k random keys),
from which come sigma (median heuristic), the k-means landmarks, k_rr and the bank.
Pass 2 streams every row again for the float64 Nystrom mean embedding mu, the RFF real
mean feature and the first two moments. All statistics live in the joint space
(``rdmx.compare.joint``) so generated and real features are compared alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rdmx import __version__
from rdmx.compare.base import ReferenceRequest, draw_rows
from rdmx.compare.configs import JointSpec
from rdmx.compare.joint import combine, joint_dim, resolve_joint
from rdmx.compare.kernels import kernel_sum, sq_dists
from rdmx.errors import BundleMismatchError, RdmxError
from rdmx.files import IntegrityError, atomic_write, file_sha256, read_sealed_json, write_sealed_json
from rdmx.reference.kmeans import kmeans

FORMAT = "rdmx-reference/1"
TENSORS_FILE = "reference.safetensors"
MANIFEST_FILE = "manifest.json"
NYSTROM_RIDGE = 1e-6
REBUILD = "run `rdmx reference build RECIPE` (or `rdmx run`) again: a damaged bundle is rebuilt from the features"
SIGMA_FLOOR = 1e-5
TENSOR_NAMES = (
    "landmarks", "alpha", "k_rr", "rff_weight", "rff_bias", "rff_mean", "mean", "cov", "bank", "bank_cond",
)

Chunks = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor | None]]]


@dataclass
class Reference:
    """One encoder's frozen real statistics. Tensors absent from the request are None.

    sigma is the base kernel bandwidth (median heuristic x sigma_scale); scale s uses
    sigma * s. alpha and k_rr have one row per entry of ``scales``."""

    dim: int
    rows: int
    sigma: float
    scales: tuple[float, ...]
    joint: dict[str, Any]
    request: ReferenceRequest
    encoder_fingerprint: str
    data_fingerprint: str
    cond_dim: int | None = None
    version: str = __version__
    landmarks: torch.Tensor | None = None  # (m, D) float32
    alpha: torch.Tensor | None = None  # (S, m) float32
    k_rr: torch.Tensor | None = None  # (S,) float64
    rff_weight: torch.Tensor | None = None  # (D, S * features) float32
    rff_bias: torch.Tensor | None = None  # (S * features,) float32
    rff_mean: torch.Tensor | None = None  # (S * features,) float64
    mean: torch.Tensor | None = None  # (D,) float64
    cov: torch.Tensor | None = None  # (D, D) float64
    bank: torch.Tensor | None = None  # (n, d) float32, raw image features
    bank_cond: torch.Tensor | None = None  # (n,) long or (n, t) float32
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def joint_dim(self) -> int:
        return joint_dim(self.joint, self.dim, self.cond_dim)

    def sigmas(self, scale_idx: list[int] | None = None) -> list[float]:
        idx = range(len(self.scales)) if scale_idx is None else scale_idx
        return [self.sigma * self.scales[i] for i in idx]

    def combine(self, feats: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Image features (N, dim) and their conditions -> joint-space features."""
        return combine(feats, cond, self.joint)

    def need(self, name: str, what: str) -> torch.Tensor:
        value = getattr(self, name)
        if value is None:
            raise RdmxError(f"{what} needs '{name}' in the reference, which was built without it; rebuild it")
        return value

    def bank_batch(
        self, n: int, generator: torch.Generator | None = None, *, like: torch.Tensor | None = None
    ) -> torch.Tensor:
        """n random bank rows in the joint space (on the device and dtype of ``like``)."""
        bank = self.need("bank", "a real-batch estimator")
        idx = draw_rows(bank.shape[0], n, generator).to(bank.device)
        rows, cond = bank[idx], None if self.bank_cond is None else self.bank_cond[idx]
        if like is not None:
            rows = rows.to(device=like.device, dtype=like.dtype)
        return self.combine(rows, cond)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {n: getattr(self, n) for n in TENSOR_NAMES if getattr(self, n) is not None}

    def to(self, device: torch.device | str) -> Reference:
        """A copy with every tensor on ``device``."""
        moved = {n: t.to(device) for n, t in self.tensors().items()}
        return replace(self, **moved, cache={})

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "rdmx_version": self.version,
            "encoder_fingerprint": self.encoder_fingerprint,
            "data_fingerprint": self.data_fingerprint,
            "rows": self.rows,
            "dim": self.dim,
            "cond_dim": self.cond_dim,
            "m": 0 if self.landmarks is None else int(self.landmarks.shape[0]),
            "sigma": self.sigma,
            "scales": list(self.scales),
            "joint": self.joint,
            "seeds": {"subsample": self.request.seed, "kmeans": self.request.seed, "rff": self.request.seed + 1},
            "request": self.request.to_dict(),
            "request_fingerprint": self.request.fingerprint(),
            "tensors": sorted(self.tensors()),
        }


# ---------------------------------------------------------------------------------- build
def median_sigma(x: torch.Tensor) -> float:
    """sqrt(median of pairwise squared distances over pairs i < j), computed in float64."""
    x = x.double()
    n = x.shape[0]
    if n < 2:
        raise RdmxError("the median heuristic needs at least 2 real rows")
    parts = []
    x_sq = (x * x).sum(1)
    for i in range(0, n - 1, 512):
        d2 = sq_dists(x[i : i + 512], x[i + 1 :], x_sq[i + 1 :])
        rows = torch.arange(d2.shape[0], device=x.device)[:, None]
        cols = torch.arange(d2.shape[1], device=x.device)[None, :]
        parts.append(d2[cols >= rows].cpu().numpy())
    return float(np.sqrt(np.median(np.concatenate(parts))))


class _Reservoir:
    """A uniform random subsample of size k of a stream: the rows with the k smallest keys."""

    def __init__(self, k: int, generator: torch.Generator):
        self.k, self.gen = k, generator
        self.keys: torch.Tensor | None = None
        self.feats: torch.Tensor | None = None
        self.cond: torch.Tensor | None = None

    def add(self, feats: torch.Tensor, cond: torch.Tensor | None) -> None:
        keys = torch.rand(feats.shape[0], dtype=torch.float64, generator=self.gen)
        if self.k <= 0:
            return
        if self.keys is None:
            take = min(self.k, feats.shape[0])
            self.keys, self.feats = keys[:take].clone(), feats[:take].clone()
            self.cond = None if cond is None else cond[:take].clone()
            keys, feats = keys[take:], feats[take:]
            cond = None if cond is None else cond[take:]
        short = self.k - self.keys.shape[0]
        if short > 0 and keys.numel():
            take = min(short, keys.shape[0])
            self.keys = torch.cat([self.keys, keys[:take]])
            self.feats = torch.cat([self.feats, feats[:take]])
            if cond is not None:
                self.cond = torch.cat([self.cond, cond[:take]])
            keys, feats = keys[take:], feats[take:]
            cond = None if cond is None else cond[take:]
        if not keys.numel():
            return
        cand = (keys < self.keys.max()).nonzero().flatten()
        if not cand.numel():
            return
        merged = torch.cat([self.keys, keys[cand]])
        keep = torch.zeros(merged.shape[0], dtype=torch.bool)
        keep[torch.topk(merged, self.k, largest=False).indices] = True
        evicted = (~keep[: self.k]).nonzero().flatten()
        incoming = cand[keep[self.k :]]
        self.keys[evicted] = keys[incoming]
        dev = self.feats.device
        self.feats[evicted.to(dev)] = feats[incoming.to(dev)]
        if cond is not None:
            self.cond[evicted.to(dev)] = cond[incoming.to(dev)]


def _checked(feats: torch.Tensor, cond: torch.Tensor | None, dim: int | None, device) -> tuple:
    if feats.ndim != 2:
        raise RdmxError(f"reference chunks must be (B, d) features, got shape {tuple(feats.shape)}")
    if dim is not None and feats.shape[1] != dim:
        raise RdmxError(f"reference chunks changed width: {feats.shape[1]} after {dim}")
    feats = feats.detach().to(device=device, dtype=torch.float32)
    if cond is not None:
        if cond.shape[0] != feats.shape[0]:
            raise RdmxError(f"a chunk has {feats.shape[0]} features but {cond.shape[0]} conditions")
        cond = cond.detach().to(device)
        cond = cond.long() if not cond.dtype.is_floating_point else cond.float()
    return feats, cond


def build_reference(
    chunks: Chunks,
    request: ReferenceRequest,
    *,
    joint: JointSpec | None = None,
    encoder_fingerprint: str,
    data_fingerprint: str,
    device: torch.device | str | None = None,
    block_elems: int = 1 << 24,
) -> Reference:
    """Build the frozen reference of one encoder from a re-iterable stream of
    ``(features (B, d), cond or None)`` chunks (``chunks()`` is called twice)."""
    joint = joint or JointSpec()
    gen = torch.Generator().manual_seed(request.seed)
    nystrom = request.landmarks > 0
    k = max(request.sigma_subsample, request.bank)
    if nystrom:
        k = max(k, request.kmeans_subsample)
    if request.wants_krr:
        k = max(k, request.krr_subsample)
    reservoir = _Reservoir(k, gen)
    first = request.wants_krr and request.krr_rows == "first"
    head_feats: list[torch.Tensor] = []  # rule "first": k_rr's rows, the first of the stream in its order
    head_cond: list[torch.Tensor] = []

    # pass 1: reservoir subsample, row count, condition shape
    rows, dim, cond_dim, max_class, with_cond = 0, None, None, None, None
    for feats, cond in chunks():
        if device is None:
            device = feats.device
        feats, cond = _checked(feats, cond, dim, device)
        dim = feats.shape[1]
        if with_cond is None:
            with_cond = cond is not None
        elif with_cond != (cond is not None):
            raise RdmxError("some reference chunks carry conditions and others do not")
        if cond is not None and cond.numel():
            if cond.dtype == torch.long:
                max_class = max(int(cond.max()), -1 if max_class is None else max_class)
            else:
                cond_dim = cond.shape[1]
        reservoir.add(feats, cond)
        if first and rows < request.krr_subsample:
            take = request.krr_subsample - rows
            head_feats.append(feats[:take].clone())
            if cond is not None:
                head_cond.append(cond[:take].clone())
        rows += feats.shape[0]
    if rows < 2:
        raise RdmxError(f"a reference needs at least 2 real rows; the stream gave {rows}")
    if first and request.krr_subsample > rows:
        raise RdmxError(f"reference.rows = 'first' takes k_rr over the first estimator.krr_subsample = "
                        f"{request.krr_subsample:,} rows of the train pool, which has {rows:,}: lower "
                        f"estimator.krr_subsample to at most {rows:,}")
    if joint.kind != "marginal" and not with_cond:
        raise RdmxError(f"a {joint.kind}-joint reference needs conditions in the real data stream")

    perm = torch.randperm(reservoir.feats.shape[0], generator=gen).to(device)
    sub_feats = reservoir.feats[perm]
    sub_cond = None if reservoir.cond is None else reservoir.cond[perm]

    def head(n: int, dtype=torch.float32) -> torch.Tensor:
        c = None if sub_cond is None else sub_cond[:n]
        return combine(sub_feats[:n].to(dtype), c, params)

    base = request.sigma if request.sigma is not None else max(median_sigma(sub_feats[: request.sigma_subsample]), SIGMA_FLOOR)
    sigma = base * request.sigma_scale
    params = resolve_joint(joint, sigma, max_class)
    ref = Reference(
        dim=dim, rows=rows, sigma=sigma, scales=tuple(request.scales), joint=params, request=request,
        encoder_fingerprint=encoder_fingerprint, data_fingerprint=data_fingerprint,
        cond_dim=cond_dim if params["kind"] == "text" else None,
    )
    sigmas = ref.sigmas()
    if request.bank:
        ref.bank = sub_feats[: request.bank].clone()
        ref.bank_cond = None if sub_cond is None else sub_cond[: request.bank].clone()
    if nystrom:
        pool = min(rows, request.kmeans_subsample)
        if request.landmarks > pool:  # k-means on fewer rows than landmarks: every row is a landmark
            from rdmx.console import warn

            warn(f"estimator.landmarks = {request.landmarks} but the reference has {pool} rows to place them on: "
                 f"the Nyström attraction uses those {pool} rows as its landmarks (lower estimator.landmarks to "
                 f"silence this)")
        ref.landmarks = kmeans(
            head(request.kmeans_subsample), request.landmarks, iters=request.kmeans_iters, seed=request.seed
        ).contiguous()
    if request.wants_krr:
        if first:
            krr_cond = torch.cat(head_cond).to(device) if head_cond else None
            krr_rows = combine(torch.cat(head_feats).to(device, torch.float64), krr_cond, params)
        else:
            krr_rows = head(request.krr_subsample, torch.float64)
        with torch.no_grad():
            ref.k_rr = kernel_sum(krr_rows, None, sigmas, block_elems=block_elems) / krr_rows.shape[0] ** 2
    dj = ref.joint_dim
    if request.rff_features:
        rff_gen = torch.Generator().manual_seed(request.seed + 1)
        width = request.rff_features
        w = torch.randn(dj, width * len(sigmas), dtype=torch.float64, generator=rff_gen)
        for s, sig in enumerate(sigmas):
            w[:, s * width : (s + 1) * width] /= sig
        ref.rff_weight = w.float().to(device)
        ref.rff_bias = (torch.rand(width * len(sigmas), dtype=torch.float64, generator=rff_gen) * 2 * np.pi).float().to(device)

    # pass 2: streamed float64 sums over every row
    if nystrom or request.rff_features or request.moments:
        shift = head(request.sigma_subsample, torch.float64).mean(0)
        z = ref.landmarks.double() if nystrom else None
        z_sq = None if z is None else (z * z).sum(1)
        mu = torch.zeros(len(sigmas), 0 if z is None else z.shape[0], dtype=torch.float64, device=device)
        rff_sum = None if ref.rff_weight is None else torch.zeros(ref.rff_weight.shape[1], dtype=torch.float64, device=device)
        sx = torch.zeros(dj, dtype=torch.float64, device=device)
        sxx = torch.zeros(dj, dj, dtype=torch.float64, device=device) if request.moments else None
        seen = 0
        for feats, cond in chunks():
            feats, cond = _checked(feats, cond, dim, device)
            x = combine(feats.double(), cond, params)
            seen += x.shape[0]
            step = max(1, block_elems // max(mu.shape[1], 1))
            for start in range(0, x.shape[0], step):
                xb = x[start : start + step]
                if z is not None:
                    d2 = sq_dists(z, xb, None)
                    for s, sig in enumerate(sigmas):
                        mu[s] += torch.exp(d2 / (-2.0 * sig * sig)).sum(1)
                if rff_sum is not None:
                    proj = xb @ ref.rff_weight.double() + ref.rff_bias.double()
                    rff_sum += _rff_scale(request.rff_features) * torch.cos(proj).sum(0)
                if sxx is not None:
                    xc = xb - shift
                    sx += xc.sum(0)
                    sxx += xc.T @ xc
        if seen != rows:
            raise RdmxError(f"the real stream gave {rows} rows in pass 1 and {seen} in pass 2; it must be re-iterable")
        if z is not None:
            mu /= rows
            gram = torch.exp(sq_dists(z, z, z_sq)[None] / (-2.0 * torch.tensor(sigmas, dtype=torch.float64, device=device)[:, None, None] ** 2))
            gram += NYSTROM_RIDGE * torch.eye(z.shape[0], dtype=torch.float64, device=device)
            chol = torch.linalg.cholesky(gram)
            ref.alpha = torch.cholesky_solve(mu[..., None], chol)[..., 0].float().contiguous()
        if rff_sum is not None:
            ref.rff_mean = rff_sum / rows
        if sxx is not None:
            mean_c = sx / rows
            ref.mean = mean_c + shift
            ref.cov = (sxx - rows * torch.outer(mean_c, mean_c)) / (rows - 1)
    return ref


def _rff_scale(features: int) -> float:
    return float(np.sqrt(2.0 / features))


# ---------------------------------------------------------------------------- save / load
def save_reference(ref: Reference, path: str | os.PathLike) -> Path:
    """Write ``path/reference.safetensors`` then ``path/manifest.json``, each atomically.
    The manifest (written last) carries the tensor file's sha256 and its own, so a half-written
    or edited bundle is never taken for a complete one."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.detach().cpu().contiguous() for n, t in ref.tensors().items()}
    (path / MANIFEST_FILE).unlink(missing_ok=True)  # a bundle being rewritten is never taken for complete
    atomic_write(path / TENSORS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    write_sealed_json(path / MANIFEST_FILE, {**ref.manifest(), "tensors_sha256": file_sha256(path / TENSORS_FILE)})
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON manifest of a saved bundle."""
    file = Path(path) / MANIFEST_FILE
    if not file.exists():
        raise BundleMismatchError(f"no reference bundle at {path} (missing {MANIFEST_FILE})")
    manifest = read_sealed_json(file, what="a reference bundle manifest", remedy=REBUILD)
    if manifest.get("format") != FORMAT:
        raise BundleMismatchError(f"{file}: unknown bundle format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def verify_bundle(path: str | os.PathLike) -> dict[str, Any]:
    """The verified manifest of a bundle whose tensor file matches it (IntegrityError otherwise)."""
    path = Path(path)
    manifest = read_manifest(path)
    tensor_file = path / TENSORS_FILE
    if not tensor_file.is_file() or file_sha256(tensor_file) != manifest.get("tensors_sha256"):
        raise IntegrityError(tensor_file, "does not match the checksum in its manifest (corrupt or partial)",
                             "a reference bundle", REBUILD)
    return manifest


def load_reference(
    path: str | os.PathLike, *, encoder_fingerprint: str, data_fingerprint: str, device: str | torch.device = "cpu"
) -> Reference:
    """Load a bundle, refusing one built for another encoder or other data."""
    from safetensors.torch import load_file

    path = Path(path)
    manifest = verify_bundle(path)
    for what, want in (("encoder", encoder_fingerprint), ("data", data_fingerprint)):
        have = manifest[f"{what}_fingerprint"]
        if have != want:
            raise BundleMismatchError(
                f"reference bundle {path} was built for {what} fingerprint {have}, but the {what} in use "
                f"has fingerprint {want}; rebuild the reference (rdmx reference) or point to the right bundle"
            )
    tensor_file = path / TENSORS_FILE
    try:
        tensors = load_file(str(tensor_file), device=str(device))
    except Exception as exc:  # noqa: BLE001
        raise IntegrityError(tensor_file, f"not readable ({type(exc).__name__}: {exc})", "a reference bundle",
                             REBUILD) from None
    return Reference(
        dim=manifest["dim"], rows=manifest["rows"], sigma=manifest["sigma"], scales=tuple(manifest["scales"]),
        joint=manifest["joint"], request=ReferenceRequest.from_dict(manifest["request"]),
        encoder_fingerprint=manifest["encoder_fingerprint"], data_fingerprint=manifest["data_fingerprint"],
        cond_dim=manifest["cond_dim"], version=manifest["rdmx_version"], **tensors,
    )
