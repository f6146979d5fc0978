"""A tiny random PickScore (CLIP) with the checkpoint's image processing, for tests without weights."""

from __future__ import annotations

from pathlib import Path

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tiny_processor():
    """The checkpoint's image constants (224 bicubic resize + centre crop, CLIP mean/std) and a tiny BPE."""
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in "abcdefghijklmnopqrstuvwxyz":
            vocab[c + suffix] = len(vocab)
    vocab["ca"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[("c", "a")])
    images = CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": 224}, resample=3, do_center_crop=True,
        crop_size={"height": 224, "width": 224}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True,
    )
    return CLIPProcessor(image_processor=images, tokenizer=tokenizer)


def tiny_pickscore(seed: int = 0):
    """(CLIPModel with random weights, its processor): a PickScore of the same classes, 16 wide."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    processor = tiny_processor()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(processor.tokenizer), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(image_size=224, patch_size=32, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    return model, processor


def save_tiny_pickscore(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Save the tiny model and processor under ``directory``; returns (model dir, processor dir) for the
    metric's ``model`` / ``processor`` options."""
    directory = Path(directory)
    model, processor = tiny_pickscore(seed)
    model.save_pretrained(directory / "model")
    processor.save_pretrained(directory / "processor")
    return directory / "model", directory / "processor"
