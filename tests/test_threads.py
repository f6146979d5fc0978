"""The CPU thread policy: the CPUs a process may use over the processes sharing them, the user's
settings first, bad values refused or replaced in one line, printed once into the run's log."""

from __future__ import annotations

import json

import pytest

from rdmx import threads
from rdmx.errors import RdmxError
from tests.helpers import rdmx
from tests.test_engine import QUICK, TINY


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: None)


def test_the_cpus_over_the_processes_sharing_them(four_cpus):
    assert threads.decide(env={}).threads == 4
    p = threads.decide(env={"LOCAL_WORLD_SIZE": "2"})
    assert (p.threads, p.cpus, p.sharing, p.wait) == (2, 4, 2, "PASSIVE")
    assert threads.decide(env={"PYTEST_XDIST_WORKER_COUNT": "3"}).threads == 1
    assert "2 CPU thread(s) per process (4 CPU(s) / 2 process(es)), OpenMP waits passive" == p.describe()


def test_a_cgroup_quota_caps_the_cpus(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads, "cgroup_cpus", lambda: 2.5)  # cpu.max "250000 100000"
    assert threads.available_cpus() == 2


def test_the_users_settings_win(four_cpus, capsys):
    assert threads.decide(env={"OMP_NUM_THREADS": "3"}).threads == 3
    assert threads.decide(env={"OMP_WAIT_POLICY": "ACTIVE"}).wait == "ACTIVE"
    assert threads.decide(env={"RDMX_THREADS": "2", "OMP_NUM_THREADS": "3"}).source == "RDMX_THREADS = 2"
    assert threads.decide(1, env={"RDMX_THREADS": "2"}).source == "--threads = 1"
    assert not threads.decide(env={"RDMX_THREAD_POLICY": "off"}).applied
    garbage = threads.decide(env={"OMP_NUM_THREADS": "lots", "LOCAL_WORLD_SIZE": "2"})
    assert garbage.threads == 2
    assert "OMP_NUM_THREADS = 'lots' is not a positive whole number; rdmx uses 2 thread(s)" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [
    ("0", "--threads = 0: give 1 to 4"), ("-2", "--threads = -2: give 1 to 4"), ("9", "--threads = 9: give 1 to 4"),
    ("two", "--threads must be a whole number of threads, got 'two'")])
def test_bad_thread_counts_are_one_message(four_cpus, value, message):
    with pytest.raises(RdmxError, match=message):
        threads.decide(value, env={})
    with pytest.raises(RdmxError, match=message.replace("--threads", "RDMX_THREADS")):
        threads.decide(env={"RDMX_THREADS": value})


def test_apply_sets_what_openmp_reads_and_workers_get_one_thread(four_cpus, monkeypatch):
    import torch

    env = {"LOCAL_WORLD_SIZE": "4"}
    monkeypatch.setattr(threads, "_DECIDED", None)
    before = torch.get_num_threads()
    try:
        policy = threads.apply(env=env)
        assert env["OMP_NUM_THREADS"] == "1" and env["OMP_WAIT_POLICY"] == "PASSIVE" and policy.threads == 1
        assert torch.get_num_threads() == 1
        threads.worker_init(0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_cli_refuses_a_bad_count_and_a_run_logs_its_policy(tmp_path):
    bad = rdmx("--threads", "0", "show", str(QUICK), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --threads = 0: give 1 to")
    sets = [*TINY, "train.steps=1", f"reference.cache_dir={json.dumps(str(tmp_path / 'cache'))}", "tracking.backend=none"]
    res = rdmx("--threads", "1", "run", str(QUICK), *sum((["--set", s] for s in sets), []), "--out", str(tmp_path / "o"),
               "--no-progress", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    line = "rdmx: 1 CPU thread(s) per process (--threads = 1), OpenMP waits passive"
    assert res.stderr.count(line) == 1 and line in (tmp_path / "o" / "run.log").read_text()
