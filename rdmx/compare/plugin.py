"""Registers the builtin estimators (torch-free: config models and "module:attr" factories)."""

from __future__ import annotations

from rdmx.compare import configs

ESTIMATORS = (
    ("mmd-nystrom", "rdmx.compare.mmd:MMDNystrom", configs.MMDNystromConfig,
     "MMD^2, exact repulsion over the global batch + frozen Nystrom attraction (iRDM default)"),
    ("mmd-exact", "rdmx.compare.mmd:MMDExact", configs.MMDExactConfig,
     "MMD^2 against a fresh same-size real batch from the reference bank"),
    ("mmd-rff", "rdmx.compare.mmd:MMDRFF", configs.MMDRFFConfig,
     "MMD^2 with frozen random Fourier features and real mean feature"),
    ("fd", "rdmx.compare.frechet:FrechetDistance", configs.FDConfig,
     "Frechet distance to the frozen real mean and covariance"),
    ("sw", "rdmx.compare.sliced:SlicedWasserstein", configs.SWConfig,
     "sliced Wasserstein-2 against a real bank batch, projections redrawn each call"),
    ("drifting", "rdmx.compare.drifting:Drifting", configs.DriftingConfig,
     "drifting field of Deng et al. 2026 (not self-normalised)"),
)


def register_estimators(register) -> None:
    for name, factory, config, description in ESTIMATORS:
        register(name, factory, config=config, description=description, axis="comparison")
