"""The pMF (pixel MeanFlow) generator family on the MiT backbone: architecture presets (torch-free).

Facts from the pMF paper (arXiv 2601.22158) and the iRDM release: a pixel-space transformer on
16×16 patches with a bottleneck patch embedding, RMSNorm, SwiGLU (hidden = ⌊ratio·width⌋,
rounded up to a multiple of 8 above width 1024), 2-D RoPE on the patch tokens plus a learned
position embedding over every token, zero-initialised residual gates, and conditioning as
learned prefix tokens (8 class, 4 CFG scale, 2 + 2 CFG interval, 4 time). ``depth`` counts the
shared trunk and the u-head together (the release's convention: pMF-H = 40 + 8).

``PMF_H_SOURCE`` is the released iRDM base: pMF-H after FD-SIM post-training (the file name
comes from the release's ``scripts/download_checkpoints.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rdmx.represent.presets import HFSource

PMF_H_REPO = "Lanl11/pMF-H-FDSIM-imagenet256-sigma07-4k"
PMF_H_FILE = "model.pth"
PMF_H_SOURCE = HFSource(PMF_H_REPO, ((PMF_H_FILE,),))


@dataclass(frozen=True)
class MiTArch:
    """Shapes of one MiT network. Every field changes the parameter layout."""

    depth: int  # shared blocks + u-head blocks
    hidden: int
    heads: int
    head_depth: int = 8  # blocks of the u-head (the v-head of pMF training is not built)
    patch: int = 16
    bottleneck: int = 128  # patch embedding: conv p×p → bottleneck, then 1×1 conv → hidden
    mlp_ratio: float = 8 / 3
    class_tokens: int = 8
    time_tokens: int = 4
    cfg_tokens: int = 4
    interval_tokens: int = 2  # for each of t_min and t_max
    channels: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.head_depth <= self.depth:
            raise ValueError(f"head_depth {self.head_depth} must lie in [0, depth = {self.depth}]")
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if min(self.class_tokens, self.time_tokens, self.cfg_tokens, self.interval_tokens) < 1:
            raise ValueError("every prefix token group (class, time, cfg, interval) needs at least one token")
        if (self.hidden // self.heads) % 4:
            raise ValueError(f"head width {self.hidden // self.heads} must be a multiple of 4 (2-D RoPE pairs)")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def shared_depth(self) -> int:
        return self.depth - self.head_depth

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU width: ⌊ratio·hidden⌋, rounded up to a multiple of 8 for widths above 1024
        (the release's rule: pMF-H 3413 → 3416, pMF-L keeps 2730)."""
        width = int(self.hidden * self.mlp_ratio)
        return (width + 7) // 8 * 8 if self.hidden > 1024 else width

    @property
    def prefix_tokens(self) -> int:
        return self.class_tokens + self.cfg_tokens + 2 * self.interval_tokens + self.time_tokens

    def tokens(self, image_size: int) -> int:
        return (image_size // self.patch) ** 2 + self.prefix_tokens

    def parameter_count(self, image_size: int, num_classes: int) -> int:
        """Closed-form count of the network's parameters (checked against the module on meta)."""
        h, m = self.hidden, self.mlp_hidden
        block = 2 * h + 4 * h * h + 2 * self.head_dim + 3 * h * m + 2 * h  # norms, attn, qk-norm, mlp, gates
        patch = self.channels * self.bottleneck * self.patch**2 + self.bottleneck + self.bottleneck * h + h
        embedders = 4 * (256 * h + h + h * h + h) + (num_classes + 1) * h
        tokens = self.prefix_tokens * h + self.tokens(image_size) * h
        final = h + h * self.patch**2 * self.channels + self.patch**2 * self.channels
        return self.depth * block + patch + embedders + tokens + final


@dataclass(frozen=True)
class PMFPreset:
    name: str
    arch: MiTArch
    description: str
    resolution: int = 256
    classes: int = 1000
    source: HFSource | None = None  # released weights, if any
    checkpoint: str = "(random init)"


PRESETS: dict[str, PMFPreset] = {
    p.name: p
    for p in [
        PMFPreset("pmf-b", MiTArch(depth=16, hidden=768, heads=12, bottleneck=128),
                  "pMF-B/16 one-step pixel generator (MiT-B2: 8 shared + 8 u-head blocks, width 768)"),
        PMFPreset("pmf-l", MiTArch(depth=32, hidden=1024, heads=16, bottleneck=128),
                  "pMF-L/16 one-step pixel generator (MiT-L: 24 shared + 8 u-head blocks, width 1024)"),
        PMFPreset("pmf-h", MiTArch(depth=48, hidden=1280, heads=16, bottleneck=256),
                  "pMF-H/16 one-step pixel generator (MiT-H: 40 shared + 8 u-head blocks, width 1280, "
                  "~0.95 B parameters); the iRDM ImageNet-256 base, released after FD-SIM",
                  source=PMF_H_SOURCE, checkpoint=f"{PMF_H_REPO}/{PMF_H_FILE}"),
    ]
}

# the same code at CPU-test size: 1 shared block + a 1-block u-head, width 64
TINY = MiTArch(depth=2, hidden=64, heads=4, head_depth=1, bottleneck=32)


def arch_for(preset: str, tiny: bool = False) -> MiTArch:
    return replace(TINY) if tiny else PRESETS[preset].arch
