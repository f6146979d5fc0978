"""Registration of the data components (torch-free)."""

from __future__ import annotations

from rdmx.data.configs import CaptionedImagesConfig, ImageFolderConfig, PromptFileConfig


def register_datasets(register) -> None:
    register(
        "image-folder",
        "rdmx.data.configs:build_image_folder",
        config=ImageFolderConfig,
        description="Images from a folder (flat or class sub-directories), ADM centre crop, seeded val split.",
        kind="images",
        sample_shape=lambda c: (c.channels, c.size, c.size),
    )
    register(
        "captioned-images",
        "rdmx.data.configs:build_captioned_images",
        config=CaptionedImagesConfig,
        description="(image, caption) pairs: a folder + JSONL/CSV table, or COCO captions_*.json read directly.",
        kind="images+captions",
        classes=0,
    )


def register_prompts(register) -> None:
    register(
        "prompt-file",
        "rdmx.data.configs:build_prompt_file",
        config=PromptFileConfig,
        description="A prompt pool from .txt / .jsonl / .csv / .json files (concatenated, each repeated k times).",
    )
