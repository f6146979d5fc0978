"""Sample exports: labelled PNG grids and ADM-compatible ``.npz`` files (written atomically)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """[0, 1] NCHW float → uint8 NHWC (3 channels; grey images are repeated)."""
    x = images.detach().float().clamp(0, 1).cpu()
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return (x * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_grid(
    images: torch.Tensor, path: str | Path, labels: Sequence[str] | None = None, columns: int = 8,
    scale: int = 2, title: str | None = None,
) -> Path:
    """A PNG grid; with ``labels`` each row starts with its label (one row per label group)."""
    from PIL import Image, ImageDraw

    arr = to_uint8_nhwc(images)
    n, h, w, _ = arr.shape
    rows = (n + columns - 1) // columns
    label_w = 40 if labels is not None else 0
    title_h = 16 if title else 0
    pad = 2
    hs, ws = h * scale, w * scale
    canvas = Image.new("RGB", (label_w + columns * (ws + pad) + pad, title_h + rows * (hs + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black")
    for i in range(n):
        r, c = divmod(i, columns)
        tile = Image.fromarray(arr[i]).resize((ws, hs), Image.NEAREST)
        canvas.paste(tile, (label_w + pad + c * (ws + pad), title_h + pad + r * (hs + pad)))
    if labels is not None:
        for r in range(rows):
            text = str(labels[r * columns]) if r * columns < len(labels) else ""
            draw.text((4, title_h + pad + r * (hs + pad) + hs // 2 - 6), text[:6], fill="black")
    return _atomic(Path(path), lambda tmp: canvas.save(tmp, format="PNG"))


def save_npz(images: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
    """ADM-compatible archive: uint8 NHWC under ``arr_0`` (+ ``arr_1`` labels when conditional)."""
    arr = to_uint8_nhwc(images)
    arrays = {"arr_0": arr}
    if labels is not None:
        arrays["arr_1"] = labels.detach().cpu().numpy().astype(np.int64)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return _atomic(Path(path), write)


def grid_conditions(info, columns: int, device, prompt_rows: int = 4):
    """Conditions of a sample grid, one row each: every class, the first ``prompt_rows`` prompts of a
    text-to-image pool (labelled ``#i``), or None (unconditional). Returns (cond or None, labels or None, rows)."""
    if info.num_classes:
        rows = info.num_classes
        cond = torch.arange(rows, device=device).repeat_interleave(columns)
        return cond, [info.class_names[i] for i in cond.tolist()], rows
    if getattr(info, "prompts", ()):
        rows = min(prompt_rows, len(info.prompts))
        cond = torch.arange(rows, device=device).repeat_interleave(columns)
        return cond, [f"#{i}" for i in cond.tolist()], rows
    return None, None, 1
