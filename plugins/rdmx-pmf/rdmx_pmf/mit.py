"""The MiT network of pMF: a pixel-space transformer that predicts the clean image.

Input: a noisy image z (B, C, S, S) and the conditions h (the MeanFlow interval t − r), the
CFG scale ω, the CFG interval [t_min, t_max] and the class y (id ``num_classes`` = no class).
Output: x̂, the predicted clean image (B, C, S, S) (x-prediction; the sampler converts it).

Sequence = [class | cfg | t_min | t_max | time | patches] + a learned position embedding:
each prefix group is its learned tokens plus the embedding of its condition (added to every
token of the group); cfg embeds 1 − 1/ω, the others embed their scalar with sinusoidal
features (256) → MLP. Patch tokens come from a bottleneck embedding (p×p conv to
``bottleneck`` channels, then a 1×1 conv to the width).

Block (pre-norm, zero-initialised vector gates g_a, g_m):
    x ← x + g_a ⊙ Attn(RMSNorm(x)),   x ← x + g_m ⊙ SwiGLU(RMSNorm(x))
Attention has RMSNorm on queries and keys per head, then 2-D RoPE on the patch tokens only:
the first half of each head's rotation pairs turns with the patch row, the second half with
the patch column, at frequencies θ^(−2j/(D/2)) (θ = 10⁴); prefix tokens are not rotated.
RMSNorm, RoPE and the softmax run in float32 whatever the autocast dtype; the residual
stream stays in the parameters' dtype.

Module and parameter names follow the released pMF-H checkpoint (see :mod:`.weights`), which
is why linear layers sit one level down (``q_proj.linear.weight``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rdmx_pmf.presets import MiTArch

ROPE_THETA = 10_000.0
FREQ_DIM = 256  # sinusoidal features of a scalar condition
NORM_EPS = 1e-6


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 when it already is (float64 tests)."""
    return x if x.dtype == torch.float64 else x.float()


class Linear(nn.Module):
    """``nn.Linear`` one level down (the checkpoint's ``<name>.linear.weight`` layout)."""

    def __init__(self, fan_in: int, fan_out: int, bias: bool):
        super().__init__()
        self.linear = nn.Linear(fan_in, fan_out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class RMSNorm(nn.Module):
    """y = w ⊙ x / sqrt(mean(x²) + eps), computed in float32, returned in the input dtype."""

    def __init__(self, dim: int, eps: float = NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = _wide(x)
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * y).to(x.dtype)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) ⊙ w3 x), no biases."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = Linear(dim, hidden, bias=False)
        self.w3 = Linear(dim, hidden, bias=False)
        self.w2 = Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def sinusoidal(t: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10_000.0) -> torch.Tensor:
    """[cos(t·f_j), sin(t·f_j)] with f_j = max_period^(−j/(dim/2)), j < dim/2; float32 (B, dim)."""
    half = dim // 2
    t = _wide(t)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ScalarEmbedder(nn.Module):
    """A scalar condition → sinusoidal features → Linear → SiLU → Linear."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(Linear(FREQ_DIM, dim, bias=True), nn.SiLU(), Linear(dim, dim, bias=True))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal(t).to(self.mlp[0].linear.weight.dtype))


class _Table(nn.Module):
    def __init__(self, rows: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(rows, dim)


class ClassEmbedder(nn.Module):
    """One row per class plus the "no class" row (id ``num_classes``)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding_table = _Table(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table.embedding(y)


class BottleneckPatchEmbed(nn.Module):
    """p×p stride-p conv to ``bottleneck`` channels, 1×1 conv to ``dim``; tokens in row-major order."""

    def __init__(self, channels: int, patch: int, bottleneck: int, dim: int):
        super().__init__()
        self.proj1 = nn.Conv2d(channels, bottleneck, kernel_size=patch, stride=patch)
        self.proj2 = nn.Conv2d(bottleneck, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)


def rope_2d(head_dim: int, grid: int, prefix: int, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of the rotation angles, (prefix + grid², head_dim / 2) float32.

    Patch token r·grid + c turns pair j by r·f_j for j < head_dim/4 and pair head_dim/4 + j by
    c·f_j, f_j = θ^(−2j/(head_dim/2)); prefix rows are the identity (cos 1, sin 0)."""
    quarter = head_dim // 4
    freqs = ROPE_THETA ** (-torch.arange(0, 2 * quarter, 2, dtype=dtype, device=device) / (2 * quarter))
    pos = torch.arange(grid, dtype=dtype, device=device)
    rows = (pos[:, None, None] * freqs).expand(grid, grid, quarter)
    cols = (pos[None, :, None] * freqs).expand(grid, grid, quarter)
    angles = torch.cat([rows, cols], dim=-1).reshape(grid * grid, 2 * quarter)
    angles = torch.cat([angles.new_zeros(prefix, 2 * quarter), angles])
    return torch.cos(angles), torch.sin(angles)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x[2k], x[2k+1]) of ``x`` (B, L, H, D) by the angles of row L."""
    pairs = _wide(x).unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None], sin[None, :, None]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q_proj = Linear(dim, dim, bias=False)
        self.k_proj = Linear(dim, dim, bias=False)
        self.v_proj = Linear(dim, dim, bias=False)
        self.out_proj = Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        shape = (b, n, self.heads, self.head_dim)
        q = apply_rope(self.q_norm(self.q_proj(x).view(shape)), cos, sin)
        k = apply_rope(self.k_norm(self.k_proj(x).view(shape)), cos, sin)
        v = self.v_proj(x).view(shape)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm attention + SwiGLU, each added through a zero-initialised vector gate."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.attn_scale = nn.Parameter(torch.zeros(dim))
        self.mlp_scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin) * self.attn_scale
        return x + self.mlp(self.norm2(x)) * self.mlp_scale


class FinalLayer(nn.Module):
    """RMSNorm → Linear to p·p·C values per patch token (zero-initialised)."""

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.linear = Linear(dim, out, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


class MiT(nn.Module):
    """x̂ = MiT(z; h, ω, t_min, t_max, y): the shared trunk followed by the u-head."""

    def __init__(self, arch: MiTArch, image_size: int, num_classes: int):
        super().__init__()
        if image_size % arch.patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {arch.patch}")
        self.arch = arch
        self.image_size = image_size
        self.grid = image_size // arch.patch
        self.num_classes = num_classes
        dim = arch.hidden
        self.x_embedder = BottleneckPatchEmbed(arch.channels, arch.patch, arch.bottleneck, dim)
        self.h_embedder = ScalarEmbedder(dim)
        self.omega_embedder = ScalarEmbedder(dim)
        self.cfg_t_start_embedder = ScalarEmbedder(dim)
        self.cfg_t_end_embedder = ScalarEmbedder(dim)
        self.y_embedder = ClassEmbedder(num_classes, dim)
        self.time_tokens = nn.Parameter(torch.empty(arch.time_tokens, dim))
        self.class_tokens = nn.Parameter(torch.empty(arch.class_tokens, dim))
        self.omega_tokens = nn.Parameter(torch.empty(arch.cfg_tokens, dim))
        self.t_min_tokens = nn.Parameter(torch.empty(arch.interval_tokens, dim))
        self.t_max_tokens = nn.Parameter(torch.empty(arch.interval_tokens, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, arch.tokens(image_size), dim))
        self.shared_blocks = nn.ModuleList(Block(dim, arch.heads, arch.mlp_hidden) for _ in range(arch.shared_depth))
        self.u_heads = nn.ModuleList(Block(dim, arch.heads, arch.mlp_hidden) for _ in range(arch.head_depth))
        self.u_final_layer = FinalLayer(dim, arch.patch**2 * arch.channels)

    @property
    def blocks(self) -> list[Block]:
        return [*self.shared_blocks, *self.u_heads]

    @torch.no_grad()
    def init_weights(self, zero_init: bool = True, block_std: float = 0.32, embed_std: float = 1.0) -> None:
        """The release's initialisation: linear weights N(0, (c/√fan_in)²) with c = 0.32 in the
        blocks and 1 in the condition embedders, zero biases; the class table N(0, 1/width);
        Xavier-uniform patch convolutions; tokens N(0, 1/width); position embedding N(0, 0.02²);
        norms 1. ``zero_init`` keeps the residual gates and the output layer at 0 (a fresh network
        predicts x̂ = 0); False draws them N(0, 0.02²) so a random network depends on every weight
        (tests, benchmarks)."""
        dim = self.arch.hidden

        def linear(layer: Linear, c: float) -> None:
            nn.init.normal_(layer.linear.weight, std=c / math.sqrt(layer.linear.in_features))
            if layer.linear.bias is not None:
                nn.init.zeros_(layer.linear.bias)

        for conv in (self.x_embedder.proj1, self.x_embedder.proj2):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        for emb in (self.h_embedder, self.omega_embedder, self.cfg_t_start_embedder, self.cfg_t_end_embedder):
            linear(emb.mlp[0], embed_std)
            linear(emb.mlp[2], embed_std)
        nn.init.normal_(self.y_embedder.embedding_table.embedding.weight, std=embed_std / math.sqrt(dim))
        for tokens in (self.time_tokens, self.class_tokens, self.omega_tokens, self.t_min_tokens, self.t_max_tokens):
            nn.init.normal_(tokens, std=1.0 / math.sqrt(dim))
        nn.init.normal_(self.pos_embed, std=0.02)
        for block in self.blocks:
            for layer in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.attn.out_proj,
                          block.mlp.w1, block.mlp.w2, block.mlp.w3):
                linear(layer, block_std)
            for norm in (block.norm1, block.norm2, block.attn.q_norm, block.attn.k_norm):
                nn.init.ones_(norm.weight)
            for gate in (block.attn_scale, block.mlp_scale):
                nn.init.zeros_(gate) if zero_init else nn.init.normal_(gate, std=0.02)
        final = self.u_final_layer
        nn.init.ones_(final.norm.weight)
        for p in (final.linear.linear.weight, final.linear.linear.bias):
            nn.init.zeros_(p) if zero_init else nn.init.normal_(p, std=0.02)

    def sequence(self, z, h, omega, t_min, t_max, y) -> torch.Tensor:
        """The input token sequence (B, prefix + grid², width), position embedding added."""
        groups = (
            (self.class_tokens, self.y_embedder(y)),
            (self.omega_tokens, self.omega_embedder(1.0 - 1.0 / omega)),
            (self.t_min_tokens, self.cfg_t_start_embedder(t_min)),
            (self.t_max_tokens, self.cfg_t_end_embedder(t_max)),
            (self.time_tokens, self.h_embedder(h)),
        )
        prefix = [tokens + cond[:, None] for tokens, cond in groups]
        patches = self.x_embedder(z)
        dtype = torch.promote_types(prefix[0].dtype, patches.dtype)
        return torch.cat([p.to(dtype) for p in (*prefix, patches)], dim=1) + self.pos_embed

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, grid², p·p·C) → (B, C, grid·p, grid·p); each token's values are ordered (p, p, C)."""
        p, c, g = self.arch.patch, self.arch.channels, self.grid
        return x.reshape(x.shape[0], g, g, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(x.shape[0], c, g * p, g * p)

    def forward(self, z, h, omega, t_min, t_max, y) -> torch.Tensor:
        """x̂ (B, C, S, S). ``h, omega, t_min, t_max``: (B,) floats; ``y``: (B,) class ids."""
        if z.shape[-1] != self.image_size or z.shape[-2] != self.image_size:
            raise ValueError(f"MiT was built for {self.image_size}² images, got {tuple(z.shape[-2:])}")
        x = self.sequence(z, h, omega, t_min, t_max, y)
        cos, sin = rope_2d(self.arch.head_dim, self.grid, self.arch.prefix_tokens, z.device, _wide(z).dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.unpatchify(self.u_final_layer(x[:, self.arch.prefix_tokens:]))
