"""Fault, bad-input and hostile probes of the CLI that once printed a traceback or kept wrong data."""

from __future__ import annotations

import json

import pytest

from rdmx.cli import main
from rdmx.errors import RdmxError
from rdmx.files import load_torch, save_torch
from rdmx.run import run_recipe
from rdmx.track.safe import LocalMetrics
from tests.test_engine import QUICK, tiny


def _call(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return exit_info.value.code, err


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_run_started_over_in_a_used_folder_keeps_only_its_own_metrics(tmp_path):
    out = tmp_path / "o"
    run_recipe(tiny(tmp_path, "train.steps=1"), out, progress=False)
    with open(out / "metrics.jsonl", "ab") as f:
        f.write(b"\xd5\xff not json, not utf-8\n")  # a damaged line must not stop the next run
    other = run_recipe(tiny(tmp_path, "train.steps=1", "train.lr=1e-6"), out, progress=False, resume=False)
    rows = _rows(out)
    assert [r["step"] for r in rows if "loss" in r] == [1]
    last_eval = [r for r in rows if "eval/sw_rK" in r][-1]
    assert last_eval["eval/sw_rK"] == pytest.approx(other["final"]["eval/sw_rK"])  # the new run's, not the old


def test_resume_drops_rows_logged_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 0, "floor/a": 1.0}\n{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 3.0}\n'
                     b'{"step": 3, "loss": 9.0}\n{"step": 3, "lo\xff')  # step 3: logged after the checkpoint, then killed
    local = LocalMetrics(path)
    local.rewind(2)
    assert [r["step"] for r in local.rows()] == [0, 1, 2]
    assert local.last_steps() == {"floor/a": 0, "loss": 2}
    local.rewind(None)
    assert not path.exists()


@pytest.mark.parametrize(("args", "message"), [
    (("sample", str(QUICK), "--n", "-5"), "Invalid value for '--n'"),
    (("eval", str(QUICK), "--n", "0"), "Invalid value for '--n'"),
    (("eval", str(QUICK), "--per-prompt", "0"), "Invalid value for '--per-prompt'"),
    (("render", str(QUICK), "--prompts", "p.txt", "--out", "x", "--seeds", "0"), "Invalid value for '--seeds'"),
    (("ui", "--port", "99999999"), "Invalid value for '--port'"),
])
def test_out_of_range_options_are_usage_errors(capsys, args, message):
    code, err = _call(capsys, *args)
    assert code == 2 and message in err


def test_an_out_path_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, err = _call(capsys, "run", str(QUICK), "--set", "tracking.backend=none", "--out", str(blocker))
    assert code == 2 and err.startswith(f"error: {blocker}: is a file, not a folder")
    assert len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "x"


def test_a_folder_where_the_checkpoint_goes_is_refused_before_training(tmp_path):
    (tmp_path / "o" / "checkpoints" / "last.pt").mkdir(parents=True)
    for resume in (True, False):
        with pytest.raises(RdmxError, match="last.pt is not a file"):
            run_recipe(tiny(tmp_path, "train.steps=1"), tmp_path / "o", progress=False, resume=resume)
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_a_checkpoint_with_a_foreign_balancer_state_names_the_file(tmp_path):
    r = tiny(tmp_path, "train.steps=1")
    run_recipe(r, tmp_path / "o", progress=False)
    ckpt = tmp_path / "o" / "checkpoints" / "last.pt"
    state = load_torch(ckpt)
    state["balancer"] = {"weird": 1}
    save_torch(ckpt, state)
    with pytest.raises(RdmxError, match=r"last\.pt: its balancer state cannot be restored .*--fresh"):
        run_recipe(tiny(tmp_path, "train.steps=2"), tmp_path / "o", progress=False)


def test_show_validates_every_sweep_cell(capsys):
    code, err = _call(capsys, "show", str(QUICK), "--set", 'sweep={"train.lr"=[1e-3, -1]}')
    assert code == 2 and "[sweep {'train.lr': -1}]: train.lr: Input should be greater than 0" in err
