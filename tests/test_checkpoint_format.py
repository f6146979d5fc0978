"""The sharded checkpoint format in one process: retention, the manifest's seal, damaged, missing
and partial files, rdmx 0.1's single files, and reading a checkpoint for evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.files import IntegrityError
from rdmx.recipe import load_recipe
from rdmx.train.checkpoint import (
    MANIFEST,
    clean_partial,
    latest,
    locate,
    open_checkpoint,
    read_manifest,
    scan,
)
from rdmx.train.checkpointer import keep
from rdmx.train.distributed import DistContext
from rdmx.train.loop import Trainer
from tests.test_engine import QUICK, params, tiny


def sealed_steps(out) -> list[int]:
    return [s for s, _, ok in scan(out / "checkpoints") if ok]


def test_retention_rule_by_hand():
    steps = [1, 2, 3, 4, 5, 6, 7]
    assert keep(steps, 2, 3) == {3, 6, 7}
    assert keep(steps, 1, 0) == {7}
    assert keep(steps, 3, 0) == {5, 6, 7}
    assert keep(steps, 1, 5) == {5, 7}


def test_retention_keeps_exactly_the_last_k_and_milestones_and_reports_disk(tmp_path, capsys):
    r = tiny(tmp_path, "train.steps=7", "train.checkpoint_every=1", "train.keep_last=2", "train.keep_every=3")
    trainer = Trainer(r, tmp_path / "o", progress=False)
    trainer.run(resume=False)
    assert sealed_steps(tmp_path / "o") == [3, 6, 7]
    err = capsys.readouterr().err
    assert "checkpoint step-000007 sealed" in err and "holds 3 (" in err and "removed step-000005" in err
    # every file the manifest lists is there, with its size; nothing else is written
    folder = tmp_path / "o" / "checkpoints" / "step-000007"
    manifest = read_manifest(folder)
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {MANIFEST}
    assert {"model/__0_0.distcp", "optim/__0_0.distcp", "state.pt"} <= on_disk
    assert manifest["step"] == 7 and manifest["keys"] == ["generator", "optimizer"] and manifest["world_size"] == 1
    # the milestone that left the rolling window (3) keeps its weights only; 6 and 7 are whole
    root = folder.parent
    assert not (root / "step-000003" / "optim").exists() and read_manifest(root / "step-000003")["pruned"]
    assert (root / "step-000006" / "optim").is_dir()
    assert "step-000003 kept as a milestone (weights)" in err
    assert open_checkpoint(root / "step-000003").keys == ["generator"]  # verified: still sealed and whole


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finished")
    r = tiny(tmp, "train.steps=3", "train.checkpoint_every=2", "train.keep_last=2")
    trainer = Trainer(r, tmp / "o", progress=False)
    trainer.run(resume=False)
    return tmp, r, params(trainer)


def _copy(finished, tmp_path):
    import shutil

    src, r, p = finished
    shutil.copytree(src / "o", tmp_path / "o")
    return r, p, tmp_path / "o" / "checkpoints" / "step-000003"


def test_evaluation_reads_a_checkpoint_in_one_process_by_folder_or_run(finished, tmp_path):
    r, expected, folder = _copy(finished, tmp_path)
    from rdmx.checkpoints import load_generator

    for where in (folder, folder.parent, folder.parent.parent):
        assert locate(where) == folder
        comp, ckpt = load_generator(r, where)
        got = torch.cat([p.detach().flatten() for p in comp.generator.parameters()])
        assert ckpt.step == 3 and torch.equal(got, expected)


@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_a_damaged_or_missing_shard_is_refused_naming_it_and_nothing_is_removed(finished, tmp_path, damage):
    r, _, folder = _copy(finished, tmp_path)
    shard = folder / "optim" / "__0_0.distcp"
    if damage == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:-10])
    else:
        shard.unlink()
    from rdmx.recipe import with_overrides

    r4 = with_overrides(r, ["train.steps=4"])
    with pytest.raises(RdmxError) as exc:
        Trainer(r4, tmp_path / "o", progress=False).run(resume=True)
    msg = str(exc.value)
    assert str(shard) in msg and "never used" in msg and "--fresh" in msg
    assert {"flip": "sha256", "truncate": "cut short", "missing": "missing"}[damage] in msg
    assert sealed_steps(tmp_path / "o") == [2, 3]  # nothing removed or overwritten
    with pytest.raises(RdmxError, match="optim/__0_0.distcp"):
        open_checkpoint(folder)  # rdmx eval / sample refuse it too


def test_an_altered_or_incomplete_manifest_is_refused_naming_it(finished, tmp_path):
    _, _, folder = _copy(finished, tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["step"] = 5
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=f"{folder / MANIFEST}: content does not match its checksum"):
        open_checkpoint(folder)
    (folder / MANIFEST).write_text('{"format": "rdmx-checkpoint-2", "fi')
    with pytest.raises(IntegrityError, match="not readable JSON"):
        open_checkpoint(folder)


def test_a_save_cut_short_is_ignored_and_only_rdmx_files_are_cleaned(finished, tmp_path):
    _, _, folder = _copy(finished, tmp_path)
    root = folder.parent
    partial = root / "step-000004"
    partial.mkdir()
    (partial / "model").mkdir()
    (partial / "model" / "__0_0.distcp").write_bytes(b"half")
    foreign = root / "step-000009"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert latest(root) == folder
    assert clean_partial(root) == [partial]
    assert not partial.exists() and (foreign / "notes.txt").read_text() == "mine"


def test_checkpoint_of_another_recipe_names_both_and_the_fix(finished, tmp_path):
    r, _, folder = _copy(finished, tmp_path)
    from rdmx.run import write_resolved_recipe

    write_resolved_recipe(r, tmp_path / "o" / "recipe.resolved.toml")
    with pytest.raises(RdmxError) as exc:
        open_checkpoint(folder, "0" * 16)
    msg = str(exc.value)
    assert "checkpoint of recipe fingerprint" in msg and "recipe.resolved.toml" in msg and "--fresh" in msg


def test_weights_that_do_not_fit_are_listed(finished, tmp_path):
    r, _, folder = _copy(finished, tmp_path)
    from rdmx.train.build import build_generator
    from rdmx.recipe import with_overrides

    other = build_generator(with_overrides(r, ["generator.width=16"]), torch.device("cpu"))
    with pytest.raises(RdmxError, match=r"do not fit this recipe's generator \(other shapes: .*\[32.*vs \[16"):
        open_checkpoint(folder).generator_state(other)


def test_a_world_size_the_batch_cannot_be_split_over_is_refused_before_anything_is_written(finished, tmp_path):
    r, _, _ = _copy(finished, tmp_path)
    with pytest.raises(RdmxError, match=r"must be a multiple of micro_batch × world size \(16 × 5\)"):
        Trainer(r, tmp_path / "o", progress=False, dist=DistContext(0, 5, 0))
    assert sealed_steps(tmp_path / "o") == [2, 3]


def test_single_file_checkpoints_of_rdmx_0_1_still_resume_and_evaluate(tmp_path):
    """A run killed under rdmx 0.1 left checkpoints/last.pt: it resumes from it, to the same weights."""
    from rdmx.train.legacy_checkpoint import save_checkpoint

    r = tiny(tmp_path, "train.steps=4")
    straight = Trainer(r, tmp_path / "a", progress=False)
    straight.run(resume=False)

    class Legacy(Trainer):  # 0.1's writer at step 2, then killed
        def checkpoint(self, step, **kw):
            if step == 2:
                from rdmx.train.loop import RunState

                state = RunState(self.state.history, self.state.evals, self.state.skipped, 0.0)
                save_checkpoint(self.out / "checkpoints" / "last.pt", step=step, generator=self.c.generator,
                                optimizer=self.optimizer, balancer=self.c.balancer, fingerprint=self.resolved.fingerprint,
                                run_id=None, extra={"state": state.to_dict(), "micro_batch": self.micro_batch})
                raise KeyboardInterrupt
            return super().checkpoint(step, **kw)

    r2 = tiny(tmp_path, "train.steps=4", "train.checkpoint_every=2")
    with pytest.raises(KeyboardInterrupt):
        Legacy(r2, tmp_path / "b", progress=False).run(resume=False)
    legacy = tmp_path / "b" / "checkpoints" / "last.pt"
    assert latest(legacy.parent) == legacy and open_checkpoint(tmp_path / "b").step == 2
    resumed = Trainer(r2, tmp_path / "b", progress=False)
    assert resumed.run(resume=True)["steps"] == 4
    assert torch.equal(params(resumed), params(straight))
    assert sealed_steps(tmp_path / "b") == [4]


def test_keep_checkpoints_of_older_recipes_reads_as_milestones(tmp_path):
    r = load_recipe(QUICK, ["train.checkpoint_every=20", "train.keep_checkpoints=true"])
    assert (r.recipe.train.keep_every, r.recipe.train.keep_last) == (20, 1)
    assert load_recipe(QUICK, []).fingerprint == load_recipe(QUICK, ["train.keep_last=3", "train.keep_every=7",
                                                                      "train.checkpoint_minutes=5"]).fingerprint


def test_an_unknown_stop_signal_is_a_recipe_error():
    from rdmx.errors import RecipeError

    with pytest.raises(RecipeError, match=r"train.stop_signals.*'SIGFOO' is not a signal a run can catch"):
        load_recipe(QUICK, ['train.stop_signals=["SIGTERM", "SIGFOO"]'])
    assert load_recipe(QUICK, ['train.stop_signals=["USR2"]']).recipe.train.stop_signals == ["USR2"]
