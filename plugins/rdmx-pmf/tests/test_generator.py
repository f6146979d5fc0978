"""The pMF generator behind rdmx's interface: the one-step sampler, noise, autocast, class
conditioning, determinism, shard units, and exact gradients through gradient caching."""

from __future__ import annotations

import pytest
import torch

from rdmx.registry import Entry
from rdmx.testing import registered_entries, tiny_conv
from rdmx.train.generator import DataInfo
from rdmx.train.gradcache import cached_backward, direct_backward
from rdmx_pmf.plugin import rdmx_register_generators

ENTRIES = registered_entries(rdmx_register_generators, "rdmx-pmf", kind="generators")
INFO = DataInfo((3, 32, 32), 10, tuple(f"c{i}" for i in range(10)))


def build(name="pmf-h", info=INFO, **cfg) -> torch.nn.Module:
    cfg = {"tiny": True, "zero_init": False, **cfg}
    e: Entry = ENTRIES[name]
    return e.build(cfg, info)


def draw(gen, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return gen.sample_noise(n, g), gen.sample_conditions(n, g)


def test_registered_presets_and_defaults():
    assert set(ENTRIES) == {"pmf-b", "pmf-l", "pmf-h"}
    h = ENTRIES["pmf-h"].config()
    assert (h.weights, h.noise_scale, h.guidance, h.interval, h.steps, h.autocast) == ("pretrained", 1.0, 7.0, (0.2, 0.6), 1, "bf16")
    assert ENTRIES["pmf-b"].config().weights == ENTRIES["pmf-l"].config().weights == "random"
    meta = ENTRIES["pmf-h"].meta
    assert meta["checkpoint"] == "Lanl11/pMF-H-FDSIM-imagenet256-sigma07-4k/model.pth"
    assert meta["params"] == 955_508_992 and meta["resolution"] == 256 and meta["classes"] == 1000
    with pytest.raises(ValueError, match="t_min <= t_max"):
        ENTRIES["pmf-h"].config(interval=(0.7, 0.2))


def test_one_step_sampler_is_x_prediction_with_the_runs_conditions():
    gen = build(autocast="off")
    seen = {}
    forward = gen.net.forward

    def spy(z, h, omega, t_min, t_max, y):
        seen.update(h=h, omega=omega, t_min=t_min, t_max=t_max, y=y)
        out = forward(z, h, omega, t_min, t_max, y)
        seen["x_hat"] = out
        return out

    gen.net.forward = spy
    z, y = draw(gen)
    x = gen(z, y)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    for key, value in (("h", 1.0), ("omega", 7.0), ("t_min", 0.2), ("t_max", 0.6)):
        assert torch.equal(seen[key], torch.full((4,), value)), key
    assert torch.equal(seen["y"], y)
    # z − u(z, t=1, h=1) with u = (z − x̂)/1, then [−1, 1] → [0, 1] and clamp
    want = ((z - (z - seen["x_hat"])) * 0.5 + 0.5).clamp(0, 1)
    assert torch.equal(x, want)
    torch.testing.assert_close(x, (seen["x_hat"] * 0.5 + 0.5).clamp(0, 1), rtol=0, atol=1e-6)
    assert 0.0 < x.min() and x.max() < 1.0  # the test's random network is not saturated


def test_two_step_sampler_is_euler_on_the_average_velocity():
    gen = build(autocast="off", steps=2, guidance=3.0, interval=(0.1, 0.9))
    z, y = draw(gen)
    n = z.shape[0]

    def net(zt, h):
        f = lambda v: torch.full((n,), v)  # noqa: E731
        return gen.net(zt, f(h), f(3.0), f(0.1), f(0.9), y)

    z1 = z - 0.5 * (z - net(z, 0.5)) / 1.0  # t = 1
    z2 = z1 - 0.5 * (z1 - net(z1, 0.5)) / 0.5  # t = 0.5
    torch.testing.assert_close(gen(z, y), (z2 * 0.5 + 0.5).clamp(0, 1), rtol=0, atol=1e-6)


def test_noise_scale_default_is_unscaled_and_two_is_available():
    g = torch.Generator().manual_seed(0)
    unit = build().sample_noise(64, g)
    assert unit.shape == (64, 3, 32, 32)
    assert unit.std().item() == pytest.approx(1.0, abs=0.01)
    scaled = build(noise_scale=2.0).sample_noise(64, torch.Generator().manual_seed(0))
    assert torch.equal(scaled, 2.0 * unit)


def test_accelerator_noise_is_a_function_of_the_callers_generator():
    from rdmx_pmf.generator import draw_normal

    def on_device(seed):
        g = torch.Generator().manual_seed(seed)
        return draw_normal((4, 3, 8, 8), g, torch.device("cpu"), on_device=True), g

    a, ga = on_device(0)
    b, gb = on_device(0)
    assert torch.equal(a, b) and torch.equal(ga.get_state(), gb.get_state())  # same on every rank
    assert not torch.equal(a, on_device(1)[0])
    assert not torch.equal(a, draw_normal((4, 3, 8, 8), torch.Generator().manual_seed(0), torch.device("cpu"), False))
    assert a.std().item() == pytest.approx(1.0, abs=0.15)


def test_bf16_autocast_stays_close_to_float32_and_keeps_float32_parameters():
    gen = build()
    z, y = draw(gen)
    x_bf16 = gen(z, y)
    gen.config.autocast = "off"
    x_f32 = gen(z, y)
    assert all(p.dtype == torch.float32 for p in gen.parameters())
    assert x_bf16.dtype == torch.float32
    err = (x_bf16 - x_f32).abs().max().item()
    assert 0 < err < 0.05  # bf16 really ran, and agrees to bf16 precision


def test_class_conditioning():
    gen = build(autocast="off")
    z, _ = draw(gen, n=1)
    z = z.expand(3, -1, -1, -1)
    x = gen(z, torch.tensor([2, 2, 7]))
    assert torch.equal(x[0], x[1])
    assert (x[0] - x[2]).abs().max() > 1e-3
    c = gen.sample_conditions(10_000, torch.Generator().manual_seed(0))
    assert c.min() == 0 and c.max() == 9 and torch.bincount(c).min() > 900  # uniform over the 10 classes
    with pytest.raises(ValueError, match="class-conditional"):
        gen(z, None)


def test_unconditional_data_uses_the_no_class_row():
    gen = build(info=DataInfo((3, 32, 32), 0))
    assert gen.net.y_embedder.embedding_table.embedding.weight.shape[0] == 1
    z, y = draw(gen)
    assert y is None and gen(z, None).shape == (4, 3, 32, 32)


def test_same_seed_same_generator_other_seed_differs():
    a, b, c = build(seed=3), build(seed=3), build(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    z, y = draw(a)
    assert torch.equal(a(z, y), b(z, y))
    state = torch.get_rng_state()
    build(seed=5)
    assert torch.equal(state, torch.get_rng_state())  # the init does not move the global RNG


def test_shard_units_are_the_transformer_blocks():
    gen = build()
    units = gen.shard_units()
    assert len(units) == 2 and units == [*gen.net.shared_blocks, *gen.net.u_heads]
    in_units = {id(p) for u in units for p in u.parameters()}
    block_params = {id(p) for n, p in gen.named_parameters() if ".shared_blocks." in n or ".u_heads." in n}
    assert in_units == block_params
    real = ENTRIES["pmf-h"].config(weights="random")
    with torch.device("meta"):
        from rdmx_pmf.generator import PMFGenerator
        from rdmx_pmf.presets import PRESETS

        big = PMFGenerator(real, DataInfo((3, 256, 256), 1000), PRESETS["pmf-h"])
    assert len(big.shard_units()) == 48
    assert sum(p.numel() for u in big.shard_units() for p in u.parameters()) == 48 * 19_676_320


def test_gradient_caching_reaches_every_parameter_exactly():
    gen = build(autocast="off")
    encoders = {"a": tiny_conv(1, 8, 4), "b": tiny_conv(2, 6, 4)}
    z, y = draw(gen, n=8)

    def loss_fn(feats, cond):  # couples the whole batch, like the MMD repulsion
        raws = {k: torch.cdist(f, f).pow(2).mean() - 2 * f.mean(0).norm() for k, f in feats.items()}
        return sum(raws.values()), raws

    def grads(fn, **kw):
        gen.zero_grad(set_to_none=True)
        fn(gen, encoders, z, y, loss_fn, **kw)
        return {n: p.grad.clone() for n, p in gen.named_parameters()}

    direct = grads(direct_backward)
    cached = grads(cached_backward, micro_batch=3)
    assert set(direct) == {n for n, p in gen.named_parameters() if p.requires_grad}
    for name, g in direct.items():
        assert g.abs().sum() > 0, f"{name} receives no gradient"
        torch.testing.assert_close(cached[name], g, rtol=2e-4, atol=1e-7, msg=name)
