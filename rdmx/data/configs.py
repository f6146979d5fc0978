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
    class_labels: str | None = Field(
        default=None, description="display names of the class folders: a text file of '<folder> <name>' lines "
        "(ImageNet's LOC_synset_mapping.txt) or a JSON object; labels grids, never changes the data"
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
        class_labels=config.class_labels,
    )


class CaptionedImagesConfig(ComponentConfig):
    """Images with captions: an image folder plus a JSONL/CSV table or a COCO captions file."""

    path: str = Field(description="image folder")
    captions: str = Field(description="captions file: .jsonl / .csv (file, caption) or COCO captions_*.json")
    size: int = Field(gt=0, description="output resolution (ADM centre crop)")
    format: Literal["auto", "jsonl", "csv", "coco"] = Field("auto", description="captions file format (auto: by suffix)")
    file_key: str = Field("file", description="JSONL/CSV field with the image path (relative to path)")
    caption_key: str = Field("caption", description="JSONL/CSV field with the caption")
    pairing: Literal["first", "all"] = Field("first", description="first caption per image, or one row per caption")
    on_problem: Literal["error", "skip"] = Field(
        "error", description="image without caption / empty caption / missing file: error, or skip and count")
    val_path: str | None = Field(default=None, description="separate validation image folder")
    val_captions: str | None = Field(default=None, description="its captions file")
    val_fraction: float = Field(default=0.02, ge=0.0, lt=1.0, description="held-out share of images when no val_path")
    val_count: int | None = Field(default=None, ge=0, description="held-out image count (overrides val_fraction)")
    seed: int = Field(default=0, description="split seed")
    channels: int = Field(default=3, description="1 (grey) or 3 (RGB)")
    digest_memo: str | None = Field(default=None, description="directory memoising per-file digests")


def build_captioned_images(config: CaptionedImagesConfig):
    """Factory: config -> RealData with captions."""
    from rdmx.data.captions import captioned_folder

    return captioned_folder(
        config.path, config.captions, size=config.size, fmt=config.format, file_key=config.file_key,
        caption_key=config.caption_key, pairing=config.pairing, val_path=config.val_path,
        val_captions=config.val_captions, val_fraction=config.val_fraction, val_count=config.val_count,
        seed=config.seed, channels=config.channels, on_problem=config.on_problem, digest_memo=config.digest_memo,
    )


class PromptFileConfig(ComponentConfig):
    """A prompt pool from files (.txt, .jsonl, .csv, .json list or COCO captions)."""

    path: str | list[str] = Field(description="prompt file, or several concatenated in order")
    repeat: int | list[int] = Field(1, description="times each file is repeated in the pool (one value or one per file)")
    key: str = Field("prompt", description="field holding the prompt in .jsonl / .csv files")
    on_empty: Literal["error", "skip"] = Field("error", description="an empty prompt: error, or skip and count")


def build_prompt_file(config: PromptFileConfig):
    """Factory: config -> PromptPool."""
    from rdmx.data.prompts import prompt_pool

    return prompt_pool(config.path, config.repeat, key=config.key, on_empty=config.on_empty)
