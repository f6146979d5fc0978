"""TensorBoard tracking read back with TensorBoard's own reader, several trackers at once, and
a tracker that cannot write: one line, the run and the other trackers unharmed."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from rdmx.recipe import load_recipe
from rdmx.run import run_recipe
from rdmx.track.multi import join_ids, split_ids
from tests.test_engine import QUICK, TINY

tb = pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def recipe(tmp_path, *sets):
    return load_recipe(QUICK, [*TINY, f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
                               "train.steps=3", "train.sample_every=2", "eval.every=2", *sets])


def events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def local_rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def text(acc, tag):
    import numpy as np

    return [np.asarray(e.tensor_proto.string_val[0]).item().decode() for e in acc.Tensors(f"{tag}/text_summary")]


def test_tensorboard_holds_every_metric_image_and_text_the_run_logged(tmp_path):
    out = tmp_path / "o"
    summary = run_recipe(recipe(tmp_path, "tracking.backend=tensorboard"), out, progress=False)
    assert summary["run_id"] == str((out / "tensorboard").resolve())
    acc = events(out / "tensorboard")
    # every (metric, step) of metrics.jsonl, each once, as TensorBoard stores it (float32)
    rows = local_rows(out)
    want = {(k, r["step"]): v for r in rows for k, v in r.items() if k != "step"}
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert len(got) == sum(len(acc.Scalars(t)) for t in acc.Tags()["scalars"])  # no step twice
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-30) for k in want)
    # the sample grids, pixel for pixel
    grids = sorted((out / "samples").glob("step-*.png"))
    assert [f"samples/{p.stem}" for p in grids] == sorted(t for t in acc.Tags()["images"])
    ev = acc.Images(f"samples/{grids[-1].stem}")[0]
    import io

    import numpy as np

    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ev.encoded_image_string)).convert("RGB")),
                          np.asarray(Image.open(grids[-1]).convert("RGB")))
    # parameters, the resolved recipe and the summary in the text tab
    params = text(acc, "params")[0]
    assert "| `train.steps` | `3` |" in params and "| `seed` | `0` |" in params
    recipe_text = text(acc, "recipe.resolved.toml")[0]
    assert recipe_text.replace("\n    ", "\n").strip() == (out / "recipe.resolved.toml").read_text().strip()
    logged = json.loads(text(acc, "summary")[0].replace("\n    ", "\n"))
    assert logged["final"] == json.loads((out / "summary.json").read_text())["final"]
    assert text(acc, "status") == ["FINISHED"]


def test_several_trackers_at_once_and_one_that_cannot_write(tmp_path, capsys):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the event folder would go")
    db = tmp_path / "m.db"
    out = tmp_path / "o"
    r = recipe(tmp_path, 'tracking.backends=["mlflow", "tensorboard"]',
               f"tracking.uri={json.dumps('sqlite:///' + str(db))}", "tracking.experiment=multi",
               f"tracking.tensorboard.logdir={json.dumps(str(blocked))}")
    assert r.config("tracking.mlflow").experiment == "multi"  # a flat key goes to the tracker that has it
    summary = run_recipe(r, out, progress=False)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "tracking (tensorboard)" in ln]
    assert len(lines) == 1 and f"cannot write event files in {blocked}" in lines[0], err
    assert summary["trained"] and (out / "summary.json").is_file()
    ids = split_ids(summary["run_id"], ["mlflow", "tensorboard"])
    assert ids["tensorboard"] is None and ids["mlflow"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    history = {m.step: m.value for m in client.get_metric_history(ids["mlflow"], "loss")}
    assert history == {r["step"]: r["loss"] for r in local_rows(out) if "loss" in r}
    assert client.get_run(ids["mlflow"]).info.status == "FINISHED"


def test_tracking_table_mistakes_are_named(tmp_path):
    from rdmx.errors import RdmxError

    with pytest.raises(RdmxError, match=r"tracking\.colour: no tracker has this option"):
        recipe(tmp_path, 'tracking.backends=["mlflow", "tensorboard"]', "tracking.colour=1")
    with pytest.raises(RdmxError, match=r"tracking\.colour: unknown key"):
        recipe(tmp_path, "tracking.backend=tensorboard", "tracking.colour=1")
    # mlflow's experiment (in the quickstart's table) is left to mlflow when another tracker is chosen
    assert recipe(tmp_path, "tracking.backend=tensorboard").config("tracking").logdir is None
    with pytest.raises(RdmxError, match=r"names a tracker twice"):
        recipe(tmp_path, 'tracking.backends=["mlflow", "mlflow"]')
    with pytest.raises(RdmxError, match=r"tracking.backends.*'nope'"):
        recipe(tmp_path, 'tracking.backends=["mlflow", "nope"]')


def test_run_ids_of_several_trackers_round_trip():
    names = ["mlflow", "wandb"]
    assert split_ids(join_ids({"mlflow": "ab12", "wandb": "x9"}), names) == {"mlflow": "ab12", "wandb": "x9"}
    assert split_ids("ab12", names) == {"mlflow": "ab12", "wandb": None}  # a run tracked by one before
    assert join_ids({"mlflow": None, "wandb": None}) is None


def test_a_resumed_run_continues_its_event_folder_with_each_step_once(tmp_path, monkeypatch):
    from tests.test_run_history import kill_at

    r = recipe(tmp_path, "tracking.backend=tensorboard", "train.steps=5", "train.checkpoint_every=2",
               "train.sample_every=0")
    straight = tmp_path / "straight"
    run_recipe(r, straight, progress=False)
    kill_at(monkeypatch, 3)  # steps 1-3 logged, the checkpoint at step 2: step 3 runs again on resume
    with pytest.raises(KeyboardInterrupt):
        run_recipe(r, tmp_path / "b", progress=False)
    resumed = run_recipe(r, tmp_path / "b", progress=False)
    assert resumed["run_id"] == str((tmp_path / "b" / "tensorboard").resolve())
    acc, ref = events(tmp_path / "b" / "tensorboard"), events(straight / "tensorboard")
    steps = [e.step for e in acc.Scalars("loss")]
    assert steps == [1, 2, 3, 4, 5]  # one event file per process, no step twice
    assert len(list((tmp_path / "b" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert [e.value for e in acc.Scalars("loss")] == [e.value for e in ref.Scalars("loss")]
