"""The prepared GPU measurement (benchmarks/gpu/step_h100.sh → benchmarks/step.py) runs its whole
logic on the CPU with tiny models and prints every number issue 8's targets are checked with."""

from __future__ import annotations

import json
import os
import subprocess

from tests.helpers import ROOT


def test_gpu_step_script_runs_on_cpu_with_tiny_models(tmp_path):
    env = {**os.environ, "SMOKE": "1", "SKIP_INSTALL": "1", "OUT": str(tmp_path), "OMP_NUM_THREADS": "1",
           "RECIPE": "recipes/quickstart.toml", "PYTHON": os.environ.get("PYTHON", "python")}
    import sys

    env["PYTHON"] = sys.executable
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "step_h100.sh")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    table = (tmp_path / "step_gpu.txt").read_text()
    info = json.loads((tmp_path / "step_gpu.json").read_text())
    runs = {f"{r['mode']}:{r['chunk_arg']}": r for r in info["runs"]}
    assert set(runs) == {"features:8", "image:8", "image:auto"}
    for r in runs.values():
        assert r["images_per_s"] > 0 and r["tflops"] > 0 and 0 < r["mfu"]
        assert {"generate", "encode", "loss", "regenerate", "encoders", "generator_backward", "update",
                "balancer"} <= set(r["phases_s"])
    # one encoder alive at a time when caching at the image; all of them at the features
    assert runs["image:8"]["encoders_alive"] == 1
    assert runs["features:8"]["encoders_alive"] == len(info["train"]) == 3
    assert runs["image:8"]["activations_mib"] < runs["features:8"]["activations_mib"]
    assert runs["image:auto"]["chunk"] in (1, 2, 4, 8, 16)  # a divisor of N = 16 under the 8 MiB budget
    assert info["loss"]["n"] == 256 and 0 < info["loss"]["share"] < 1
    assert info["eval"]["n"] == 64 and info["eval"]["s_16384"] > 0
    for needle in ("img/s", "loss + estimator + balancer at N = 256", "evaluation of 16384 samples",
                   "throughput", "peak memory", "of 500 steps", "bf16 matmul"):
        assert needle in table, needle
    assert "[step_h100" in (tmp_path / "log.txt").read_text()


def test_benchmark_recipe_is_the_panel_with_its_included_battery_and_the_papers_generator(tmp_path):
    """The default recipe keeps its battery in an included file; the paper's pMF-H stands in for
    the recipe's conv generator on RGB image folders, tiny on CPU."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("step_benchmark", ROOT / "benchmarks" / "step.py")
    step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step)
    args = SimpleNamespace(recipe=str(ROOT / "recipes" / "irdm_panel.toml"), batch=16, device="cpu", compile=False,
                           size=32, tiny=True, generator=None, generator_precision=None, skip=["radio"],
                           weights_dtype=None, set=[])
    raw, notes = step.make_recipe(args, tmp_path)
    assert len(raw["battery"]["encoders"]) == 13 and all(e.get("tiny") for e in raw["battery"]["encoders"])
    assert raw["generator"] == {"name": "pmf-h", "weights": "random", "tiny": True}
    assert "encoder radio skipped (--skip)" in notes
