"""Sample exports, written atomically: labelled PNG grids, ADM-compatible ``.npz`` files, and the
official GenEval folder layout for text-to-image generators."""

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


# -- GenEval ---------------------------------------------------------------------------------
GENEVAL_SEED_BASE = 46_000_000  # the release's noise: one generator per sample, seeded base + 100·prompt + sample


def read_geneval_metadata(path: str | Path) -> list[dict]:
    """GenEval's ``evaluation_metadata.jsonl``: one JSON object per line, each with a ``prompt``."""
    import json

    from rdmx.errors import RdmxError

    path = Path(path)
    if not path.is_file():
        raise RdmxError(f"prompt file {path} does not exist")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RdmxError(f"{path}, line {n}: invalid JSON ({exc.msg})") from None
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
                _atomic(f, lambda tmp, arr=arr: Image.fromarray(arr).save(tmp, format="PNG"))
            _atomic(folder / "metadata.jsonl",
                    lambda tmp, meta=meta: Path(tmp).write_text(json.dumps(meta) + "\n", encoding="utf-8"))
    generator.train(was)
    return out
