"""Registration of the data components (torch-free)."""

from __future__ import annotations

from rdmx.data.configs import ImageFolderConfig


def register_datasets(register) -> None:
    register(
        "image-folder",
        "rdmx.data.configs:build_image_folder",
        config=ImageFolderConfig,
        description="Images from a folder (flat or class sub-directories), ADM centre crop, seeded val split.",
        kind="images",
        sample_shape=lambda c: (c.channels, c.size, c.size),
    )
