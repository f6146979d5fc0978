"""Test-wide settings. The hubs run offline through rdmx's own pytest plugin
(rdmx.testing.pytest_plugin, entry point pytest11); MLflow draws no progress bars."""

import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# -- plugin distributions installed on purpose (tests/plugin_fixtures) ---------------------------
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "plugin_fixtures"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory):
    """Environment variables for a subprocess that sees every fixture plugin distribution, installed
    (pip, no network) into an extra site directory on PYTHONPATH: broken ones and well-behaved ones."""
    import shutil

    target = tmp_path_factory.mktemp("plugin-site")
    sources = tmp_path_factory.mktemp("plugin-sources")  # a private copy: xdist workers build in parallel
    shutil.copytree(FIXTURES, sources, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    dists = sorted(p for p in sources.iterdir() if (p / "pyproject.toml").is_file())
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), *map(str, dists)]
    subprocess.run(cmd, check=True, capture_output=True, text=True,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    path = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}
