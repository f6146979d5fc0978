"""The life of a run on a cluster, with real engines at small size (gloo, CPU processes): sharded
checkpoints restored bit for bit on other world sizes, preemption by signals on every rank or on
one, a second signal during the save, kill -9 during an asynchronous save, and torchrun's elastic
restart — each interrupted run ends with the weights of the uninterrupted one, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rdmx.train.checkpoint import read_manifest, scan, verify_files
from rdmx.train.stop import EXIT_STOPPED
from tests.helpers import ROOT, free_port, run_ranks, start_ranks, worker_env
from tests.test_engine import QUICK, TINY

BASE = [s for s in TINY if not s.startswith(("train.batch", "train.micro_batch", "train.steps"))]
BASE += ["train.batch=48", "train.micro_batch=12", "tracking.backend=none", "eval.n=32", "eval.every=0"]


def sets(cache: Path, *extra: str) -> list[str]:
    return [*BASE, f"reference.cache_dir={json.dumps(str(cache))}", *extra]


def cli(*overrides: str, out: Path) -> list[str]:
    return ["-m", "rdmx.cli", "run", str(QUICK), *sum((["--set", s] for s in overrides), []), "--out", str(out),
            "--no-progress"]


def final_state(run: Path, step: int) -> dict[str, torch.Tensor]:
    """Every tensor of a run's checkpoint of ``step`` (generator and AdamW state), read with DCP's own
    converter into one torch file: independent of rdmx's loading code."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = run / "checkpoints" / f"step-{step:06d}"
    assert not verify_files(folder, read_manifest(folder))
    flat = {}

    def walk(prefix, x):
        if isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif torch.is_tensor(x):
            flat[prefix] = x

    for group in ("model", "optim"):
        target = folder.parent / f"full-{step}-{group}.pt"
        dcp_to_torch_save(str(folder / group), str(target))
        walk("", torch.load(target, weights_only=False))
        target.unlink()
    return flat


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and any(k.startswith("optimizer.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- restore across world sizes ------------------------------------------------------------------

def test_checkpoint_restores_bit_for_bit_on_any_world_size_sharded_or_not(tmp_path):
    recipe = json.dumps(sets(tmp_path / "cache", "train.steps=3", 'train.shard="fsdp"', "train.ema={decay=0.9}"))
    worker = [sys.executable, str(ROOT / "tests" / "ckpt_worker.py")]
    a, b = tmp_path / "a", tmp_path / "b"
    run_ranks([*worker, "save", str(a), recipe], 2)  # FSDP2 over 2 ranks
    run_ranks([*worker, "restore", str(a), recipe], 1)  # one process: unsharded
    run_ranks([*worker, "restore", str(a), recipe], 4)  # FSDP2 over 4 ranks
    run_ranks([*worker, "save", str(b), recipe], 1)
    run_ranks([*worker, "restore", str(b), recipe], 2)
    for folder, saver, restorers in ((a, 2, (1, 4)), (b, 1, (2,))):
        saved = torch.load(folder / f"save-world{saver}.pt", weights_only=False)
        assert saved["sharded"] == (saver > 1) and saved["step"] == 3 and saved["optim"]
        for world in restorers:
            got = torch.load(folder / f"restore-world{world}.pt", weights_only=False)
            assert got["sharded"] == (world > 1) and got["step"] == 3
            assert got["params"].keys() == saved["params"].keys()
            for k, v in saved["params"].items():
                assert torch.equal(got["params"][k], v), (world, k)
            for k, moments in saved["optim"].items():
                for name in ("exp_avg", "exp_avg_sq", "step"):
                    assert torch.equal(got["optim"][k][name], moments[name]), (world, k, name)
            assert got["balancer"] == saved["balancer"] and got["history"] == saved["history"]
            # the EMA, averaged shard by shard on each rank, restored on any world size
            assert saved["ema"] and got["ema"].keys() == saved["ema"].keys() and got["ema_updates"] == 3
            for k, v in saved["ema"].items():
                assert torch.equal(got["ema"][k], v), (world, k)
    manifest = read_manifest(a / "run" / "checkpoints" / "step-000003")
    assert manifest["world_size"] == 2 and manifest["sharded"]
    assert {"model/__0_0.distcp", "model/__1_0.distcp", "optim/__1_0.distcp", "model/.metadata", "state.pt"} <= set(
        manifest["files"])  # each rank writes its own shards


# -- preemption, on 2 ranks and under torchrun's elastic restart ---------------------------------

def _rows(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _wait_rows(out: Path, n: int, procs, timeout: float = 240) -> None:
    end = time.time() + timeout
    while _rows(out) < n:
        assert time.time() < end, "the run made no progress"
        assert all(p.poll() is None for p in procs), "a process ended early"
        time.sleep(0.05)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run on 2 ranks (60 steps, a checkpoint every 10) and its final state."""
    tmp = tmp_path_factory.mktemp("straight")
    overrides = sets(tmp / "cache", "train.steps=60", "train.checkpoint_every=10")
    run_ranks([sys.executable, *cli(*overrides, out=tmp / "run")], 2, cwd=tmp)
    return overrides, final_state(tmp / "run", 60)


@pytest.mark.parametrize("who", ["one rank", "every rank"])
def test_sigterm_stops_every_rank_at_one_step_and_the_resumed_run_ends_bit_identical(tmp_path, straight, who):
    overrides, expected = straight
    out = tmp_path / "run"
    cmd = [sys.executable, *cli(*overrides, out=out)]
    procs = start_ranks(cmd, 2, cwd=tmp_path)
    _wait_rows(out, 14 if who == "one rank" else 23, procs)
    for p in (procs[1:] if who == "one rank" else procs):
        p.send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert [p.returncode for p in procs] == [EXIT_STOPPED] * 2, errs[0][-2000:] + errs[1][-2000:]
    state = json.loads((out / "run.json").read_text())
    assert state["state"] == "stopped" and 0 < state["step"] < 60
    assert f"stopped by SIGTERM after step {state['step']}" in errs[0]
    assert "SIGTERM received: stopping after this step" in (out / "run.rank1.log").read_text()
    assert "run the same command again to resume (exit status 75)" in errs[0]
    assert [s for s, _, sealed in scan(out / "checkpoints") if sealed][-1] == state["step"]
    run_ranks(cmd, 2, cwd=tmp_path)  # the same command resumes
    assert_same(final_state(out, 60), expected)
    log = (out / "run.log").read_text()
    assert f"resumed from step {state['step']}" in log and "==== run finished ====" in log


def test_torchrun_elastic_restart_after_a_killed_worker_ends_bit_identical(tmp_path, straight):
    overrides, expected = straight
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--max-restarts", "1",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    agent = subprocess.Popen([*torchrun, *cli(*overrides, out=out)], cwd=tmp_path, env=worker_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_rows(out, 25, [agent])
    workers = _children(agent.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)  # a worker dies mid-run; torchrun restarts both
    _, err = agent.communicate(timeout=300)
    assert agent.returncode == 0, err[-3000:]
    assert "resumed from step" in (out / "run.log").read_text()
    assert_same(final_state(out, 60), expected)


# -- a second signal, kill -9 during an asynchronous save (one process) ----------------------------

def _fault(fault: str, overrides: list[str], out: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tests" / "fault_worker.py"), fault, *cli(*overrides, out=out)[2:]],
                          cwd=cwd, env={**worker_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)


def test_signals_and_kills_in_one_process_resume_bit_identical(tmp_path):
    """SIGTERM at two steps (exit 75); a second SIGTERM while the stop's checkpoint is written (dies
    at once, the previous checkpoint intact); SIGKILL in an asynchronous save (the partial folder is
    ignored and cleaned). Each resumed run ends with the uninterrupted run's weights."""
    overrides = sets(tmp_path / "cache", "train.steps=12", "train.checkpoint_every=4")
    env = {**worker_env(), "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, *cli(*overrides, out=tmp_path / "straight")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = final_state(tmp_path / "straight", 12)
    for fault in ("term@2", "term@9", "double@5", "kill9@8"):
        out = tmp_path / fault.replace("@", "-")
        res = _fault(fault, overrides, out, tmp_path)
        step = int(fault.split("@")[1])
        sealed = [s for s, _, ok in scan(out / "checkpoints") if ok]
        partial = [s for s, _, ok in scan(out / "checkpoints") if not ok]
        if fault.startswith("term"):
            assert res.returncode == EXIT_STOPPED, res.stderr[-3000:]
            assert sealed[-1] == step + 1 and not partial
        elif fault.startswith("double"):
            assert res.returncode == -signal.SIGTERM, res.stderr[-3000:]
            assert "SIGTERM again: exiting at once" in res.stderr
            assert sealed == [4] and partial == [6]  # the stop's save is unsealed; step 4's intact
            assert not verify_files(out / "checkpoints" / "step-000004", read_manifest(out / "checkpoints" / "step-000004"))
        else:
            assert res.returncode == -signal.SIGKILL
            assert sealed == [4] and partial == [8]
        res = subprocess.run([sys.executable, *cli(*overrides, out=out)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        if partial:
            assert f"cut short before they were sealed: step-{partial[0]:06d}" in res.stderr
        assert_same(final_state(out, 12), expected)


def test_the_checkpoint_benchmark_compares_both_saves_in_one_run():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "checkpoint.py"), "--preset", "tiny"],
                         capture_output=True, text=True, timeout=300, env=worker_env())
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in res.stdout.splitlines() if line.startswith("| gathered") or line.startswith("| sharded")}
    gathered, sharded = rows["gathered on rank 0 (rdmx 0.1)"], rows["sharded, asynchronous (DCP)"]
    assert float(gathered[-1]) == 0 and float(gathered[-2]) > 0  # rank 1 writes nothing when gathered
    assert float(sharded[-1]) > 0 and float(sharded[-2]) > 0  # each rank writes its own shards


def test_a_stopped_run_is_marked_killed_in_mlflow_and_the_rerun_continues_it(tmp_path):
    import mlflow

    overrides = [s for s in sets(tmp_path / "cache", "train.steps=6") if s != "tracking.backend=none"]
    overrides += ['tracking.experiment="stops"']
    out = tmp_path / "run"
    res = _fault("term@2", overrides, out, tmp_path)
    assert res.returncode == EXIT_STOPPED, res.stderr[-3000:]
    state = json.loads((out / "run.json").read_text())
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert state["state"] == "stopped" and client.get_run(state["run_id"]).info.status == "KILLED"
    env = {**worker_env(), "PYTHONPATH": str(ROOT)}
    again = subprocess.run([sys.executable, *cli(*overrides, out=out)], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["run_id"] == state["run_id"]
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(state["run_id"], "loss")] == [1, 2, 3, 4, 5, 6]
