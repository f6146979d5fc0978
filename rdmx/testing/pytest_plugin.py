"""rdmx's pytest plugin (entry point ``pytest11``): loaded by pytest wherever rdmx is installed,
so a plugin's test suite needs no conftest of its own.

* Tests never touch the network: ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` and
  ``HF_DATASETS_OFFLINE`` default to 1 (an explicit setting wins).
* Each xdist worker runs with the CPU threads it is entitled to (rdmx.threads: the CPUs over the
  workers, OpenMP waiting passively), set before any test imports torch; the processes tests start
  inherit it.
* ``rdmx_offline_cache``: empty Hugging Face / torch-hub / XDG caches under the test's tmp
  folder (the "weights are missing" path); returns that folder.
* ``rdmx_plugins``: a freshly loaded :class:`rdmx.plugins.Plugins` (entry points as installed).
* ``rdmx_cache_dir``: an empty folder for ``reference.cache_dir``.

Nothing heavy is imported here (no torch).
"""

from __future__ import annotations

import os

import pytest

OFFLINE = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def pytest_configure(config) -> None:
    for var in OFFLINE:
        os.environ.setdefault(var, "1")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker: its share of the CPUs (the controller computes nothing)
        from rdmx import threads

        threads.apply()


@pytest.fixture
def rdmx_offline_cache(tmp_path, monkeypatch):
    """Empty weight caches (Hugging Face, torch hub, XDG) and offline hubs for one test."""
    from rdmx.testing import isolate_weight_caches

    return isolate_weight_caches(tmp_path / "weight-caches", monkeypatch)


@pytest.fixture
def rdmx_plugins():
    """The installed plugins, loaded afresh (not the process-wide cached set)."""
    from rdmx.plugins import Plugins

    return Plugins().load()


@pytest.fixture
def rdmx_cache_dir(tmp_path):
    """An empty reference cache folder (``reference.cache_dir``)."""
    path = tmp_path / "rdmx-cache"
    path.mkdir()
    return path
