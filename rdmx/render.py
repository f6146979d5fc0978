"""Reference renders: a teacher's best ``keep`` of ``seeds`` images per prompt, as captioned data.

The paper's headline FLUX reference is curated four-step teacher renders (COCO captions: the
PickScore top 3 of 24 seeds per caption). For prompt i and seed s the noise comes from its own
generator seeded ``s · 1_000_003 + i`` (the release's render driver), so any render can be
remade alone. The ``seeds`` renders of a prompt are scored against it (``score(images, prompts)
-> scores``, e.g. PickScore) and the ``keep`` best are written as ``images/<i:08d>_s<s>.png`` with
one row each in ``captions.jsonl`` (``file``, ``caption``, ``seed``, ``score``): exactly what the
``captioned-images`` dataset reads. Rows of a prompt are appended in one write once its images are
in place, so a killed run resumes after the last finished prompt. ``shard = (j, n)`` renders the
prompts i ≡ j (mod n) into ``captions-<j>-of-<n>.jsonl`` (concatenate the shards afterwards).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rdmx.errors import RdmxError
from rdmx.files import atomic_write
from rdmx.samples import seeded_noise, to_uint8_nhwc

SEED_STRIDE = 1_000_003


def render_seed(prompt_index: int, seed: int) -> int:
    return int(seed) * SEED_STRIDE + int(prompt_index)


def _done(path: Path) -> set[int]:
    """Prompt indices with rows in a captions file (a torn last line is ignored)."""
    done = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                done.add(int(json.loads(line)["prompt_index"]))
            except (ValueError, KeyError, TypeError):
                continue
    return done


def render_reference(generator, prompts: Sequence[str], out: str | Path, *,
                     score: Callable[[torch.Tensor, list[str]], torch.Tensor], seeds: int = 24, keep: int = 3,
                     device="cpu", batch: int = 8, shard: tuple[int, int] = (0, 1), progress: bool = True) -> Path:
    """Render, score and keep the best ``keep`` of ``seeds`` per prompt; returns the captions file."""
    from PIL import Image
    from tqdm.auto import tqdm

    if not 1 <= keep <= seeds:
        raise RdmxError(f"render: keep ({keep}) must lie in [1, seeds ({seeds})]")
    j, n = shard
    if not 0 <= j < n:
        raise RdmxError(f"render: shard {j} of {n} does not exist")
    out = Path(out)
    captions = out / ("captions.jsonl" if n == 1 else f"captions-{j}-of-{n}.jsonl")
    prompts = [str(p) for p in prompts]
    generator.set_prompts(prompts)
    todo = [i for i in range(j, len(prompts), n) if i not in _done(captions)]
    was = generator.training
    generator.eval()
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), open(captions, "a", encoding="utf-8") as log:
        for i in tqdm(todo, desc="render", unit="prompt", disable=not progress, dynamic_ncols=True):
            noise = seeded_noise(generator.noise_shape, [render_seed(i, s) for s in range(seeds)], device)
            cond = torch.full((seeds,), i, dtype=torch.long, device=device)
            images = torch.cat([generator(noise[a : a + batch], cond[a : a + batch]).float().cpu()
                                for a in range(0, seeds, batch)])
            scores = torch.as_tensor(score(images, [prompts[i]] * seeds)).double().cpu()
            best = torch.argsort(scores, descending=True, stable=True)[:keep].tolist()
            rows = []
            for s in best:
                rel = f"images/{i:08d}_s{s}.png"
                arr = to_uint8_nhwc(images[s : s + 1])[0]
                atomic_write(out / rel, lambda tmp, arr=arr: Image.fromarray(arr).save(tmp, format="PNG"))
                rows.append({"file": rel, "caption": prompts[i], "prompt_index": i, "seed": s,
                             "score": float(scores[s])})
            log.write("".join(json.dumps(r) + "\n" for r in rows))
            log.flush()
    generator.train(was)
    return captions
