"""What metrics receive (:class:`EvalContext`) and the :class:`Metric` interface. Torch-free."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rdmx.errors import RdmxError

ROLES = ("train", "heldout")


class EncoderFeatures(NamedTuple):
    """One encoder's feature sets (rows = samples; numpy arrays or torch tensors) and its role."""

    gen: Any
    train: Any
    val: Any
    role: str


@dataclass
class EvalContext:
    """Everything an evaluation metric may use.

    ``features`` maps encoder name -> :class:`EncoderFeatures` (generated features, train bank,
    validation bank, role "train" or "heldout"). ``samples`` are generated images (B, C, H, W)
    in [0, 1]; ``labels`` their class ids or prompts; ``reference_samples`` images of a
    reference model made from the same noise and labels (for win rates).
    """

    features: dict[str, EncoderFeatures] = field(default_factory=dict)
    samples: Any = None
    labels: Any = None
    reference_samples: Any = None
    step: int | None = None

    def __post_init__(self) -> None:
        for name, item in self.features.items():
            if not isinstance(item, EncoderFeatures):
                item = EncoderFeatures(*item)
                self.features[name] = item
            if item.role not in ROLES:
                raise RdmxError(f"evaluation: encoder '{name}' has role {item.role!r}; roles: {ROLES}")

    @property
    def roles(self) -> dict[str, str]:
        return {name: item.role for name, item in self.features.items()}


class Metric(abc.ABC):
    """An evaluation metric: ``metric(ctx) -> {name: value}``.

    ``requires`` names the context fields the metric reads ("features", "samples", "labels",
    "reference_samples"), so the caller computes only what is needed.
    """

    name: str = "metric"
    requires: tuple[str, ...] = ("features",)

    @abc.abstractmethod
    def __call__(self, ctx: EvalContext) -> dict[str, float]:
        """Compute the metric's values from ``ctx``."""

    def check(self, ctx: EvalContext) -> None:
        """A clear error when ``ctx`` lacks what this metric needs."""
        missing = [
            f for f in self.requires if (not ctx.features if f == "features" else getattr(ctx, f) is None)
        ]
        if missing:
            raise RdmxError(f"metric '{self.name}' needs {', '.join(missing)} in the evaluation context")
