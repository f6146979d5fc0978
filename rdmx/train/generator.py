"""The generator interface: (noise, condition) -> samples (images in [0, 1]).

Conditions are integer ids: class ids for class-conditional data, prompt ids for a
text-to-image generator (``DataInfo.prompts`` is its pool: id ``i`` means ``prompts[i]``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DataInfo:
    """What a generator needs to know about the data it imitates."""

    sample_shape: tuple[int, ...]  # e.g. (3, 32, 32) for images, (64,) for vectors
    num_classes: int = 0  # 0 = unconditional
    class_names: tuple[str, ...] = field(default_factory=tuple)
    prompts: tuple[str, ...] = field(default_factory=tuple, repr=False)  # a text-to-image prompt pool

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3

    @property
    def text_conditional(self) -> bool:
        return len(self.prompts) > 0


class Generator(torch.nn.Module, abc.ABC):
    """One-step generator. ``forward(noise, cond)`` returns samples; images lie in [0, 1]."""

    noise_shape: tuple[int, ...]

    def __init__(self, info: DataInfo):
        super().__init__()
        self.info = info

    def sample_noise(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.randn((n, *self.noise_shape), generator=generator).to(device)

    def sample_conditions(
        self, n: int, generator: torch.Generator, device: torch.device | str = "cpu"
    ) -> torch.Tensor | None:
        """Uniform random prompt ids (a prompt pool) or class ids, or None when unconditional."""
        count = len(self.info.prompts) or self.info.num_classes
        if count <= 0:
            return None
        return torch.randint(0, count, (n,), generator=generator).to(device)

    @property
    def prompts(self) -> tuple[str, ...]:
        """The prompts that condition ids index now (text-to-image generators; empty otherwise)."""
        return self.info.prompts

    def set_prompts(self, prompts) -> None:
        """Make condition ids index ``prompts`` (evaluation and sampling on other prompt sets)."""
        from rdmx.errors import RdmxError

        raise RdmxError(f"generator {type(self).__name__} is not text-conditional: it takes no prompts")

    @abc.abstractmethod
    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Map noise (and conditions) to samples."""
