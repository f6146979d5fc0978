"""Config models of the comparison axis (torch-free: imported when plugins register).

Every estimator has its own model; ``JointSpec`` says which law is matched (marginal,
class-joint or text-joint). Field defaults follow the iRDM protocol.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from rdmx.registry import ComponentConfig


def _positive_scales(value: list[float]) -> list[float]:
    if not value or any(s <= 0 for s in value):
        raise ValueError("scales must be a non-empty list of positive bandwidth multipliers")
    return [float(s) for s in value]


class EstimatorConfig(ComponentConfig):
    """Options every builtin estimator has."""

    self_normalise: bool = Field(
        True, description="train on raw / (|raw|.detach() + 1e-7) (iRDM); false: on the raw distance (the spiral toy)")


class KernelConfig(EstimatorConfig):
    """Gaussian kernel k(x, y) = exp(-|x - y|^2 / (2 (sigma * scale)^2)), sigma by the median heuristic."""

    sigma_scale: float = Field(1.0, gt=0, description="multiplier of the median-heuristic (or fixed) sigma")
    sigma: float | None = Field(
        None, gt=0, description="a fixed base bandwidth instead of the median heuristic (Table 4's ablation: 65)")
    scales: list[float] = Field(default_factory=lambda: [1.0], description="bandwidth multipliers (multi-scale sums them)")
    sigma_subsample: int = Field(10_000, ge=2, description="real rows used for the median heuristic")
    block_elems: int = Field(1 << 24, ge=1, description="kernel entries computed per block (memory bound)")

    _check_scales = field_validator("scales")(_positive_scales)


class MMDNystromConfig(KernelConfig):
    """MMD^2 with exact repulsion and frozen Nystrom attraction (iRDM eq. 3)."""

    landmarks: int = Field(4096, ge=1, description="Nystrom landmarks m")
    kmeans_iters: int = Field(20, ge=0, description="Lloyd iterations (0 = landmarks are random real rows)")
    kmeans_subsample: int = Field(200_000, ge=1, description="real rows the k-means is fitted on")
    krr_subsample: int = Field(
        100_000, ge=1, description="real rows for the constant E k(r, r') (V-statistic, diagonal kept; the release: 100,000)")
    statistic: Literal["v", "u"] = Field("v", description="repulsion: V-statistic (diagonal kept) or U-statistic")


class MMDExactConfig(KernelConfig):
    """MMD^2 against a fresh real batch of the generated batch's size, drawn from the bank."""

    bank: int = Field(100_000, ge=1, description="real rows kept in the reference bank")
    statistic: Literal["v", "u"] = "v"
    real_term: Literal["sample", "reference"] = Field(
        "sample", description="the real-real term: sample = the drawn real batch's own kernel mean (a V- or "
        "U-statistic, as the repulsion); reference = the reference's constant k_rr, as the paper's release computes "
        "its exact arm (no gradient either way: it moves the loss value, so self-normalisation and the controller)")
    krr_subsample: int = Field(
        100_000, ge=1, description="with real_term = 'reference': real rows of the constant k_rr (reference.rows "
        "picks which)")


class MMDRFFConfig(KernelConfig):
    """MMD^2 in a random-Fourier-feature space with a frozen real mean feature."""

    features: int = Field(4096, ge=1, description="random features D per scale")


class FDConfig(EstimatorConfig):
    """Frechet distance to the frozen real mean and covariance."""

    eps: float = Field(1e-12, ge=0, description="floor of the eigenvalues under the square root")


class SWConfig(EstimatorConfig):
    """Sliced Wasserstein-2 against a real bank batch, projections redrawn every call."""

    projections: int = Field(1024, ge=1)
    bank: int = Field(100_000, ge=1, description="real rows kept in the reference bank")
    squared: bool = Field(True, description="return SW_2^2 (else SW_2)")


class DriftingConfig(EstimatorConfig):
    """The drifting field of Deng et al. 2026 (arXiv 2602.04770), by its reference implementation's rule."""

    self_normalise: bool = Field(False, description="the field is used raw (its own scale normalisation)")
    temperatures: list[float] = Field(default_factory=lambda: [0.02, 0.05, 0.2])
    bank: int = Field(100_000, ge=1, description="real rows kept in the reference bank")
    positives: int = Field(0, ge=0, description="real positives per call (0 = the generated batch size)")
    normalise_features: bool = Field(True, description="scale features so the mean distance is sqrt(dim)")
    normalise_drift: bool = Field(True, description="scale each temperature's field to a mean squared entry of 1")
    affinity_floor: float = Field(1e-6, ge=0, description="floor of softmax_row·softmax_col before the square root")

    @field_validator("temperatures")
    @classmethod
    def _check_temps(cls, value: list[float]) -> list[float]:
        if not value or any(t <= 0 for t in value):
            raise ValueError("temperatures must be a non-empty list of positive numbers")
        return [float(t) for t in value]


class JointSpec(ComponentConfig):
    """Which law is matched. marginal: phi(x). class: [phi(x) | w * onehot(c)] with
    w = class_scale * sigma. text: [phi(x) | beta * tau(c)/|tau(c)|] with beta = sigma / s_txt.
    sigma is the kernel bandwidth of the image features (median heuristic x sigma_scale)."""

    kind: Literal["marginal", "class", "text"] = "marginal"
    class_scale: float = Field(1.0, gt=0, description="class one-hot weight relative to sigma")
    num_classes: int | None = Field(None, ge=1, description="class count (default: max class id + 1 in the data)")
    s_txt: float = Field(1.0, gt=0, description="text scale: beta = sigma_img / s_txt")
