"""GenEval as the paper's release scores it: the protocol recorded beside every render, and the
official scorer (djghosh13/geneval, not bundled: mmdet's detector stack is heavy) run by one rdmx
command that records its result.

GenEval is scorer-dependent: another detector build, detector config or colour classifier moves the
overall score by 0.01–0.025 (the release's measurement), so ``geneval_protocol.json`` pins every
element: the release's canonical scorer is mmdet 3.3.0 Mask2Former Swin-S with the mmdet package's
*builtin* config (``--options model=mask2former``), the open_clip ViT-L-14 (openai) colour classifier,
GenEval's thresholds, and the overall score as the unweighted mean of the six tasks' correctness
rates (:func:`summarise`, computed here from the scorer's per-image results).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError

PROTOCOL_FILE = "geneval_protocol.json"
TASKS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
SCORER = {
    "repository": "https://github.com/djghosh13/geneval (evaluation/evaluate_images.py)",
    "detector": "mmdet 3.3.0 Mask2Former Swin-S, COCO instance (checkpoint ..._20220504_001756-c9d0c4f2.pth)",
    "detector_config": "the mmdet package's builtin mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py, not the "
                       "geneval repository's standalone copy (it shifts the colour tasks)",
    "options": "--options model=mask2former",
    "color_classifier": "open_clip ViT-L-14, pretrained='openai' (zero-shot)",
    "thresholds": {"confidence": 0.3, "counting": 0.9, "position": 0.1},
    "overall": "unweighted mean of the 6 tasks' correctness rates (not the per-image mean)",
    "known_offsets": "HuggingFace facebook/mask2former-swin-small-coco-instance reads ~0.025 lower; absolute "
                     "numbers do not transfer across scorer builds",
    "commands": ["python evaluation/evaluate_images.py RENDER_DIR --outfile results.jsonl --model-path DETECTOR_DIR "
                 "--model-config MMDET_BUILTIN_MASK2FORMER_CONFIG --options model=mask2former  (DETECTOR_DIR/"
                 "mask2former.pth)",
                 "rdmx geneval-score RENDER_DIR --scorer GENEVAL_REPO --detector DETECTOR_DIR --config CONFIG"],
    "anchors": {"4-step FLUX.2 [klein] teacher": 0.794, "released 1-step student (geALLcoco s180)": 0.8258},
}


def write_protocol(out: Path, *, prompts: int, per_prompt: int, seed_base: int, generator_config: dict[str, Any],
                   checkpoint: str, weights: str) -> Path:
    """``geneval_protocol.json`` beside a GenEval render: how it was made and how to score it."""
    from rdmx.files import write_json

    generation = {"prompts": prompts, "samples_per_prompt": per_prompt, "images": prompts * per_prompt,
                  "noise_seed": f"{seed_base} + 100·prompt + sample, one generator per sample",
                  "generator": generator_config, "checkpoint": checkpoint, "weights": weights}
    return write_json(Path(out) / PROTOCOL_FILE, {"generation": generation, "scorer": SCORER})


def summarise(results: Path) -> dict[str, Any]:
    """Per-task correctness rates and the overall score (their unweighted mean) of the official
    scorer's per-image results (a JSON-lines file with ``tag`` and ``correct``)."""
    from rdmx.files import jsonl_records

    hits: dict[str, list[bool]] = defaultdict(list)
    for n, row in jsonl_records(results, "GenEval results "):
        if not isinstance(row, dict) or "tag" not in row or "correct" not in row:
            raise RdmxError(f"GenEval results {results}, line {n}: no 'tag' / 'correct' (not the official scorer's "
                            "output?)")
        hits[str(row["tag"])].append(bool(row["correct"]))
    if not hits:
        raise RdmxError(f"GenEval results {results}: empty")
    order = [t for t in TASKS if t in hits] + sorted(set(hits) - set(TASKS))
    tasks = {t: sum(hits[t]) / len(hits[t]) for t in order}
    return {"tasks": tasks, "overall": sum(tasks.values()) / len(tasks), "images": sum(len(v) for v in hits.values())}


def score(render: str | Path, *, scorer: str | Path, detector: str | Path, config: str | Path | None = None,
          python: str | None = None) -> dict[str, Any]:
    """Run the official scorer on a render folder and record its result in ``render/eval.json``."""
    from rdmx.evaluate.protocol import library_versions
    from rdmx.files import read_json, write_json

    render, scorer = Path(render), Path(scorer)
    script = scorer / "evaluation" / "evaluate_images.py"
    if not script.is_file():
        raise RdmxError(f"--scorer {scorer}: the GenEval scorer is not installed there (no evaluation/"
                        f"evaluate_images.py); clone https://github.com/djghosh13/geneval and install its detector "
                        f"environment (see {render / PROTOCOL_FILE})")
    if not (render / PROTOCOL_FILE).is_file():
        raise RdmxError(f"{render}: not a GenEval render of rdmx (no {PROTOCOL_FILE}); make one with rdmx sample "
                        f"--format geneval")
    results, partial = render / "geneval_results.jsonl", render / "geneval_results.jsonl.partial"
    partial.unlink(missing_ok=True)
    cmd = [python or sys.executable, str(script), str(render), "--outfile", str(partial), "--model-path",
           str(detector)]
    if config is not None:
        cmd += ["--model-config", str(config)]
    cmd += ["--options", "model=mask2former"]  # the detector is DETECTOR/mask2former.pth
    done = subprocess.run(cmd, cwd=scorer, capture_output=True, text=True)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        last = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        raise RdmxError(f"the GenEval scorer failed (exit {done.returncode}): {last[0][:300]}")
    partial.replace(results)
    summary = summarise(results)
    made = read_json(render / PROTOCOL_FILE)
    gen = made["generation"]
    protocol = {"version": 1, "geneval": {"prompts": gen["prompts"], "samples_per_prompt": gen["samples_per_prompt"],
                                          "images_scored": summary["images"], "noise_seed": gen["noise_seed"]},
                "scorer": made["scorer"], "versions": library_versions()}
    record = {"summary": {"geneval": summary["overall"], **{f"geneval/{t}": v for t, v in summary["tasks"].items()}},
              "settings": {"geneval": {"images": summary["images"], "command": " ".join(cmd), "protocol": made},
                           "protocol": protocol}}
    write_json(render / "eval.json", record)
    return summary
