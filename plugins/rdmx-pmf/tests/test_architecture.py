"""The MiT network: the released checkpoint's parameter layout, the parameter count, and the
forward pass against an independent float64 re-statement of the release's operations."""

from __future__ import annotations

import math

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx_pmf.mit import MiT, apply_rope, rope_2d
from rdmx_pmf.presets import PRESETS, TINY
from rdmx_pmf.weights import check_layout, normalise_keys


def release_layout(depth, hidden, heads, head_depth, bottleneck, mlp, patch=16, image=256, classes=1000,
                   tokens=(8, 4, 4, 2)) -> dict[str, tuple[int, ...]]:
    """Key → shape of the released pMFDenoiser state dict (``net.`` = its MiT), written out from the
    release's module definitions (mit.py / commons.py / pmfh_fdsim.py: rope_2d, learned_pe,
    disable_v_head), not from this package."""
    cls_t, time_t, cfg_t, int_t = tokens
    grid = image // patch
    head_dim = hidden // heads
    out = {
        "net.x_embedder.proj1.weight": (bottleneck, 3, patch, patch),
        "net.x_embedder.proj1.bias": (bottleneck,),
        "net.x_embedder.proj2.weight": (hidden, bottleneck, 1, 1),
        "net.x_embedder.proj2.bias": (hidden,),
        "net.y_embedder.embedding_table.embedding.weight": (classes + 1, hidden),
        "net.time_tokens": (time_t, hidden),
        "net.class_tokens": (cls_t, hidden),
        "net.omega_tokens": (cfg_t, hidden),
        "net.t_min_tokens": (int_t, hidden),
        "net.t_max_tokens": (int_t, hidden),
        "net.pos_embed": (1, grid * grid + cls_t + time_t + cfg_t + 2 * int_t, hidden),
        "net.u_final_layer.norm.weight": (hidden,),
        "net.u_final_layer.linear.linear.weight": (patch * patch * 3, hidden),
        "net.u_final_layer.linear.linear.bias": (patch * patch * 3,),
    }
    for emb in ("h_embedder", "omega_embedder", "cfg_t_start_embedder", "cfg_t_end_embedder"):
        out[f"net.{emb}.mlp.0.linear.weight"] = (hidden, 256)
        out[f"net.{emb}.mlp.0.linear.bias"] = (hidden,)
        out[f"net.{emb}.mlp.2.linear.weight"] = (hidden, hidden)
        out[f"net.{emb}.mlp.2.linear.bias"] = (hidden,)
    blocks = [f"net.shared_blocks.{i}" for i in range(depth - head_depth)] + [f"net.u_heads.{i}" for i in range(head_depth)]
    for b in blocks:
        out.update({
            f"{b}.norm1.weight": (hidden,), f"{b}.norm2.weight": (hidden,),
            f"{b}.attn.q_norm.weight": (head_dim,), f"{b}.attn.k_norm.weight": (head_dim,),
            f"{b}.mlp.w1.linear.weight": (mlp, hidden), f"{b}.mlp.w3.linear.weight": (mlp, hidden),
            f"{b}.mlp.w2.linear.weight": (hidden, mlp),
            f"{b}.attn_scale": (hidden,), f"{b}.mlp_scale": (hidden,),
        })
        for proj in ("q", "k", "v", "out"):
            out[f"{b}.attn.{proj}_proj.linear.weight"] = (hidden, hidden)
    return out


# the release's MiT_H / MiT_L / MiT_B2 with pMF_H (bottleneck 256) / pMF_L, pMF_B (128);
# SwiGLU width int(8/3 · hidden), rounded up to a multiple of 8 only above width 1024
RELEASE = {
    "pmf-h": dict(depth=48, hidden=1280, heads=16, head_depth=8, bottleneck=256, mlp=3416),
    "pmf-l": dict(depth=32, hidden=1024, heads=16, head_depth=8, bottleneck=128, mlp=2730),
    "pmf-b": dict(depth=16, hidden=768, heads=12, head_depth=8, bottleneck=128, mlp=2048),
}


def meta_net(name: str, image: int = 256, classes: int = 1000) -> MiT:
    with torch.device("meta"):
        return MiT(PRESETS[name].arch, image, classes)


class _Wrap(torch.nn.Module):  # the generator's layout: the MiT under ``net``
    def __init__(self, net):
        super().__init__()
        self.net = net


@pytest.mark.parametrize("name", sorted(RELEASE))
def test_parameter_layout_is_the_releases(name):
    got = {k: tuple(v.shape) for k, v in _Wrap(meta_net(name)).state_dict().items()}
    want = release_layout(**RELEASE[name])
    assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
    assert {k: got[k] for k in want} == want


def test_pmf_h_has_0_95_billion_parameters():
    net = meta_net("pmf-h")
    n = sum(p.numel() for p in net.parameters())
    by_layout = sum(math.prod(s) for s in release_layout(**RELEASE["pmf-h"]).values())
    assert n == by_layout == PRESETS["pmf-h"].arch.parameter_count(256, 1000) == 955_508_992
    assert len(net.blocks) == 48 and len(net.shared_blocks) == 40 and len(net.u_heads) == 8
    assert not hasattr(net, "v_heads")
    for name in ("pmf-b", "pmf-l"):
        assert sum(p.numel() for p in meta_net(name).parameters()) == PRESETS[name].arch.parameter_count(256, 1000)


def _upstream(layout: dict[str, tuple[int, ...]], device="meta") -> dict[str, torch.Tensor]:
    """The layout as the upstream FD-Loss code saves it: flax-style linear/embedding names, (1, n, d)
    prefix tokens, a rope buffer, a v-head, under DDP's ``module.`` prefix."""
    out = {}
    for k, shape in layout.items():
        name = k.replace(".linear.weight", "._flax_linear.weight").replace(".linear.bias", "._flax_linear.bias")
        name = name.replace(".embedding.weight", "._flax_embedding.weight")
        if k.endswith("_tokens"):
            shape = (1, *shape)
        out["module." + name] = torch.empty(shape, device=device)
    out["module.net.rope_freqs"] = torch.empty(256, 40, device=device)
    out["module.net.v_heads.0.norm1.weight"] = torch.empty(1280, device=device)
    out["module.net.v_final_layer.norm.weight"] = torch.empty(1280, device=device)
    return out


def test_real_size_upstream_layout_maps_onto_the_module_by_name():
    layout = release_layout(**RELEASE["pmf-h"])
    state, dropped = normalise_keys(_upstream(layout))
    assert sorted(dropped) == ["module.net.rope_freqs", "module.net.v_final_layer.norm.weight",
                               "module.net.v_heads.0.norm1.weight"]
    assert {k: tuple(v.shape) for k, v in state.items()} == layout
    module = _Wrap(meta_net("pmf-h"))
    check_layout(module, state, "upstream layout")
    module.load_state_dict(state, strict=True, assign=True)  # meta tensors: names and shapes only


def test_a_layout_mismatch_names_the_keys():
    layout = release_layout(**RELEASE["pmf-h"])
    state, _ = normalise_keys(_upstream(layout))
    state.pop("net.u_heads.7.mlp_scale")
    state["net.pos_embed"] = torch.empty(1, 300, 1280, device="meta")
    state["net.extra.weight"] = torch.empty(3, device="meta")
    with pytest.raises(RdmxError) as err:
        check_layout(_Wrap(meta_net("pmf-h")), state, "ckpt.pth")
    msg = str(err.value)
    assert "1 missing: net.u_heads.7.mlp_scale" in msg and "1 unexpected: net.extra.weight" in msg
    assert "net.pos_embed (1, 300, 1280) ≠ (1, 276, 1280)" in msg


# -- the forward pass against an independent float64 statement of the release's maths -------

def reference_forward(sd, z, h, omega, t_min, t_max, y, *, heads, patch, prefix=(8, 4, 2, 2, 4), eps=1e-6):
    """The release's MiT forward (x-prediction) from a state dict, float64, einsum-style."""
    sd = {k.removeprefix("net."): v.double() for k, v in sd.items()}
    z = z.double()

    def lin(x, name, bias=True):
        out = x @ sd[f"{name}.linear.weight"].T
        return out + sd[f"{name}.linear.bias"] if bias else out

    def rms(x, name):
        return sd[f"{name}.weight"] * x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def temb(t, name):
        freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float64) / 128)
        f = torch.cat([torch.cos(t.double()[:, None] * freqs), torch.sin(t.double()[:, None] * freqs)], -1)
        return lin(torch.nn.functional.silu(lin(f, f"{name}.mlp.0")), f"{name}.mlp.2")

    x = torch.nn.functional.conv2d(z, sd["x_embedder.proj1.weight"], sd["x_embedder.proj1.bias"], stride=patch)
    x = torch.nn.functional.conv2d(x, sd["x_embedder.proj2.weight"], sd["x_embedder.proj2.bias"])
    x = x.flatten(2).transpose(1, 2)
    seq = torch.cat([
        sd["class_tokens"] + sd["y_embedder.embedding_table.embedding.weight"][y][:, None],
        sd["omega_tokens"] + temb(1 - 1 / omega, "omega_embedder")[:, None],
        sd["t_min_tokens"] + temb(t_min, "cfg_t_start_embedder")[:, None],
        sd["t_max_tokens"] + temb(t_max, "cfg_t_end_embedder")[:, None],
        sd["time_tokens"] + temb(h, "h_embedder")[:, None],
        x,
    ], 1) + sd["pos_embed"]
    n_prefix = sum(prefix)
    width = seq.shape[-1]
    hd = width // heads
    grid = int(math.isqrt(x.shape[1]))
    # release: precompute_rope_freqs_2d(head_dim, num_patches) + apply_rotary_pos_emb_partial
    half = hd // 2
    freqs = 1.0 / (10000.0 ** (torch.arange(0, half, 2, dtype=torch.float64) / half))
    pos = torch.arange(grid, dtype=torch.float64)
    fh, fw = torch.outer(pos, freqs), torch.outer(pos, freqs)
    ang = torch.cat([fh[:, None, :].repeat(1, grid, 1), fw[None, :, :].repeat(grid, 1, 1)], -1).reshape(grid * grid, half)

    def rope(t):  # (B, L, H, D): rotate the patch tokens' consecutive pairs
        pre, pat = t[:, :n_prefix], t[:, n_prefix:].reshape(*t[:, n_prefix:].shape[:-1], half, 2)
        c, s = torch.cos(ang)[None, :, None], torch.sin(ang)[None, :, None]
        a, b = pat[..., 0], pat[..., 1]
        return torch.cat([pre, torch.stack([a * c - b * s, a * s + b * c], -1).reshape(pat.shape[:-2] + (hd,))], 1)

    names = sorted({k.split(".")[0] + "." + k.split(".")[1] for k in sd if k.startswith(("shared_blocks.", "u_heads."))},
                   key=lambda n: (n.startswith("u_heads"), int(n.split(".")[1])))
    B, L, _ = seq.shape
    for blk in names:
        u = rms(seq, f"{blk}.norm1")
        q = lin(u, f"{blk}.attn.q_proj", False).reshape(B, L, heads, hd)
        k = lin(u, f"{blk}.attn.k_proj", False).reshape(B, L, heads, hd)
        v = lin(u, f"{blk}.attn.v_proj", False).reshape(B, L, heads, hd)
        q, k = rope(rms(q, f"{blk}.attn.q_norm")), rope(rms(k, f"{blk}.attn.k_norm"))
        w = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", q / math.sqrt(hd), k), -1)
        a = torch.einsum("bhqk,bkhd->bqhd", w, v).reshape(B, L, width)
        seq = seq + lin(a, f"{blk}.attn.out_proj", False) * sd[f"{blk}.attn_scale"]
        u = rms(seq, f"{blk}.norm2")
        m = lin(torch.nn.functional.silu(lin(u, f"{blk}.mlp.w1", False)) * lin(u, f"{blk}.mlp.w3", False), f"{blk}.mlp.w2", False)
        seq = seq + m * sd[f"{blk}.mlp_scale"]
    out = lin(rms(seq[:, n_prefix:], "u_final_layer.norm"), "u_final_layer.linear")
    out = out.reshape(B, grid, grid, patch, patch, 3)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(B, 3, grid * patch, grid * patch)


def tiny_net(image=32, classes=10, seed=0) -> MiT:
    torch.manual_seed(seed)
    net = MiT(TINY, image, classes)
    net.init_weights(zero_init=False)
    with torch.no_grad():  # gates and output layer large enough that every block visibly matters
        for b in net.blocks:
            b.attn_scale.normal_(0, 0.5)
            b.mlp_scale.normal_(0, 0.5)
        net.u_final_layer.linear.linear.weight.normal_(0, 0.5)
    return net


def test_forward_equals_the_float64_reference():
    net = tiny_net(image=48).double()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 3, 48, 48, generator=g, dtype=torch.float64)
    h, omega = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64), torch.tensor([7.0, 1.0, 3.0], dtype=torch.float64)
    t_min, t_max = torch.tensor([0.2, 0.0, 0.1], dtype=torch.float64), torch.tensor([0.6, 1.0, 0.9], dtype=torch.float64)
    y = torch.tensor([3, 10, 0])  # 10 = the "no class" row
    got = net(z, h, omega, t_min, t_max, y)
    want = reference_forward(_Wrap(net).state_dict(), z, h, omega, t_min, t_max, y, heads=TINY.heads, patch=TINY.patch)
    assert got.shape == (3, 3, 48, 48)
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_rope_rotates_patch_tokens_by_row_then_column():
    hd, grid, prefix = 16, 3, 2
    cos, sin = rope_2d(hd, grid, prefix, dtype=torch.float64)
    assert cos.shape == (prefix + grid * grid, hd // 2)
    assert torch.equal(cos[:prefix], torch.ones(prefix, hd // 2, dtype=torch.float64))
    assert torch.equal(sin[:prefix], torch.zeros(prefix, hd // 2, dtype=torch.float64))
    x = torch.randn(1, prefix + grid * grid, 1, hd, dtype=torch.float64)
    out = apply_rope(x, cos, sin)
    freqs = [10000.0 ** (-2 * j / (hd // 2)) for j in range(hd // 4)]
    for tok in range(grid * grid):
        r, c = divmod(tok, grid)
        for pair in range(hd // 2):
            angle = (r if pair < hd // 4 else c) * freqs[pair % (hd // 4)]
            a, b = x[0, prefix + tok, 0, 2 * pair], x[0, prefix + tok, 0, 2 * pair + 1]
            want = complex(a, b) * complex(math.cos(angle), math.sin(angle))
            got = out[0, prefix + tok, 0, 2 * pair : 2 * pair + 2]
            assert got.tolist() == pytest.approx([want.real, want.imag], abs=1e-12)
    assert torch.equal(out[:, :prefix], x[:, :prefix])


def test_rope_scores_depend_on_relative_position_only():
    hd, grid = 16, 4
    cos, sin = rope_2d(hd, grid, 0, dtype=torch.float64)
    q, k = torch.randn(hd, dtype=torch.float64), torch.randn(hd, dtype=torch.float64)

    def score(tq, tk):
        qq = apply_rope(q.expand(1, grid * grid, 1, hd).clone(), cos, sin)[0, tq, 0]
        kk = apply_rope(k.expand(1, grid * grid, 1, hd).clone(), cos, sin)[0, tk, 0]
        return float(qq @ kk)

    # tokens (0,0)→(1,2) and (2,1)→(3,3) have the same offset; (0,0)→(2,1) does not
    assert score(0, 1 * grid + 2) == pytest.approx(score(2 * grid + 1, 3 * grid + 3), abs=1e-12)
    assert score(0, 1 * grid + 2) != pytest.approx(score(0, 2 * grid + 1), abs=1e-6)


def test_zero_init_predicts_zero_and_gates_are_zero():
    torch.manual_seed(0)
    net = MiT(TINY, 32, 10)
    net.init_weights(zero_init=True)
    for b in net.blocks:
        assert torch.count_nonzero(b.attn_scale) == torch.count_nonzero(b.mlp_scale) == 0
    one = torch.ones(2)
    out = net(torch.randn(2, 3, 32, 32), one, 7 * one, 0.2 * one, 0.6 * one, torch.tensor([1, 2]))
    assert torch.count_nonzero(out) == 0


def test_initialisation_statistics_follow_the_release():
    torch.manual_seed(0)
    net = MiT(PRESETS["pmf-b"].arch, 64, 1000)  # width 768: enough entries for tight estimates
    net.init_weights()
    q = net.shared_blocks[0].attn.q_proj.linear.weight
    assert q.std().item() == pytest.approx(0.32 / math.sqrt(768), rel=0.02)
    w2 = net.shared_blocks[0].mlp.w2.linear.weight
    assert w2.std().item() == pytest.approx(0.32 / math.sqrt(2048), rel=0.02)
    e = net.h_embedder.mlp[0].linear.weight
    assert e.std().item() == pytest.approx(1.0 / math.sqrt(256), rel=0.02)
    assert net.y_embedder.embedding_table.embedding.weight.std().item() == pytest.approx(1 / math.sqrt(768), rel=0.02)
    assert net.class_tokens.std().item() == pytest.approx(1 / math.sqrt(768), rel=0.1)
    assert net.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)
    bound = math.sqrt(6 / (3 * 16 * 16 + 128 * 16 * 16))  # Xavier-uniform of the p×p conv
    assert net.x_embedder.proj1.weight.abs().max().item() <= bound
    assert net.x_embedder.proj1.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
