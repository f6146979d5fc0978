"""PickScore on a random-weight tiny CLIP with a locally built processor (no weights, no network)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image

from rdmx.errors import RdmxError, WeightsMissingError
from rdmx.evaluate.base import EvalContext
from rdmx.registry import Entry
from rdmx_pickscore import plugin
from rdmx_pickscore.metric import PickScoreMetric
from rdmx_pickscore.plugin import PickScoreConfig
from rdmx_pickscore.scorer import PickScorer, load_scorer, to_uint8_pil, win_rate
from rdmx_pickscore.testing import tiny_pickscore

PROMPTS = ["a cat", "a dog on a mat", "red car", "blue sky", "a cat"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_pickscore()


@pytest.fixture(scope="module")
def images():
    return torch.rand(5, 3, 40, 56, generator=torch.Generator().manual_seed(1))


def test_scores_equal_the_clip_forward_logits(tiny, images):
    model, processor = tiny
    got = PickScorer(model, processor, batch_size=2).score(images, PROMPTS)
    # independent path: CLIPModel.forward's logits_per_image on the same processed inputs
    arr = np.rint(images.permute(0, 2, 3, 1).numpy().clip(0, 1) * 255).astype(np.uint8)
    inputs = processor(text=PROMPTS, images=[Image.fromarray(a) for a in arr], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    torch.testing.assert_close(got, logits.diagonal(), rtol=1e-5, atol=1e-5)
    assert got[0] != pytest.approx(float(got[4]), rel=1e-6)  # same prompt, other image: other score


def test_tensor_images_are_rounded_to_uint8(images):
    pil = to_uint8_pil(images)
    want = np.rint(images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    assert [p.size for p in pil] == [(56, 40)] * 5
    np.testing.assert_array_equal(np.stack([np.asarray(p) for p in pil]), want)
    grey = to_uint8_pil(images[:, :1])
    assert np.array_equal(np.asarray(grey[0])[..., 0], np.asarray(grey[0])[..., 2])
    with pytest.raises(RdmxError, match="images must be"):
        to_uint8_pil(images[0])


def test_win_rate():
    assert win_rate([1.0, 2.0, 3.0, 5.0], [0.0, 2.0, 4.0, 1.0]) == 0.5  # the tie counts as a loss
    with pytest.raises(RdmxError, match="equal-length"):
        win_rate([1.0], [1.0, 2.0])


def test_metric_reports_mean_and_win_rate_over_matched_pairs(tiny, images):
    model, processor = tiny
    scorer = PickScorer(model, processor, batch_size=3)
    ref = images.flip(-1)
    metric = PickScoreMetric(PickScoreConfig(), scorer=scorer)
    out = metric(EvalContext(samples=images, labels=PROMPTS, reference_samples=ref))
    a, b = scorer.score(images, PROMPTS), scorer.score(ref, PROMPTS)
    assert out["pickscore"] == pytest.approx(float(a.double().mean()))
    assert out["pickscore_reference"] == pytest.approx(float(b.double().mean()))
    assert out["pickscore_win_rate"] == pytest.approx(float((a > b).double().mean()))
    assert set(metric(EvalContext(samples=images, labels=PROMPTS))) == {"pickscore"}
    with pytest.raises(RdmxError, match="needs labels"):
        metric(EvalContext(samples=images))
    with pytest.raises(RdmxError, match="one text prompt per image"):
        metric(EvalContext(samples=images, labels=[0, 1, 2, 3, 4]))


def test_loads_local_directories_through_the_registered_factory(tiny, images, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "processor")
    entries = {}

    def register(name, factory, config, description="", **meta):
        entries[name] = Entry("metrics", name, factory, config, description, "test", "0", meta)

    plugin.rdmx_register_metrics(register)
    metric = entries["pickscore"].build({"model": str(tmp_path / "model"), "processor": str(tmp_path / "processor"),
                                         "device": "auto", "batch_size": 4})
    want = PickScorer(model, processor).score(images, PROMPTS)
    assert metric(EvalContext(samples=images, labels=PROMPTS))["pickscore"] == pytest.approx(float(want.mean()), rel=1e-5)


def test_missing_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsMissingError, match=r"yuvalkirstain/PickScore_v1.*hf download"):
        load_scorer(PickScoreConfig())
    entries = {}
    plugin.rdmx_register_metrics(lambda name, factory, config, description="", **meta: entries.update({name: meta}))
    assert entries["pickscore"]["weights_available"]() is False


def test_plugin_is_torch_free_and_declared_as_entry_point():
    code = "import sys, rdmx_pickscore.plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    eps = [ep for ep in metadata.entry_points(group="rdmx") if ep.name == "pickscore"]
    assert [ep.value for ep in eps] == ["rdmx_pickscore.plugin"]
