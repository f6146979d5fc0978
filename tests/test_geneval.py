"""GenEval scoring: the official scorer run on a render, its per-image results summarised as the
release does (per-task correctness rates, overall = their unweighted mean), recorded beside the
render's protocol; a missing or failing scorer is one line, leaving no partial result and the
previous one intact."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from rdmx.cli import main
from rdmx.errors import RdmxError
from rdmx.geneval import PROTOCOL_FILE, score, summarise, write_protocol

# A stand-in for djghosh13/geneval's evaluation/evaluate_images.py: the same arguments and the same
# JSON-lines output (one row per image, with tag and correct). It calls an image correct when its
# sample index is below the prompt's "ok" count, so the expected rates are known by construction.
FAKE_SCORER = textwrap.dedent('''
    import argparse, json, os, sys
    p = argparse.ArgumentParser()
    p.add_argument("imagedir"); p.add_argument("--outfile"); p.add_argument("--model-path")
    p.add_argument("--model-config", default=None); p.add_argument("--options", nargs="*", default=[])
    a = p.parse_args()
    if os.environ.get("FAKE_GENEVAL_FAIL"):
        sys.exit("RuntimeError: CUDA is not available")
    assert a.options == ["model=mask2former"], a.options
    assert os.path.isfile(os.path.join(a.model_path, "mask2former.pth"))
    rows = []
    for sub in sorted(os.listdir(a.imagedir)):
        folder = os.path.join(a.imagedir, sub)
        if not (os.path.isdir(folder) and sub.isdigit()):
            continue
        meta = json.load(open(os.path.join(folder, "metadata.jsonl")))
        for name in sorted(os.listdir(os.path.join(folder, "samples"))):
            rows.append({"filename": name, "tag": meta["tag"], "prompt": meta["prompt"],
                         "correct": int(name[:4]) < meta["ok"], "reason": ""})
    with open(a.outfile, "w") as f:
        f.writelines(json.dumps(r) + "\\n" for r in rows)
''')

# (tag, images correct out of 4) per prompt
PROMPTS = [("single_object", 4), ("single_object", 3), ("two_object", 1), ("counting", 0), ("colors", 2),
           ("position", 1), ("position", 0), ("position", 0), ("color_attr", 4)]


def _render(root: Path) -> Path:
    out = root / "render"
    for i, (tag, ok) in enumerate(PROMPTS):
        samples = out / f"{i:05d}" / "samples"
        samples.mkdir(parents=True)
        for j in range(4):
            (samples / f"{j:04d}.png").write_bytes(b"png")
        (out / f"{i:05d}" / "metadata.jsonl").write_text(json.dumps({"tag": tag, "prompt": f"p{i}", "ok": ok}) + "\n")
    write_protocol(out, prompts=len(PROMPTS), per_prompt=4, seed_base=46_000_000, generator_config={"name": "g"},
                   checkpoint="base", weights="raw")
    return out


def _scorer(root: Path) -> tuple[Path, Path]:
    scorer, detector = root / "geneval", root / "detector"
    (scorer / "evaluation").mkdir(parents=True)
    (scorer / "evaluation" / "evaluate_images.py").write_text(FAKE_SCORER)
    detector.mkdir()
    (detector / "mask2former.pth").write_bytes(b"")
    return scorer, detector


def test_the_overall_score_is_the_unweighted_mean_of_the_task_rates(tmp_path):
    render = _render(tmp_path)
    scorer, detector = _scorer(tmp_path)
    summary = score(render, scorer=scorer, detector=detector)
    # by hand: single_object 7/8, two_object 1/4, counting 0/4, colors 2/4, position 1/12, color_attr 4/4
    want = {"single_object": 7 / 8, "two_object": 1 / 4, "counting": 0.0, "colors": 2 / 4, "position": 1 / 12,
            "color_attr": 1.0}
    assert summary["tasks"] == pytest.approx(want, abs=1e-15)
    assert summary["overall"] == pytest.approx(sum(want.values()) / 6, abs=1e-15)
    assert summary["overall"] != pytest.approx(15 / 36)  # not the per-image mean
    assert summary["images"] == 36
    record = json.loads((render / "eval.json").read_text())
    assert record["summary"]["geneval"] == summary["overall"]
    assert record["summary"]["geneval/position"] == pytest.approx(1 / 12)
    assert record["settings"]["geneval"]["protocol"]["scorer"]["overall"].startswith("unweighted mean")
    assert summarise(render / "geneval_results.jsonl") == summary
    assert not (render / "geneval_results.jsonl.partial").exists()


def test_the_cli_prints_the_table(tmp_path, capsys):
    render = _render(tmp_path)
    scorer, detector = _scorer(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["geneval-score", str(render), "--scorer", str(scorer), "--detector", str(detector)])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert out.index("single_object") < out.index("two_object") < out.index("color_attr")  # GenEval's order
    assert "overall" in out and f"{(7 / 8 + 1 / 4 + 0 + 1 / 2 + 1 / 12 + 1) / 6:.4f}" in out


def _fails(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["geneval-score", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_missing_or_failing_scorer_is_one_line_and_leaves_no_result(tmp_path, capsys, monkeypatch):
    render = _render(tmp_path)
    scorer, detector = _scorer(tmp_path)
    err = _fails(capsys, str(render), "--scorer", str(tmp_path / "nowhere"), "--detector", str(detector))
    assert "the GenEval scorer is not installed there" in err and "djghosh13/geneval" in err
    (render / "geneval_results.jsonl").write_text('{"tag": "colors", "correct": true}\n')  # an earlier result
    monkeypatch.setenv("FAKE_GENEVAL_FAIL", "1")
    err = _fails(capsys, str(render), "--scorer", str(scorer), "--detector", str(detector))
    assert "the GenEval scorer failed (exit 1): RuntimeError: CUDA is not available" in err
    assert not (render / "eval.json").exists() and not (render / "geneval_results.jsonl.partial").exists()
    assert (render / "geneval_results.jsonl").read_text() == '{"tag": "colors", "correct": true}\n'
    (render / PROTOCOL_FILE).unlink()
    err = _fails(capsys, str(render), "--scorer", str(scorer), "--detector", str(detector))
    assert "not a GenEval render of rdmx" in err


def test_results_that_are_not_the_scorers_are_refused(tmp_path):
    bad = tmp_path / "results.jsonl"
    bad.write_text('{"tag": "colors", "correct": true}\n{"filename": "x"}\n')
    with pytest.raises(RdmxError, match=r"line 2: no 'tag' / 'correct'"):
        summarise(bad)
    bad.write_text("")
    with pytest.raises(RdmxError, match="empty"):
        summarise(bad)
