"""FID-50K the way the literature computes it, so rdmx's generators sit in the same table as
published ones (the paper itself prefers SW_rK, which no single encoder can be fitted to).

* extractor: torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF 2015-12-05 Inception graph,
  its TF-1 bilinear resize to 299, (x − 128) / 128), 2048-d pool3 features;
* samples: the generator's [0, 1] images rounded to uint8 (what a saved PNG / ADM ``.npz`` holds),
  ``n`` = 50,000 of them, streamed through :meth:`FidMetric.observe` chunk by chunk;
* reference: mean and covariance of the same features over the real split (cached under
  ``cache_dir`` by data fingerprint and weights), or an ``.npz`` with ``mu`` / ``sigma``;
* FID = |μ_g − μ_r|² + tr Σ_g + tr Σ_r − 2 tr √(Σ_g Σ_r), by torch-fidelity's own formula, in float64.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.evaluate.base import EvalContext, Metric
from rdmx.fingerprint import fingerprint
from rdmx.samples import to_uint8
from rdmx_fid.plugin import FIDELITY_CHECKPOINT, FIDELITY_SOURCE, FidConfig

FEATURE = "2048"


def fidelity_inception(weights: str, seed: int = 0) -> tuple[torch.nn.Module, str]:
    """torch-fidelity's Inception-v3 and a tag naming its weights ("pretrained" from the torch hub
    cache, a file path, or "random" from ``seed``: the same architecture, for tests)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights == "random":
        from rdmx.represent.presets import seeded
        from rdmx_fid.encoder import fid_inception  # the same module names as torch-fidelity's

        with seeded(seed):
            state = fid_inception().state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "random.pth"
            torch.save(state, path)
            return FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE], str(path)), f"random-{seed}"
    if weights == "pretrained":
        found = FIDELITY_SOURCE.locate()
        if found is None:
            raise WeightsMissingError(
                f"metric 'fid': torch-fidelity's Inception weights are not in the local cache "
                f"({FIDELITY_SOURCE.describe()}). Run `rdmx weights fetch fid` on a machine with network access, "
                f'or set weights = "<path to {FIDELITY_CHECKPOINT}>"'
            )
        path = found[0]
    else:
        path = Path(weights)
        if not path.is_file():
            raise RdmxError(f"metric 'fid': weights file {path} does not exist")
    tag = f"{path.name}-{path.stat().st_size}"
    return FeatureExtractorInceptionV3("inception-v3-compat", [FEATURE], str(path)), tag


def statistics(features: np.ndarray) -> dict[str, np.ndarray]:
    """Mean and (unbiased) covariance in float64."""
    f = np.asarray(features, dtype=np.float64)
    return {"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)}


def frechet_inception_distance(gen: dict[str, np.ndarray], real: dict[str, np.ndarray]) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    as64 = lambda s: {k: np.asarray(s[k], dtype=np.float64) for k in ("mu", "sigma")}  # noqa: E731
    return float(fid_statistics_to_metric(as64(gen), as64(real), verbose=False)[KEY_METRIC_FID])


class FidMetric(Metric):
    """Streams ``n`` generated samples through torch-fidelity's Inception, then compares statistics."""

    name = "fid"
    requires = ("samples",)

    def __init__(self, config: FidConfig | None = None):
        self.config = config or FidConfig()
        self.stream_samples = self.config.n
        self._net: torch.nn.Module | None = None
        self._tag = ""
        self._feats: list[torch.Tensor] = []
        self._seen = 0

    def _extractor(self, device: torch.device) -> torch.nn.Module:
        if self._net is None:
            self._net, self._tag = fidelity_inception(self.config.weights, self.config.seed)
        return self._net.to(device)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """pool3 features of [0, 1] images, quantised to uint8 first (float32, CPU)."""
        net = self._extractor(images.device)
        out = []
        for s in range(0, images.shape[0], self.config.batch_size):
            out.append(net(to_uint8(images[s : s + self.config.batch_size]))[0].float().cpu())
        return torch.cat(out)

    def observe(self, samples: torch.Tensor, labels=None) -> None:
        """Take the next chunk of generated samples (up to ``n`` in all)."""
        take = min(samples.shape[0], self.config.n - self._seen)
        if take > 0:
            self._feats.append(self.features(samples[:take]))
            self._seen += take

    def real_statistics(self, data, device: torch.device) -> dict[str, np.ndarray]:
        c = self.config
        if c.stats is not None:
            with np.load(c.stats) as f:
                if "mu" not in f or "sigma" not in f:
                    raise RdmxError(f"metric 'fid': {c.stats} needs arrays 'mu' and 'sigma'")
                return {"mu": f["mu"], "sigma": f["sigma"]}
        if data is None:
            raise RdmxError("metric 'fid' needs the real data (or `stats`) for the reference statistics")
        self._extractor(device)
        key = fingerprint({"data": data.fingerprint(), "split": c.real, "weights": self._tag, "feature": FEATURE})
        path = Path(c.cache_dir) / "fid" / f"{key}.safetensors"
        if path.is_file():
            from safetensors.numpy import load_file

            return load_file(str(path))
        from rdmx.threads import worker_init

        loader = torch.utils.data.DataLoader(getattr(data, c.real), batch_size=c.batch_size, worker_init_fn=worker_init)
        feats = torch.cat([self.features(images.to(device)) for images, _ in loader])
        stats = statistics(feats.numpy())
        from rdmx.reference.extract import atomic_save_tensors

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_tensors(path, {k: torch.from_numpy(v) for k, v in stats.items()},
                            {"rows": str(len(feats)), "split": c.real, "weights": self._tag})
        return stats

    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        self.check(ctx)
        if self._seen < 2:  # nothing streamed: take the context's samples
            self.observe(ctx.samples)
        device = ctx.samples.device if torch.is_tensor(ctx.samples) else torch.device("cpu")
        gen = statistics(torch.cat(self._feats).numpy())
        seen, self._feats, self._seen = self._seen, [], 0
        value = frechet_inception_distance(gen, self.real_statistics(getattr(ctx, "data", None), device))
        # fid_samples labels the value: the literature's FID-50K uses 50,000
        return {"fid": value, "fid_samples": float(seen)}
