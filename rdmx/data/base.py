"""The real-data interface the engine and the reference builder consume.

``train`` and ``val`` are map-style torch Datasets of ``(image, label)``: a float CHW image in
[0, 1] of ``channels × image_size × image_size`` and a long label (``-1`` for unconditional
data, where ``num_classes == 0``). ``fingerprint()`` names everything that changes the images
the encoders see (files, preprocessing, split), so feature caches keyed by it never go stale.

Captioned data (``captions`` set, ``num_classes == 0``): every row is one (image, caption) pair
and its label is its caption id, ``captions[split][label]`` — the condition of the text-joint
law. The reference builder embeds those captions with the recipe's text encoder; the generator's
prompt pool defaults to the train captions. The captions are part of the data identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rdmx.fingerprint import fingerprint as _fingerprint


@dataclass
class RealData:
    """A real image distribution split into train and validation sets."""

    train: Any  # torch.utils.data.Dataset of (image [0,1] CHW float, label long)
    val: Any
    num_classes: int
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    identity: Callable[[], dict[str, Any]] | dict[str, Any] = field(default_factory=dict, repr=False)
    display_names: tuple[str, ...] = ()  # human-readable class names for grids (not part of the fingerprint)
    captions: dict[str, tuple[str, ...]] | None = field(default=None, repr=False)  # split -> caption of label id
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def captioned(self) -> bool:
        return self.captions is not None

    def fingerprint(self) -> str:
        """Hash of the data identity (computed once; ``identity`` may be a lazy callable)."""
        if self._fingerprint is None:
            ident = self.identity() if callable(self.identity) else self.identity
            self._fingerprint = _fingerprint(
                {
                    "kind": "real-data",
                    "identity": ident,
                    "num_classes": self.num_classes,
                    "class_names": list(self.class_names),
                    "image_size": self.image_size,
                    "channels": self.channels,
                    "train_rows": len(self.train),
                    "val_rows": len(self.val),
                }
            )
        return self._fingerprint
