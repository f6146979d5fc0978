"""Config models of the data plugins (torch-free)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rdmx.registry import ComponentConfig, Seed


class ImageFolderConfig(ComponentConfig):
    """An image folder (flat or one sub-directory per class)."""

    path: str = Field(description="training image folder")
    size: int = Field(gt=0, le=8192, description="output resolution (ADM centre crop)")
    val_path: str | None = Field(default=None, description="separate validation folder")
    val_fraction: float = Field(default=0.02, ge=0.0, lt=1.0, description="held-out share when no val_path")
    val_count: int | None = Field(default=None, ge=0, description="held-out count (overrides val_fraction)")
    seed: Seed = Field(default=0, description="split seed")
    channels: Literal[1, 3] = Field(default=3, description="1 (grey) or 3 (RGB)")
    digest_memo: str | None = Field(
        default=None, description="directory memoising per-file digests by (size, mtime): later fingerprints only stat"
    )


def build_image_folder(config: ImageFolderConfig):
    """Factory: config -> RealData (imports torch and PIL only now)."""
    from rdmx.data.folder import image_folder

    return image_folder(
        config.path,
        size=config.size,
        val_dir=config.val_path,
        val_fraction=config.val_fraction,
        val_count=config.val_count,
        seed=config.seed,
        channels=config.channels,
        digest_memo=config.digest_memo,
    )
