"""Runs keep their history, own their folder, and survive their tracker."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch

from rdmx.errors import RdmxError
from rdmx.files import FolderLock
from rdmx.run import run_recipe
from rdmx.track.base import Tracker
from rdmx.track.safe import SafeTracker
from rdmx.train.checkpoint import open_checkpoint
from rdmx.train.loop import Trainer
from tests.helpers import ROOT, rdmx
from tests.test_engine import QUICK, TINY, tiny

COMPARED = ("initial", "final", "skipped_steps", "final_loss", "steps", "floors", "fingerprint")


@pytest.fixture
def nan_first_step(monkeypatch):
    """Step 0's loss is non-finite (so it is skipped): the skipped count must survive a resume."""
    original = Trainer.compute_gradient

    def compute(self, step):
        res = original(self, step)
        if step == 0:
            res.loss = torch.tensor(float("nan"))
        return res

    monkeypatch.setattr(Trainer, "compute_gradient", compute)
    return original


def kill_at(monkeypatch, at_step: int):
    """The next run dies (KeyboardInterrupt) when it starts step ``at_step`` (0-based)."""
    current = Trainer.compute_gradient

    def compute(self, step):
        if step == at_step:
            monkeypatch.setattr(Trainer, "compute_gradient", current)  # only this run dies
            raise KeyboardInterrupt
        return current(self, step)

    monkeypatch.setattr(Trainer, "compute_gradient", compute)


def test_resumed_run_summary_equals_an_uninterrupted_one(tmp_path, monkeypatch, nan_first_step):
    r = tiny(tmp_path, "train.steps=5", "train.checkpoint_every=2", "eval.every=2", "train.max_skipped_fraction=0.5")
    straight = run_recipe(r, tmp_path / "a", progress=False)
    kill_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(r, tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "summary.json").exists()
    resumed = run_recipe(r, tmp_path / "b", progress=False)
    assert straight["skipped_steps"] == 1 and straight["initial"]
    for key in COMPARED:
        assert resumed[key] == straight[key], key
    assert resumed["wall_time_s"] > 0
    on_disk = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert on_disk["initial"] == straight["initial"] and on_disk["skipped_steps"] == 1


def test_raising_steps_continues_a_constant_rate_run(tmp_path):
    """Under a constant learning rate the first k steps do not depend on train.steps: a finished
    2-step run asked for 4 continues from its checkpoint into the same 4 steps a 4-step run makes;
    asking for fewer steps than the checkpoint holds is refused."""
    short = tiny(tmp_path, "train.steps=2", "train.checkpoint_every=1")
    long = tiny(tmp_path, "train.steps=4", "train.checkpoint_every=1")
    assert short.fingerprint == long.fingerprint
    cosine = [tiny(tmp_path, f"train.steps={n}", "train.lr_schedule=\"cosine\"").fingerprint for n in (2, 4)]
    assert cosine[0] != cosine[1]  # the schedule depends on the length
    straight = run_recipe(long, tmp_path / "a", progress=False)
    run_recipe(short, tmp_path / "b", progress=False)
    extended = run_recipe(long, tmp_path / "b", progress=False)
    def losses(folder):
        return [h["loss"] for h in open_checkpoint(folder).extra["state"]["history"]]

    assert losses(tmp_path / "b") == losses(tmp_path / "a") and len(losses(tmp_path / "a")) == 4
    assert extended["final"] == straight["final"] and extended["steps"] == 4
    with pytest.raises(RdmxError, match=r"at step 4, beyond train.steps = 2.*--fresh"):
        run_recipe(short, tmp_path / "b", progress=False)


def test_running_a_finished_run_again_changes_nothing(tmp_path):
    sets = [*TINY, "train.steps=2", f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}",
            "tracking.backend=none"]
    args = ["run", str(QUICK), *sum((["--set", s] for s in sets), []), "--out", str(tmp_path / "o"), "--no-progress"]
    first = rdmx(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "o").rglob("*") if p.is_file() and p.name != ".lock"}
    again = rdmx(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "finished run (2 steps): nothing to do" in again.stderr
    assert "sw_rK" in again.stdout  # the summary is printed again
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "o").rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == files


def test_a_second_run_in_a_folder_in_use_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "o"
    with FolderLock(out):
        res = rdmx("run", str(QUICK), "--set", "train.steps=1", "--set", "tracking.backend=none",
                   "--out", str(out), "--no-progress", cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"is in use by another rdmx run (PID {__import__('os').getpid()})" in res.stderr
    with FolderLock(out), pytest.raises(RdmxError, match="in use"), FolderLock(out):
        pass


class Flaky(Tracker):
    """Starts fine, then every metrics call fails (a damaged store, an outage)."""

    def __init__(self):
        self.calls = 0

    def start(self, run_name, params, tags=None, run_id=None, nested=False):
        self.run_id = "r1"
        return self.run_id

    def log_metrics(self, metrics, step):
        self.calls += 1
        raise OSError("database disk image is malformed")

    def log_artifact(self, path, subdir=None):
        raise OSError("artifact store down")

    def end(self, status="FINISHED"):
        self.ended = status


def test_tracker_failures_never_stop_training(tmp_path, capfd):
    r = tiny(tmp_path, "train.steps=3")
    flaky = Flaky()
    tracker = SafeTracker(flaky, sleep=lambda s: None)
    from rdmx.run import run_one

    summary = run_one(r, tmp_path / "o", tracker, progress=False)
    assert summary["steps"] == 3 and flaky.ended == "FINISHED"
    err = capfd.readouterr().err
    assert err.count("tracking: logging metrics failed after 3 tries (OSError: database disk image") == 1
    rows = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3]
    assert any("eval/sw_rK" in row for row in rows)


def test_resume_logs_no_duplicate_steps_to_mlflow(tmp_path, monkeypatch):
    import mlflow

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = tiny(tmp_path, "train.steps=5", "train.checkpoint_every=2", "tracking.backend=mlflow",
             f"tracking.uri={json.dumps(db)}")
    kill_at(monkeypatch, 3)  # steps 1-3 are logged, the checkpoint holds step 2
    with pytest.raises(KeyboardInterrupt):
        run_recipe(r, tmp_path / "o", progress=False)
    summary = run_recipe(r, tmp_path / "o", progress=False)
    client = mlflow.tracking.MlflowClient(db)
    steps = [m.step for m in client.get_metric_history(summary["run_id"], "loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5]
    local = [json.loads(x)["step"] for x in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert local == [1, 2, 3, 4, 5]
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"


def test_a_run_left_open_by_a_killed_process_is_marked_failed(tmp_path):
    import mlflow

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(db)
    exp = client.create_experiment("rdmx")
    dead = client.create_run(exp).info.run_id  # what kill -9 before the first checkpoint leaves
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "run.json").write_text(json.dumps({"run_id": dead}))
    r = tiny(tmp_path, "train.steps=1", "tracking.backend=mlflow", f"tracking.uri={json.dumps(db)}")
    summary = run_recipe(r, tmp_path / "o", progress=False)
    assert client.get_run(dead).info.status == "FAILED"
    assert summary["run_id"] != dead and client.get_run(summary["run_id"]).info.status == "FINISHED"


def test_concurrent_first_runs_share_a_new_mlflow_store(tmp_path):
    code = (
        "import sys; from rdmx.track.mlflow_tracker import MlflowTracker\n"
        "from types import SimpleNamespace as N\n"
        "t = MlflowTracker(N(uri=sys.argv[1], experiment='race'))\n"
        "t.start('r', {'a': 1}); t.log_metrics({'x': 1.0}, 1); t.end()\n"
    )
    db = f"sqlite:///{tmp_path / 'new.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", code, db], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [(p.wait(timeout=240), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], [e[-800:] for _, e in results]


def test_an_unreachable_tracking_server_is_detected_and_the_run_goes_on(tmp_path, capfd):
    from types import SimpleNamespace

    from rdmx.track.mlflow_tracker import MlflowTracker, probe_server

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(RdmxError, match="unreachable"):
            probe_server(url, timeout=0.5)
    tracker = SafeTracker(MlflowTracker(SimpleNamespace(uri=url, experiment="x")), sleep=lambda s: None)
    tracker.use_folder(tmp_path)
    assert tracker.start("r", {"a": 1}) is None  # the listener is closed now: refused at once
    tracker.log_metrics({"loss": 1.0}, 1)
    tracker.end()
    assert "tracking: starting the run failed" in capfd.readouterr().err
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "loss": 1.0}


def test_a_wall_clock_budget_ends_a_run_and_a_larger_one_continues_it(tmp_path):
    """train.max_seconds (the paper's batch ablation compares arms at equal wall-clock): the run ends
    at the first step boundary past the budget with a checkpoint and its final evaluation; the same
    budget again changes nothing; a larger budget (here none) continues it to the weights of a run
    never stopped."""
    straight = run_recipe(tiny(tmp_path, "train.steps=4"), tmp_path / "a", progress=False)
    budget = tiny(tmp_path, "train.steps=4", "train.max_seconds=1e-6")
    first = run_recipe(budget, tmp_path / "b", progress=False)
    assert first["stopped_by_budget"] and first["steps_done"] == 1 and first["final"] and first["loop_s"] > 0
    assert open_checkpoint(tmp_path / "b").step == 1
    again = run_recipe(budget, tmp_path / "b", progress=False)
    assert again == first  # finished by its budget: nothing to do
    more = run_recipe(tiny(tmp_path, "train.steps=4"), tmp_path / "b", progress=False)
    assert not more["stopped_by_budget"] and more["steps_done"] == 4
    assert more["final"] == straight["final"] and more["final_loss"] == straight["final_loss"]


def test_a_run_does_not_resume_on_encoder_weights_that_moved(tmp_path, monkeypatch):
    """Weights that moved upstream (a newer snapshot in the cache) must not change a run's objective
    silently: the checkpoint records every encoder's fingerprint and weights revision."""
    from rdmx.builtin import encoders

    run_recipe(tiny(tmp_path, "train.steps=2"), tmp_path / "o", progress=False)
    init = encoders.ToyConvEncoder.__init__

    def moved(self, config):
        init(self, config)
        if config.seed == 1:  # conv-a: its weights now come from another revision
            self.spec = self.spec.with_(revision="b" * 40)

    monkeypatch.setattr(encoders.ToyConvEncoder, "__init__", moved)
    with pytest.raises(RdmxError, match=r"encoder 'conv-a' \(toy-conv-w32-d3\) is not the one this run started with: "
                                        r"its weights are now revision bbbbbbbbbbbb, the run started with \(none\); "
                                        r"pin that one .* or start over with --fresh"):
        run_recipe(tiny(tmp_path, "train.steps=3"), tmp_path / "o", progress=False)
    monkeypatch.setattr(encoders.ToyConvEncoder, "__init__", init)
    assert run_recipe(tiny(tmp_path, "train.steps=3"), tmp_path / "o", progress=False)["steps"] == 3
