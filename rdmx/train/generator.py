"""The generator interface: (noise, condition) -> samples (images in [0, 1])."""

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

    @property
    def is_image(self) -> bool:
        return len(self.sample_shape) == 3


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
        """Uniform random class ids, or None when unconditional."""
        if self.info.num_classes <= 0:
            return None
        return torch.randint(0, self.info.num_classes, (n,), generator=generator).to(device)

    @abc.abstractmethod
    def forward(self, noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Map noise (and conditions) to samples."""
