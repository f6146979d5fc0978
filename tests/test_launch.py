"""Runs and sweep cells sent to a scheduler through submitit: its local executor runs a sweep's cells
in parallel and requeues a preempted job, which resumes to the weights of an uninterrupted one;
SLURM submission (a job array) is checked against a stand-in ``sbatch`` on PATH."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

from rdmx.recipe import load_recipe
from tests.helpers import rdmx
from tests.test_cluster import BASE, _children, final_state
from tests.test_engine import QUICK


def _sets(tmp: Path, *extra: str) -> list[str]:
    return [*BASE, f"reference.cache_dir={json.dumps(str(tmp / 'cache'))}", *extra]


def _args(sets: list[str]) -> list[str]:
    return sum((["--set", s] for s in sets), [])


def test_a_sweep_runs_its_cells_as_local_jobs_in_parallel(tmp_path):
    sets = _sets(tmp_path, "train.steps=3", 'sweep={"train.lr" = [1e-3, 3e-3]}')
    res = rdmx("run", str(QUICK), *_args(sets), "--submit", "local", "--jobs", "2", "--out", str(tmp_path / "s"),
               cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [c["values"]["train.lr"] for c in summary["cells"]] == [1e-3, 3e-3]
    assert all(c["steps"] == 3 and c["final"] for c in summary["cells"])
    jobs = json.loads((tmp_path / "s" / "jobs.json").read_text())
    assert jobs["kind"] == "local" and len(jobs["jobs"]) == 2
    for i in range(2):
        cell = tmp_path / "s" / f"cell-{i:03d}"
        assert (cell / "summary.json").is_file() and "==== run finished ====" in (cell / "run.log").read_text()
    # both ran at once: each started before the other finished
    logs = [(tmp_path / "s" / f"cell-{i:03d}" / "run.log").read_text().splitlines() for i in range(2)]
    starts, ends = [log[0][:20] for log in logs], [log[-1][:20] for log in logs]
    assert starts[0] <= ends[1] and starts[1] <= ends[0], (starts, ends)
    # the same command without --submit: every cell is finished, nothing is trained again
    again = rdmx("run", str(QUICK), *_args(sets), "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert again.returncode == 0 and "finished" in again.stderr


def test_a_preempted_local_job_is_requeued_and_resumes_to_the_same_weights(tmp_path):
    from rdmx.launch import RunJob, Submission
    from rdmx.run import RESOLVED_RECIPE, write_resolved_recipe

    resolved = load_recipe(QUICK, _sets(tmp_path, "train.steps=120", "train.checkpoint_every=50"))
    ex = Submission("local").executor(tmp_path / "submitit")
    jobs = {}
    for name in ("straight", "preempted"):
        out = tmp_path / name
        out.mkdir()
        write_resolved_recipe(resolved, out / RESOLVED_RECIPE)
        jobs[name] = ex.submit(RunJob(str(out / RESOLVED_RECIPE), str(out), threads=1))
        if name == "straight":
            jobs[name].result()
    metrics = tmp_path / "preempted" / "metrics.jsonl"
    end = time.time() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 15):
        assert time.time() < end and not jobs["preempted"].done(), jobs["preempted"].stderr()
        time.sleep(0.05)
    (task,) = _children(jobs["preempted"]._process.pid)  # the job's one task, under submitit's local controller
    os.kill(task, signal.SIGUSR2)  # submitit's preemption signal, as SLURM sends it before preempting the job
    summary = jobs["preempted"].result()
    assert summary["steps"] == 120
    log = (tmp_path / "preempted" / "run.log").read_text()
    assert "stopped by SIGUSR2 after step" in log and "resumed from step" in log
    assert "Requeued" in jobs["preempted"].stdout() + jobs["preempted"].stderr()  # by submitit, after rdmx's stop
    straight, preempted = final_state(tmp_path / "straight", 120), final_state(tmp_path / "preempted", 120)
    assert straight.keys() == preempted.keys()
    assert all(torch.equal(straight[k], preempted[k]) for k in straight)


SBATCH = """#!/bin/sh
# a stand-in for SLURM's sbatch: keeps the submission file, answers as sbatch does
cp "$1" "{folder}/submitted.sh"
echo "$@" > "{folder}/args.txt"
echo "Submitted batch job 4242"
"""


def test_a_sweep_is_submitted_to_slurm_as_one_job_array(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH.format(folder=tmp_path))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only looks for it
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    sets = _sets(tmp_path, "train.steps=3", 'sweep={"train.lr" = [1e-3, 2e-3, 3e-3]}')
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    res = rdmx("run", str(QUICK), *_args(sets), "--submit", "slurm", "--jobs", "2", "--slurm", "partition=gpu",
               "--slurm", "gpus_per_node=8", "--slurm", "tasks_per_node=8", "--slurm", "timeout_min=600",
               "--no-wait", "--out", str(tmp_path / "s"), cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "submitted:" in res.stdout
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --array=0-2%2", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --ntasks-per-node=8", "#SBATCH --signal=USR2@", "#SBATCH --time=600"):
        assert line in script, line
    jobs = json.loads((tmp_path / "s" / "jobs.json").read_text())
    assert [j["job_id"] for j in jobs["jobs"]] == ["4242_0", "4242_1", "4242_2"]
    for i in range(3):  # each job reads its cell's resolved recipe: the same fingerprint as the cell's
        cell = tmp_path / "s" / f"cell-{i:03d}" / "recipe.resolved.toml"
        assert load_recipe(cell).recipe.train.lr == [1e-3, 2e-3, 3e-3][i]
    bad = rdmx("run", str(QUICK), "--submit", "slurm", "--slurm", "partition", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert bad.returncode == 2 and "--slurm 'partition': expected key=value" in bad.stderr
    nosbatch = rdmx("run", str(QUICK), *_args(_sets(tmp_path, "train.steps=1")), "--submit", "slurm", "--out",
                    str(tmp_path / "y"), cwd=tmp_path, env={"PATH": str(Path(sys.executable).parent)})
    assert nosbatch.returncode == 2 and "SLURM is not reachable from here" in nosbatch.stderr
