"""Reliability, round three: each probe that found a problem, reproduced. No file of the user's is
touched, no code runs on a recipe's say-so, no run that did not train says it succeeded, a full
disk is one clear line, and the messages say what happened."""

from __future__ import annotations

import json
import os
import shutil
from collections import namedtuple

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.files import FolderLock, atomic_write, clean_stale_temps, save_tensors
from rdmx.recipe import load_recipe
from rdmx.run import run_recipe, write_resolved_recipe
from rdmx.train.loop import Trainer
from tests.test_engine import QUICK, tiny
from tests.test_probes import _call


# -- security ----------------------------------------------------------------------------------

def test_a_lock_planted_as_a_symlink_is_refused_and_its_target_untouched(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / ".lock").symlink_to(notes)
    with pytest.raises(RdmxError, match=r"\.lock is a symbolic link .*remove the link"), FolderLock(tmp_path / "R"):
        pass
    assert notes.read_text() == "mine"
    (tmp_path / "S").mkdir()
    (tmp_path / "S" / "summary.json").symlink_to(notes)
    with pytest.raises(RdmxError, match="summary.json is a symbolic link"):
        atomic_write(tmp_path / "S" / "summary.json", lambda tmp: open(tmp, "w").write("{}"))
    assert notes.read_text() == "mine"


def test_a_recipe_alone_cannot_switch_on_code_execution(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("RDMX_TRUST_CODE", raising=False)
    from rdmx.plugins import get_plugins

    entry = get_plugins().get("generators", "pmf-h")
    cfg = entry.config(tiny=True, weights=str(tmp_path / "w.pth"), allow_pickle=True)
    from rdmx.trust import check

    with pytest.raises(RdmxError, match=r"generator.allow_pickle = true: this setting runs code .*--trust-code"):
        check(cfg, "generator")
    monkeypatch.setenv("RDMX_TRUST_CODE", "1")
    check(cfg, "generator")  # the person running the command said so
    monkeypatch.delenv("RDMX_TRUST_CODE")
    # rdmx show flags it; a dry run refuses it before any file is read
    recipe = tmp_path / "r.toml"
    recipe.write_text(open(QUICK).read().replace('[generator]\nname = "conv"\nnoise_dim = 32\nwidth = 32',
                                                 '[generator]\nname = "pmf-h"\ntiny = true\nallow_pickle = true\n'
                                                 f'weights = "{tmp_path / "w.pth"}"'))
    out = _show(capsys, recipe)
    assert "# WARNING: generator.allow_pickle = true runs code" in out
    code, err = _call(capsys, "run", str(recipe), "--dry-run")
    assert code == 2 and "generator.allow_pickle = true: this setting runs code" in err


def _show(capsys, recipe) -> str:
    with pytest.raises(SystemExit):
        from rdmx.cli import main

        main(["show", str(recipe)])
    return capsys.readouterr().out


# -- silent loss or wrong results ----------------------------------------------------------------

def test_a_run_whose_steps_were_all_skipped_does_not_say_it_succeeded(tmp_path, monkeypatch):
    r = tiny(tmp_path, "train.steps=4", "train.max_consecutive_skips=0")
    original = Trainer.compute_gradient

    def broken(self, step):
        res = original(self, step)
        res.loss = res.loss * float("nan")
        return res

    monkeypatch.setattr(Trainer, "compute_gradient", broken)
    with pytest.raises(RdmxError, match=r"skipped 4 of its 4 steps .*did not train; .*summary says trained = false"):
        run_recipe(r, tmp_path / "o", progress=False)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["trained"] is False and summary["skipped_steps"] == 4
    with pytest.raises(RdmxError, match="which did not train"):
        run_recipe(r, tmp_path / "o", progress=False)


def test_the_resolved_recipe_keeps_a_literal_dollar_brace(tmp_path, monkeypatch):
    monkeypatch.setenv("X", "elsewhere")
    literal = tmp_path / "${X}" / "cache"
    r = load_recipe(QUICK, [f"reference.cache_dir={json.dumps(str(tmp_path / '$${X}' / 'cache'))}"])
    assert r.recipe.reference.cache_dir == str(literal)
    write_resolved_recipe(r, tmp_path / "resolved.toml")
    again = load_recipe(tmp_path / "resolved.toml")
    assert again.recipe.reference.cache_dir == str(literal) and again.fingerprint == r.fingerprint


def test_stale_temporaries_are_only_the_files_rdmx_made(tmp_path):
    mine = [tmp_path / ".notes.tmp-backup", tmp_path / ".report.tmp-v2", tmp_path / "sub" / ".a.tmp-99999999-zz"]
    for p in mine:
        p.parent.mkdir(exist_ok=True)
        p.write_text("user")
    dead = tmp_path / "sub" / ".summary.json.tmp-99999999-0a1b2c3d"  # rdmx's own name, its process gone
    dead.write_text("{}")
    assert clean_stale_temps(tmp_path, recursive=True) == [dead]
    assert all(p.read_text() == "user" for p in mine)


def test_fresh_on_a_finished_run_killed_before_its_first_checkpoint(tmp_path, monkeypatch):
    r = tiny(tmp_path, "train.steps=2")
    run_recipe(r, tmp_path / "o", progress=False)

    class Killed(Trainer):
        def train_step(self, step):
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("rdmx.train.loop.Trainer", Killed)
        with pytest.raises(KeyboardInterrupt):
            run_recipe(r, tmp_path / "o", progress=False, resume=False)
    assert not (tmp_path / "o" / "summary.json").exists()
    assert not list((tmp_path / "o" / "checkpoints").glob("step-*"))
    again = run_recipe(r, tmp_path / "o", progress=False)  # trains: the old run's summary is not taken for it
    rows = [json.loads(x) for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert again["steps"] == 2 and [r["step"] for r in rows if "loss" in r] == [1, 2]


# -- a full disk --------------------------------------------------------------------------------

def test_a_full_disk_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 1 << 20))
    with pytest.raises(RdmxError, match=r"not enough disk for big.safetensors in .*: 64.0 MiB needed, 1.0 MiB free"):
        save_tensors(tmp_path / "big.safetensors", {"x": torch.zeros(16 << 20)})
    assert not list(tmp_path.iterdir())
    r = tiny(tmp_path, "train.steps=1")
    trainer = Trainer(r, tmp_path / "o", progress=False)
    trainer.make_optimizer()
    with pytest.raises(RdmxError, match=r"not enough disk for the checkpoint of step 1 .*nothing was written"):
        trainer.checkpoint(1)
    assert not (tmp_path / "o" / "checkpoints").exists() or not list((tmp_path / "o" / "checkpoints").iterdir())


def test_a_disk_that_fills_during_a_write_is_one_line_and_the_old_file_stays(tmp_path, monkeypatch):
    (tmp_path / "ckpt.pt").write_text("old")

    def full(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos; file write failed: "
                           "No space left on device")

    with pytest.raises(RdmxError, match=r"the disk is full: .*ckpt.pt could not be written"):
        atomic_write(tmp_path / "ckpt.pt", full)
    assert (tmp_path / "ckpt.pt").read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_rdmx_sample_refuses_more_samples_than_the_disk_holds(capsys, tmp_path):
    code, err = _call(capsys, "sample", str(QUICK), "--n", "100000000000", "--out", str(tmp_path / "s"))
    assert code == 2 and "not enough disk for --n 100000000000 samples (samples.npz, uint8)" in err
    assert not (tmp_path / "s").exists()


# -- tracebacks and unclear messages ---------------------------------------------------------------

def test_a_baseline_checkpoint_of_another_shape_is_one_message(tmp_path):
    from rdmx.checkpoints import evaluate_checkpoint

    r = tiny(tmp_path, "train.steps=1")
    run_recipe(r, tmp_path / "o", progress=False)
    with pytest.raises(RdmxError, match=r"do not fit this recipe's generator \(other shapes"):
        evaluate_checkpoint(r, tmp_path / "o", n=32, baseline=tmp_path / "o", baseline_set=["generator.width=16"],
                            progress=False, log=False)


@pytest.mark.parametrize("args, message", [
    (["show", "recipes"], "recipes is a folder, not a recipe file"),
    (["show", str(QUICK), "--set", "battery.encoders[-1].seed=1"], "indices count from 0 and cannot be negative"),
    (["show", str(QUICK), "--set", 'battery.encoders[0].label="../../etc"'], "battery.encoders[0].label: String should "
     "match pattern"),
])
def test_messages_that_once_misled(capsys, args, message):
    code, err = _call(capsys, *args)
    assert code == 2 and message in err


def test_landmarks_beyond_the_rows_are_said(tmp_path, capsys):
    r = tiny(tmp_path, "train.steps=1", "estimator.landmarks=5000")
    Trainer(r, tmp_path / "o", progress=False).prepare_references()
    assert "estimator.landmarks = 5000 but the reference has" in capsys.readouterr().err
    assert os.path.isdir(tmp_path / "cache")


def test_a_feature_folder_copied_over_another_is_extracted_again(tmp_path, capsys):
    from torch.utils.data import TensorDataset

    from rdmx.reference.extract import FeatureSet, extract_features
    from rdmx.testing import tiny_conv

    data = TensorDataset(torch.rand(9, 3, 12, 12), torch.zeros(9, dtype=torch.long))
    a, b = tiny_conv(0, 6, width=4), tiny_conv(1, 6, width=4)
    kw = {"cache_dir": tmp_path, "data_fingerprint": "d", "split": "train", "progress": False}
    (da,) = extract_features({"a": a}, data, **kw).values()
    (db,) = extract_features({"b": b}, data, **kw).values()
    want = FeatureSet.open(db).load_all()[0]
    shutil.rmtree(db)
    shutil.copytree(da, db)  # encoder a's features under encoder b's folder
    (again,) = extract_features({"b": b}, data, **kw).values()
    assert "holds the features of encoder" in capsys.readouterr().err
    assert torch.equal(FeatureSet.open(again).load_all()[0], want)


def test_an_encoder_whose_code_changed_is_not_served_its_old_features(tmp_path, capsys):
    """The edit loop of a plugin author: the encoder's code changes, its fingerprint does not; the
    cached features are spot-checked before reuse and extracted again, with the reason."""
    from torch.utils.data import TensorDataset

    from rdmx.reference.extract import FeatureSet, extract_features
    from rdmx.testing import tiny_conv

    data = TensorDataset(torch.rand(9, 3, 12, 12), torch.zeros(9, dtype=torch.long))
    kw = {"cache_dir": tmp_path, "data_fingerprint": "d", "split": "train", "progress": False}
    enc = tiny_conv(0, 6, width=4)
    (d,) = extract_features({"mine": enc}, data, **kw).values()
    extract_features({"mine": enc}, data, **kw)  # unchanged code: reused, nothing said
    assert "differ from what its code computes now" not in capsys.readouterr().err
    with torch.no_grad():
        for p in enc.parameters():
            p.mul_(-1.5)  # "edited" code, same fingerprint
    (again,) = extract_features({"mine": enc}, data, **kw).values()
    err = capsys.readouterr().err
    assert again == d and "differ from what its code computes now" in err and "bump EncoderSpec.preset_version" in err
    with torch.no_grad():
        want = enc(torch.stack([data[i][0] for i in range(9)]))
    assert torch.allclose(FeatureSet.open(d).load_all()[0], want, rtol=1e-5, atol=1e-6)
