"""Reference requests, estimator registration and the config models."""

import sys
import subprocess

import pytest
import torch
from pydantic import ValidationError

from rdmx.compare import configs
from rdmx.compare.base import Estimator, ReferenceRequest
from rdmx.compare.plugin import register_estimators
from rdmx.errors import RdmxError
from rdmx.registry import Registry, make_register


def test_merge_takes_the_union():
    a = ReferenceRequest(landmarks=1024, kmeans_subsample=5000, scales=(1.0, 0.5), krr_subsample=100)
    b = ReferenceRequest(landmarks=0, bank=300, moments=True, rff_features=64, scales=(2.0,), sigma_subsample=20_000)
    m = a.merge(b)
    assert m.landmarks == 1024 and m.kmeans_subsample == 5000 and m.krr_subsample == 100  # b wants no Nystrom
    assert m.bank == 300 and m.moments and m.rff_features == 64 and m.sigma_subsample == 20_000
    assert m.scales == (0.5, 1.0, 2.0)
    assert m == b.merge(a)
    assert b.merge(ReferenceRequest(landmarks=0)).kmeans_subsample == 0
    with pytest.raises(RdmxError, match="sigma_scale"):
        a.merge(ReferenceRequest(sigma_scale=0.25))
    with pytest.raises(RdmxError, match="seed"):
        a.merge(ReferenceRequest(seed=1))


def test_fingerprint_and_round_trip():
    a = ReferenceRequest(scales=(2.0, 1.0))
    assert a.fingerprint() == ReferenceRequest(scales=(1.0, 2.0, 1.0)).fingerprint()
    assert a.fingerprint() != ReferenceRequest(scales=(1.0,)).fingerprint()
    assert ReferenceRequest.from_dict(a.to_dict()) == a


def test_every_estimator_registers_builds_and_requests():
    registry = Registry("estimators")
    staged = []
    register_estimators(make_register(registry, "rdmx", "0", staged))
    names = {e.name for e in staged}
    assert names == {"mmd-nystrom", "mmd-exact", "mmd-rff", "fd", "sw", "drifting"}
    for entry in staged:
        assert isinstance(entry.factory, str)
        est = entry.build({})
        assert isinstance(est, Estimator)
        assert isinstance(est.request(), ReferenceRequest)
        assert est.self_normalise is (entry.name != "drifting")
    nystrom = next(e for e in staged if e.name == "mmd-nystrom").build({"landmarks": 16, "scales": [0.5, 1]})
    assert nystrom.request().landmarks == 16 and nystrom.request().scales == (0.5, 1.0)
    with pytest.raises(ValidationError):
        next(e for e in staged if e.name == "sw").build({"projection": 3})


def test_registration_is_torch_free():
    code = "import sys, rdmx.compare.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_validation():
    with pytest.raises(ValidationError):
        configs.MMDNystromConfig(scales=[])
    with pytest.raises(ValidationError):
        configs.MMDNystromConfig(scales=[1.0, -1.0])
    with pytest.raises(ValidationError):
        configs.DriftingConfig(temperatures=[0.0])
    with pytest.raises(ValidationError):
        configs.JointSpec(kind="pairs")
    assert configs.MMDNystromConfig().landmarks == 4096 and configs.MMDNystromConfig().kmeans_iters == 20


def test_self_normalisation_is_switchable_per_estimator():
    from rdmx.compare.configs import DriftingConfig, MMDNystromConfig, SWConfig
    from rdmx.compare.drifting import Drifting
    from rdmx.compare.mmd import MMDNystrom
    from rdmx.compare.sliced import SlicedWasserstein
    from rdmx.train.objective import make_loss_fn

    assert MMDNystrom(MMDNystromConfig()).self_normalise is True
    assert MMDNystrom(MMDNystromConfig(self_normalise=False)).self_normalise is False
    assert Drifting(DriftingConfig(self_normalise=True)).self_normalise is True

    raw = torch.tensor(0.04, dtype=torch.float64, requires_grad=True)

    class Fixed(SlicedWasserstein):
        def loss(self, feats, ref, cond=None, *, generator=None):
            return raw * 1.0

    norm = 0.04 + 1e-7  # raw / (|raw| + 1e-7)
    for flag, want_value, want_grad in ((True, 2.0 * 0.04 / norm, 2.0 / norm), (False, 2.0 * 0.04, 2.0)):
        raw.grad = None
        loss, _ = make_loss_fn(Fixed(SWConfig(self_normalise=flag)), {"e": None}, {"e": 2.0})({"e": torch.zeros(1)}, None)
        loss.backward()
        assert float(loss) == pytest.approx(want_value, rel=1e-6)
        assert float(raw.grad) == pytest.approx(want_grad, rel=1e-6)
