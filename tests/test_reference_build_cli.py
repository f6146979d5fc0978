"""The `rdmx reference build` command and run_reference_build."""

from __future__ import annotations

import io
import json

from rich.console import Console
from typer.testing import CliRunner

from rdmx.cli_reference import app, run_reference_build

RECIPE = """
name = "ref-cli"
[data]
name = "spiral"
n_train = 300
n_val = 120
[generator]
name = "mlp"
width = 8
depth = 1
[estimator]
name = "mmd-nystrom"
landmarks = 16
kmeans_subsample = 300
krr_subsample = 300
[[battery.encoders]]
name = "identity"
label = "id-train"
[[battery.encoders]]
name = "identity"
label = "id-heldout"
role = "heldout"
[eval]
n = 50
[reference]
cache_dir = "{cache}"
floor_draws = 2
floor_rows = 40
[tracking]
backend = "none"
"""


def invoke(tmp_path, *extra):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(cache=tmp_path / "cache"))
    result = CliRunner().invoke(app, ["build", str(recipe), "--workers", "0", "--no-progress", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_build_command_builds_then_reuses(tmp_path):
    rows = invoke(tmp_path)
    by_name = {r["encoder"]: r for r in rows}
    assert by_name["id-train"]["role"] == "train" and by_name["id-train"]["landmarks"] == 16
    assert by_name["id-train"]["train_rows"] == 300 and by_name["id-train"]["floor"] is not None
    assert by_name["id-heldout"]["floor"] is None and by_name["id-heldout"]["bank_rows"] == [50, 50]
    features = sorted(p.name.rsplit("-", 1)[1] for p in (tmp_path / "cache" / "features").iterdir())
    assert features == ["train", "val"]  # two labels, one fingerprint: extracted once per split
    shard = next((tmp_path / "cache" / "features").glob("*-train/shard-00000.safetensors"))
    stamp = shard.stat().st_mtime_ns
    assert invoke(tmp_path) == rows  # the second run reuses everything
    assert shard.stat().st_mtime_ns == stamp
    changed = invoke(tmp_path, "--set", "estimator.landmarks=8")
    assert {r["encoder"]: r["landmarks"] for r in changed}["id-train"] == 8


def test_run_reference_build_prints_a_summary(tmp_path):
    import torch

    from rdmx.builtin.toydata import TensorData
    from rdmx.compare.configs import MMDNystromConfig
    from rdmx.compare.mmd import MMDNystrom
    from rdmx.represent.encoder import Encoder, EncoderSpec

    class Square(Encoder):
        def preprocess(self, x):  # vectors, not images
            return x

        def features(self, x):
            return x * x

    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 3, generator=g)
    data = TensorData("toy", x[:60], torch.zeros(60, dtype=torch.long), x[60:], torch.zeros(30, dtype=torch.long),
                      [], {"n": 90})
    enc = Square(EncoderSpec(name="sq", family="test", checkpoint="square", dim=3, resolution=1, resize="none",
                             mean=(0.0,) * 3, std=(1.0,) * 3, dtype="float32"))
    out = io.StringIO()
    refs = run_reference_build(data, {"sq": enc}, MMDNystrom(MMDNystromConfig(landmarks=5, kmeans_subsample=60)),
                               cache_dir=tmp_path, floors=(2, 20), eval_rows=25, progress=False,
                               console=Console(file=out, width=200))
    text = out.getvalue()
    assert "sq" in text and "train" in text and f"{refs['sq'].floor:.4g}" in text
    bank = refs["sq"].train_bank
    assert bank.shape == (25, 3)
    assert all(any(torch.allclose(row, r * r) for r in x[:60]) for row in bank)  # rows are squared train points
