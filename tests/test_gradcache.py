"""Gradient caching equals the full-batch gradient, for every estimator and several encoders,
with the loss gradient cached at the features or at the image (one encoder alive at a time)."""

from __future__ import annotations

import pytest
import torch

from rdmx.compare.configs import JointSpec
from rdmx.plugins import get_plugins
from rdmx.reference.bundle import build_reference
from rdmx.testing import tiny_conv
from rdmx.train.gradcache import PHASES, cached_backward, direct_backward
from rdmx.train.memory import SavedTensorMeter
from rdmx.train.objective import make_loss_fn, self_normalise

SMALL = {
    "mmd-nystrom": {"landmarks": 16, "kmeans_iters": 3},
    "mmd-exact": {"bank": 64},
    "mmd-rff": {"features": 64},
    "fd": {},
    "sw": {"projections": 16, "bank": 64},
    "drifting": {"bank": 64},
}


class TinyGenerator(torch.nn.Module):
    """Noise (and class) → 1×8×8 image in [0, 1]; random but deterministic."""

    def __init__(self, dtype):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(3, 4)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 64))
        self.to(dtype)

    def forward(self, noise, cond=None):
        z = torch.cat([noise, self.embed(cond).to(noise.dtype)], 1)
        return torch.sigmoid(self.net(z)).view(-1, 1, 8, 8)


def encoders(dtype):
    entries = get_plugins().registry("encoders")
    a = entries.get("toy-conv").build({"seed": 1, "width": 4, "depth": 2, "dim": 6, "resolution": 8})
    b = entries.get("toy-conv").build({"seed": 2, "width": 3, "depth": 3, "dim": 5, "resolution": 8, "pooling": "max"})
    c = entries.get("pixels").build({"resolution": 4})
    d = tiny_conv(seed=3, dim=7, width=4)  # 3-channel, bilinear resize to 12 px
    return {"a": a.to(dtype), "b": b.to(dtype), "c": c.to(dtype), "d": d.to(dtype)}


def references(est, encs, joint, dtype=torch.float64):
    torch.manual_seed(1)
    real = torch.rand(96, 1, 8, 8, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, 3, (96,))
    refs = {}
    for name, enc in encs.items():
        with torch.no_grad():
            feats = enc(real).float()
        refs[name] = build_reference(
            lambda f=feats: iter([(f[:50], labels[:50]), (f[50:], labels[50:])]),
            est.request(), joint=joint, encoder_fingerprint=enc.fingerprint, data_fingerprint="test",
        )
    return refs


def gradients(est, refs, encs, gen, cond, micro, dtype, mode="image", weights=None):
    weights = weights or {"a": 1.0, "b": 0.5, "c": 2.0, "d": 0.7}
    loss_fn = make_loss_fn(est, refs, weights, lambda: torch.Generator().manual_seed(5))
    noise = torch.randn(12, 4, generator=torch.Generator().manual_seed(3), dtype=dtype)
    gen.zero_grad()
    if micro:
        res = cached_backward(gen, encs, noise, cond, loss_fn, micro, mode=mode)
    else:
        res = direct_backward(gen, encs, noise, cond, loss_fn)
    return torch.cat([p.grad.flatten() for p in gen.parameters()]), res


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("dtype, tol, mode", [(torch.float64, 1e-10, "image"), (torch.float32, 1e-5, "image"),
                                              (torch.float64, 1e-10, "features")])
def test_cached_equals_full_batch(name, dtype, tol, mode):
    est = get_plugins().registry("estimators").get(name).build(SMALL[name])
    encs = encoders(dtype)
    joint = JointSpec(kind="class") if name == "mmd-nystrom" else None
    refs = references(est, encs, joint, dtype)
    gen = TinyGenerator(dtype)
    cond = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(4))
    full, r_full = gradients(est, refs, encs, gen, cond, 0, dtype)
    for micro in (4, 5):  # equal and ragged chunks
        cached, r_cached = gradients(est, refs, encs, gen, cond, micro, dtype, mode)
        rel = (cached - full).norm() / full.norm()
        assert full.norm() > 0
        assert rel < tol, (name, micro, mode, float(rel))
        assert torch.allclose(r_full.loss, r_cached.loss, rtol=tol)


def test_gradient_scale_and_stochastic_generator_replay():
    """A generator that draws its own randomness is replayed exactly in phase 3."""

    class Noisy(TinyGenerator):
        def forward(self, noise, cond=None):
            return super().forward(noise + 0.3 * torch.randn_like(noise), cond)

    dtype = torch.float64
    est = get_plugins().registry("estimators").get("mmd-nystrom").build(SMALL["mmd-nystrom"])
    encs = encoders(dtype)
    refs = references(est, encs, None)
    gen = Noisy(dtype)
    cond = torch.zeros(12, dtype=torch.long)
    torch.manual_seed(11)
    full, _ = gradients(est, refs, encs, gen, cond, 0, dtype)
    torch.manual_seed(11)
    cached, _ = gradients(est, refs, encs, gen, cond, 4, dtype)
    # phase 1 consumes the same draws as the direct pass, chunk by chunk; phase 3 replays them
    assert (cached - full).norm() / full.norm() < 1e-10


def test_self_normalisation_value_and_gradient():
    raw = torch.tensor(0.25, dtype=torch.float64, requires_grad=True)
    out = self_normalise(raw * 3)
    out.backward()
    assert abs(out.item() - 0.75 / (0.75 + 1e-7)) < 1e-15
    assert abs(float(raw.grad) - 3 / (0.75 + 1e-7)) < 1e-12


def _setup(dtype=torch.float64):
    est = get_plugins().registry("estimators").get("mmd-nystrom").build(SMALL["mmd-nystrom"])
    encs = encoders(dtype)
    refs = references(est, encs, JointSpec(kind="class"), dtype)
    gen = TinyGenerator(dtype)
    cond = torch.randint(0, 3, (12,), generator=torch.Generator().manual_seed(4))
    return est, encs, refs, gen, cond


def test_image_caching_keeps_one_encoder_graph_alive():
    """Counting the tensors autograd saves, per encoder: caching at the image never holds two
    encoders' graphs at once, caching at the features holds all four (so the count can fail)."""
    est, encs, refs, gen, cond = _setup()
    owners = {"generator": gen, **encs}
    alive = {}
    for mode in ("image", "features"):
        with SavedTensorMeter(owners) as meter:
            gradients(est, refs, encs, gen, cond, 4, torch.float64, mode)
        alive[mode] = meter
        assert meter.live == 0  # every graph freed after the step
        assert set(meter.peak_by_owner) >= set(owners)
    assert alive["image"].max_concurrent == 2  # the generator chunk + one encoder
    assert alive["features"].max_concurrent == 1 + len(encs)
    assert alive["image"].peak < alive["features"].peak


def test_image_caching_is_bit_identical_to_feature_caching_in_float32():
    """Replaying encoders in reverse order sums the image gradient as one autograd pass does."""
    est, encs, refs, gen, cond = _setup(torch.float32)
    image, _ = gradients(est, refs, encs, gen, cond, 4, torch.float32, "image")
    features, _ = gradients(est, refs, encs, gen, cond, 4, torch.float32, "features")
    assert torch.equal(image, features)


def test_zero_weight_encoders_are_skipped_and_phases_reported():
    est, encs, refs, gen, cond = _setup()
    weights = {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}
    seen = []

    class Phase:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            seen.append(self.name)

        def __exit__(self, *exc):
            return False

    calls = {k: 0 for k in encs}
    hooks = [enc.register_forward_hook(lambda m, a, o, k=k: calls.__setitem__(k, calls[k] + 1))
             for k, enc in encs.items()]
    loss_fn = make_loss_fn(est, refs, weights, lambda: torch.Generator().manual_seed(5))
    noise = torch.randn(12, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gen.zero_grad()
    cached_backward(gen, encs, noise, cond, loss_fn, 4, phase=Phase)
    cached = torch.cat([p.grad.flatten() for p in gen.parameters()])
    for h in hooks:
        h.remove()
    assert calls == {"a": 6, "b": 3, "c": 3, "d": 3}  # 3 chunks in phase 1; phase 3 only for "a"
    assert set(seen) == set(PHASES) and seen.count("loss") == 1 and seen.count("regenerate") == 3
    full, _ = gradients(est, refs, encs, gen, cond, 0, torch.float64, weights=weights)
    assert (cached - full).norm() / full.norm() < 1e-10
