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


def test_a_file_where_the_checkpoints_go_is_refused_before_training(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "checkpoints").write_text("x")
    for resume in (True, False):
        with pytest.raises(RdmxError, match="checkpoints is not a folder"):
            run_recipe(tiny(tmp_path, "train.steps=1"), tmp_path / "o", progress=False, resume=resume)
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_a_checkpoint_with_a_foreign_balancer_state_names_the_file(tmp_path):
    r = tiny(tmp_path, "train.steps=1")
    run_recipe(r, tmp_path / "o", progress=False)
    folder = tmp_path / "o" / "checkpoints" / "step-000001"
    state = load_torch(folder / "state.pt")
    state["balancer"] = {"weird": 1}
    save_torch(folder / "state.pt", state)
    reseal(folder)  # as another version of rdmx would have sealed it
    with pytest.raises(RdmxError, match=r"step-000001: its balancer state cannot be restored .*--fresh"):
        run_recipe(tiny(tmp_path, "train.steps=2"), tmp_path / "o", progress=False)


def reseal(folder):
    from rdmx.files import file_sha256, read_sealed_json, write_sealed_json

    manifest = read_sealed_json(folder / "manifest.json")
    for name, info in manifest["files"].items():
        info.update(bytes=(folder / name).stat().st_size, sha256=file_sha256(folder / name))
    write_sealed_json(folder / "manifest.json", manifest)


def test_show_validates_every_sweep_cell(capsys):
    code, err = _call(capsys, "show", str(QUICK), "--set", 'sweep={"train.lr"=[1e-3, -1]}')
    assert code == 2 and "[sweep {'train.lr': -1}]: train.lr: Input should be greater than 0" in err


def test_a_valid_bank_or_floor_copied_over_another_is_discarded_not_used(tmp_path):
    import shutil

    import torch

    from rdmx.files import IntegrityError, save_tensors, write_sealed_json
    from rdmx.reference.build import _load_bank, _read_floor, discard_damaged

    banks = [tmp_path / f"enc{i}-data-val-n4-s0.safetensors" for i in (1, 2)]
    floors = [tmp_path / f"enc{i}-data-req-d8-n64-s0.json" for i in (1, 2)]
    for i, (bank, floor) in enumerate(zip(banks, floors, strict=True)):
        save_tensors(bank, {"features": torch.full((4, 3), float(i)), "labels": torch.zeros(4, dtype=torch.long)},
                     {"split": "val", "file": bank.name})
        write_sealed_json(floor, {"floor": float(i), "file": floor.name})
    assert _load_bank(banks[1])[0][0, 0] == 1 and _read_floor(floors[1]) == 1.0
    shutil.copy(banks[0], banks[1])  # another encoder's bank, checksum intact
    shutil.copy(floors[0], floors[1])
    for load, path in ((_load_bank, banks[1]), (_read_floor, floors[1])):
        with pytest.raises(IntegrityError, match="copied or renamed over this one"):
            load(path)
    notes = discard_damaged({"val_bank": banks[1], "floor": floors[1]})
    assert len(notes) == 2 and not banks[1].exists() and not floors[1].exists()


def test_a_feature_shard_copied_from_another_encoder_is_refused(tmp_path):
    import shutil

    import torch

    from rdmx.files import IntegrityError, save_tensors, write_sealed_json
    from rdmx.reference.extract import FORMAT, MANIFEST, FeatureSet, shard_name

    sets = [tmp_path / f"enc{i}-data-val" for i in (1, 2)]
    for i, d in enumerate(sets):
        write_sealed_json(d / MANIFEST, {"format": FORMAT, "complete": True, "dim": 3, "rows": 4, "shard_rows": 4,
                                         "shards": 1})
        save_tensors(d / shard_name(0), {"features": torch.full((4, 3), float(i)),
                                         "labels": torch.zeros(4, dtype=torch.long)}, {"shard": "0", "set": d.name})
    assert FeatureSet.open(sets[1]).shard(0)[0][0, 0] == 1
    shutil.copy(sets[0] / shard_name(0), sets[1] / shard_name(0))
    with pytest.raises(IntegrityError, match="is shard 0 of enc1-data-val: copied or renamed"):
        FeatureSet.open(sets[1]).shard(0)


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_a_bad_loss_scale_is_one_message(capsys, value):
    code, err = _call(capsys, "show", str(QUICK), "--set", f"train.loss_scale={value}")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train.loss_scale: Value error, a number s (the gradient s·∇L) must be finite and > 0" in err


def test_encoders_configured_for_other_channels_than_the_data_are_refused_by_show(tmp_path, capsys):
    from PIL import Image

    for i in range(3):
        (tmp_path / "imgs" / f"c{i}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / f"c{i}" / "x.png")
    data = 'data={ name = "image-folder", path = ' + json.dumps(str(tmp_path / "imgs")) + ", size = 8, val_count = 1 }"
    code, err = _call(capsys, "show", str(QUICK), "--set", data)
    assert code == 2
    assert "battery.encoders[0].channels: 1, but data 'image-folder' has 3-channel images; set channels = 3" in err


def test_reference_build_takes_its_workers_from_the_recipe(tmp_path, capsys, monkeypatch):
    import rdmx.cli_reference as cli_reference

    seen = {}

    def fake_build(*args, num_workers, **kwargs):
        seen["workers"] = num_workers
        raise RdmxError("stop here")

    monkeypatch.setattr(cli_reference, "run_reference_build", fake_build)
    tiny_set = ["--set", "tracking.backend=none", "--set", "reference.workers=0"]
    assert _call(capsys, "reference", "build", str(QUICK), *tiny_set)[0] == 2 and seen["workers"] == 0
    assert _call(capsys, "reference", "build", str(QUICK), *tiny_set, "--workers", "3")[0] == 2
    assert seen["workers"] == 3
    code, err = _call(capsys, "reference", "build", str(QUICK), "--workers", "-1")
    assert code == 2 and "Invalid value for '--workers'" in err


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_memory_override_is_one_message(capsys, monkeypatch, value):
    monkeypatch.setenv("RDMX_MEMORY_BYTES", value)
    code, err = _call(capsys, "show", str(QUICK))
    assert code == 2 and err.strip() == f"error: RDMX_MEMORY_BYTES must be a positive number of bytes (e.g. 64e9), got {value!r}"


@pytest.mark.parametrize("uri", ["bogus://x", "http://127.0.0.1:5000"])
def test_ui_on_something_that_is_not_a_store_is_one_message(capsys, uri):
    code, err = _call(capsys, "ui", "--uri", uri)
    assert code == 2 and err.startswith("error: rdmx ui: the MLflow UI reads a backend store")


def test_a_summary_that_cannot_be_replaced_names_it_not_the_temporary(tmp_path, capsys):
    run_recipe(tiny(tmp_path, "train.steps=1"), tmp_path / "o", progress=False)
    (tmp_path / "o" / "summary.json").unlink()
    (tmp_path / "o" / "summary.json").mkdir()
    recipe = str(tmp_path / "o" / "recipe.resolved.toml")
    code, err = _call(capsys, "run", recipe, "--set", "train.steps=2", "--out", str(tmp_path / "o"), "--no-progress")
    line = err.strip().splitlines()[-1]  # after the checkpoint's line
    assert code == 2 and line.startswith(f"error: {tmp_path / 'o' / 'summary.json'}: Is a directory"), err
    assert ".tmp-" not in err


@pytest.mark.parametrize("step", [-4, "ten", 2.5])
def test_a_checkpoint_with_an_impossible_step_is_refused(tmp_path, step):
    from rdmx.files import IntegrityError
    from rdmx.train.legacy_checkpoint import FORMAT, load_checkpoint

    path = save_torch(tmp_path / "last.pt", {"format": FORMAT, "step": step, "fingerprint": "f", "generator": {}})
    with pytest.raises(IntegrityError, match="incomplete checkpoint"):
        load_checkpoint(path, "f")
