"""Sample exports, written atomically: labelled PNG grids, ADM-compatible ``.npz`` files (streamed
chunk by chunk), the class plans that lay samples out for both, and the official GenEval folder
layout for text-to-image generators."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from rdmx.files import atomic_write, temp_path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] NCHW float → uint8 NCHW on the same device, rounded to the nearest level (3 channels;
    grey images are repeated): what a saved PNG / ``.npz`` of the samples holds."""
    x = images.detach().float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return (x * 255.0 + 0.5).to(torch.uint8)


def to_uint8_nhwc(images: torch.Tensor) -> np.ndarray:
    """[0, 1] NCHW float → uint8 NHWC (3 channels; grey images are repeated)."""
    return to_uint8(images.cpu()).permute(0, 2, 3, 1).numpy()


def save_grid(
    images: torch.Tensor, path: str | Path, labels: Sequence[str] | None = None, columns: int = 8,
    scale: int = 2, title: str | None = None,
) -> Path:
    """A PNG grid; with ``labels`` each row starts with its label (one row per label group)."""
    from PIL import Image, ImageDraw

    arr = to_uint8_nhwc(images)
    n, h, w, _ = arr.shape
    rows = (n + columns - 1) // columns
    label_chars = min(max((len(str(x)) for x in labels), default=0), 24) if labels is not None else 0
    label_w = 8 + 6 * label_chars if labels is not None else 0
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
            draw.text((4, title_h + pad + r * (hs + pad) + hs // 2 - 6), text[:label_chars], fill="black")
    return atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def class_plan(n: int, num_classes: int, columns: int = 8) -> torch.Tensor:
    """Class ids for ``n`` samples, in contiguous runs.

    With at least ``columns`` samples per class, class(i) = ⌊i·K/n⌋: every class gets ⌊n/K⌋ or
    ⌈n/K⌉ samples (exactly n/K when K divides n: 50 per class for ADM's 50k ImageNet set). With
    fewer, whole rows of ``columns`` samples share a class and the rows are spread evenly over
    the K classes (a grid with one class per row)."""
    i = torch.arange(n)
    if n >= num_classes * columns:
        return i * num_classes // n
    rows = -(-n // columns)
    return (i // columns) * num_classes // rows


def grid_rows(cond: torch.Tensor, columns: int = 8, max_rows: int = 32) -> list[torch.Tensor]:
    """Index rows for labelled grids: the first ``columns`` samples of up to ``max_rows`` classes
    spread evenly over those present in ``cond`` (contiguous runs, as :func:`class_plan` makes)."""
    classes = torch.unique_consecutive(cond)
    if len(classes) > max_rows:
        classes = classes[torch.arange(max_rows) * len(classes) // max_rows]
    return [torch.nonzero(cond == c).flatten()[:columns] for c in classes.tolist()]


def spread_classes(num_classes: int, rows: int = 8) -> torch.Tensor:
    """Up to ``rows`` class ids spread evenly over ``num_classes`` (the rows of a training grid)."""
    k = min(rows, num_classes)
    return torch.arange(k) * num_classes // k


class NpzStream:
    """Write an ADM-compatible ``.npz`` (``arr_0``: uint8 NHWC, ``arr_1``: labels) one chunk at a time.

    The array is streamed into the zip member, so memory holds one chunk (50k ImageNet samples at
    256² are 9.8 GB). The file appears atomically on close; an exception leaves no file.

        with NpzStream(path, n, (256, 256, 3), labels) as npz:
            for chunk in chunks: npz.write(chunk)   # uint8 (b, H, W, 3)
    """

    def __init__(self, path: str | Path, n: int, shape: tuple[int, int, int], labels: torch.Tensor | None = None):
        self.path = Path(path)
        self.n, self.shape, self.labels = n, tuple(shape), labels
        self.written = 0

    def __enter__(self) -> NpzStream:
        import zipfile

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temp_path(self.path)
        self.zip = zipfile.ZipFile(self.tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.member = self.zip.open("arr_0.npy", "w", force_zip64=True)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (self.n, *self.shape)}
        np.lib.format.write_array_header_2_0(self.member, header)
        return self

    def write(self, chunk: np.ndarray) -> None:
        if chunk.dtype != np.uint8 or tuple(chunk.shape[1:]) != self.shape:
            raise ValueError(f"NpzStream: expected uint8 (b, {self.shape}), got {chunk.dtype} {chunk.shape}")
        if self.written + len(chunk) > self.n:
            raise ValueError(f"NpzStream: more than the announced {self.n} rows")
        self.member.write(np.ascontiguousarray(chunk).tobytes())
        self.written += len(chunk)

    def __exit__(self, exc_type, exc, tb) -> None:
        complete = False
        try:
            self.member.close()
            if exc_type is None:
                if self.written != self.n:
                    raise ValueError(f"NpzStream: {self.written} rows written, {self.n} announced")
                if self.labels is not None:
                    with self.zip.open("arr_1.npy", "w") as f:
                        np.lib.format.write_array(f, self.labels.detach().cpu().numpy().astype(np.int64))
                complete = True
        finally:
            self.zip.close()
            if complete:
                os.replace(self.tmp, self.path)
            else:
                Path(self.tmp).unlink(missing_ok=True)


def grid_conditions(info, columns: int, device, prompt_rows: int = 4, class_rows: int = 10):
    """Conditions of a sample grid, one row each: up to ``class_rows`` classes, the first ``prompt_rows`` prompts of a
    text-to-image pool (labelled ``#i``), or None (unconditional). Returns (cond or None, labels or None, rows)."""
    if info.num_classes:  # every class up to 10 classes, else 10 spread over all (ImageNet: 0, 100, ...)
        classes = spread_classes(info.num_classes, rows=class_rows)
        cond = classes.repeat_interleave(columns).to(device)
        return cond, [info.class_names[i] for i in cond.tolist()], len(classes)
    if getattr(info, "prompts", ()):
        rows = min(prompt_rows, len(info.prompts))
        cond = torch.arange(rows, device=device).repeat_interleave(columns)
        return cond, [f"#{i}" for i in cond.tolist()], rows
    return None, None, 1


# -- GenEval ---------------------------------------------------------------------------------
GENEVAL_SEED_BASE = 46_000_000  # the release's noise: one generator per sample, seeded base + 100·prompt + sample


def read_geneval_metadata(path: str | Path) -> list[dict]:
    """GenEval's ``evaluation_metadata.jsonl``: one JSON object per line, each with a ``prompt``."""
    from rdmx.errors import RdmxError
    from rdmx.files import jsonl_records

    path = Path(path)
    if not path.is_file():
        raise RdmxError(f"prompt file {path} does not exist")
    rows = []
    for n, obj in jsonl_records(path):
        if not isinstance(obj, dict) or not str(obj.get("prompt", "")).strip():
            raise RdmxError(f"{path}, line {n}: a GenEval metadata line needs a non-empty 'prompt'")
        rows.append(obj)
    if not rows:
        raise RdmxError(f"{path}: no prompts")
    return rows


def seeded_noise(shape: Sequence[int], seeds: Sequence[int], device) -> torch.Tensor:
    """One standard normal draw of ``shape`` per seed, each from its own generator on ``device``
    (so CUDA draws equal the release's CUDA draws for the same seeds)."""
    device = torch.device(device)
    return torch.stack([torch.randn(tuple(shape), generator=torch.Generator(device).manual_seed(int(s)),
                                    device=device) for s in seeds])


def write_geneval(generator, metadata: Sequence[dict], out: str | Path, *, per_prompt: int = 4, device="cpu",
                  seed_base: int = GENEVAL_SEED_BASE, batch: int = 4) -> Path:
    """The official GenEval layout: ``out/<index:05d>/metadata.jsonl`` (that prompt's metadata line)
    and ``out/<index:05d>/samples/<j:04d>.png`` for ``j < per_prompt``; sample j of prompt i is drawn
    from noise seeded ``seed_base + 100·i + j``. Prompts whose samples all exist are skipped (resume)."""
    import json

    from PIL import Image

    out = Path(out)
    generator.set_prompts([str(m["prompt"]).strip() for m in metadata])
    was = generator.training
    generator.eval()
    with torch.no_grad():
        for i, meta in enumerate(metadata):
            folder = out / f"{i:05d}"
            files = [folder / "samples" / f"{j:04d}.png" for j in range(per_prompt)]
            if (folder / "metadata.jsonl").is_file() and all(f.is_file() for f in files):
                continue
            noise = seeded_noise(generator.noise_shape, [seed_base + 100 * i + j for j in range(per_prompt)], device)
            cond = torch.full((per_prompt,), i, dtype=torch.long, device=device)
            images = torch.cat([generator(noise[s : s + batch], cond[s : s + batch]) for s in range(0, per_prompt, batch)])
            for f, arr in zip(files, to_uint8_nhwc(images), strict=True):
                atomic_write(f, lambda tmp, arr=arr: Image.fromarray(arr).save(tmp, format="PNG"))
            atomic_write(folder / "metadata.jsonl",
                    lambda tmp, meta=meta: Path(tmp).write_text(json.dumps(meta) + "\n", encoding="utf-8"))
    generator.train(was)
    return out
