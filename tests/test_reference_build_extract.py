"""Sharded, resumable, distributed feature extraction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rdmx.data.folder import image_folder
from rdmx.errors import RdmxError
from rdmx.reference.extract import FeatureSet, extract_features, feature_dir, iter_feature_chunks
from rdmx.testing import tiny_conv


def TinyConv(seed: int, dim: int = 6):  # noqa: N802 - used like the class it builds
    """A random conv encoder; counts the images it has encoded."""
    return tiny_conv(seed, dim, width=5)


def make_folder(root, classes=("b", "a"), per_class=11):
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(per_class):
            (root / c).mkdir(parents=True, exist_ok=True)
            w, h = 14 + i % 5, 12 + i % 3
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / c / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_folder(make_folder(tmp_path_factory.mktemp("imgs")), size=16, val_count=4)


def run(data, cache, encoders, **kw):
    kw = {"shard_rows": 5, "batch_size": 3, "progress": False, **kw}
    return extract_features(encoders, data.train, cache_dir=cache, data_fingerprint=data.fingerprint(),
                            split="train", **kw)


def test_shards_hold_the_encoder_features_in_row_order(data, tmp_path):
    enc = TinyConv(0)
    dirs = run(data, tmp_path, {"e": enc})
    assert dirs["e"] == feature_dir(tmp_path, enc.fingerprint, data.fingerprint(), "train")
    chunks = list(iter_feature_chunks(dirs["e"]))
    assert [len(f) for f, _ in chunks] == [5, 5, 5, 3]  # 18 train rows, shard by shard
    images = torch.stack([data.train[i][0] for i in range(len(data.train))])
    labels = torch.stack([data.train[i][1] for i in range(len(data.train))])
    with torch.no_grad():
        direct = enc(images)
    feats = torch.cat([f for f, _ in chunks])
    assert feats.dtype == torch.float32 and feats.shape == (18, 6)
    assert torch.allclose(feats, direct, atol=1e-5, rtol=1e-5)
    assert torch.equal(torch.cat([lab for _, lab in chunks]), labels)
    manifest = json.loads((dirs["e"] / "manifest.json").read_text())
    assert manifest["complete"] and manifest["rows"] == 18 and manifest["encoder"] == enc.fingerprint
    assert not list(dirs["e"].glob(".*"))  # no temporary files left behind


class Interrupt(Exception):
    """Raised from the shard callback to simulate a killed extraction."""


def test_killed_extraction_resumes_to_identical_shards(data, tmp_path):
    whole = FeatureSet.open(run(data, tmp_path / "a", {"e": TinyConv(1), "f": TinyConv(2, dim=4)})["e"])

    def stop_after_two(shard):
        if shard == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(data, tmp_path / "b", {"e": TinyConv(1), "f": TinyConv(2, dim=4)}, on_shard=stop_after_two)
    partial = feature_dir(tmp_path / "b", TinyConv(1).fingerprint, data.fingerprint(), "train")
    assert sorted(p.name for p in partial.glob("shard-*")) == ["shard-00000.safetensors", "shard-00001.safetensors"]
    with pytest.raises(RdmxError, match="incomplete \\(2 of 4 shards\\)"):
        list(iter_feature_chunks(partial))
    e, f = TinyConv(1), TinyConv(2, dim=4)
    dirs = run(data, tmp_path / "b", {"e": e, "f": f})
    assert e.rows_seen == f.rows_seen == 8  # only shards 2 and 3 were computed
    resumed = FeatureSet.open(dirs["e"])
    for (fa, la), (fb, lb) in zip(whole.chunks(), resumed.chunks(), strict=True):
        assert torch.equal(fa, fb) and torch.equal(la, lb)
    assert FeatureSet.open(dirs["f"]).dim == 4


def test_complete_extraction_is_not_repeated_and_workers_agree(data, tmp_path):
    enc = TinyConv(3)
    first = FeatureSet.open(run(data, tmp_path, {"e": enc}, num_workers=2)["e"]).load_all()
    again = TinyConv(3)
    run(data, tmp_path, {"e": again})
    assert again.rows_seen == 0
    single = FeatureSet.open(run(data, tmp_path / "w0", {"e": TinyConv(3)}, num_workers=0)["e"]).load_all()
    assert torch.equal(first[0], single[0]) and torch.equal(first[1], single[1])


def test_take_gathers_rows_in_requested_order(data, tmp_path):
    fs = FeatureSet.open(run(data, tmp_path, {"e": TinyConv(4)})["e"])
    feats, labels = fs.load_all()
    idx = np.array([17, 0, 5, 4, 11, 5])
    f, lab = fs.take(idx)
    assert torch.equal(f, feats[idx]) and torch.equal(lab, labels[idx])
    with pytest.raises(IndexError):
        fs.take([18])



def test_directories_started_with_another_shard_size_keep_it(data, tmp_path):
    with pytest.raises(Interrupt):
        run(data, tmp_path, {"e": TinyConv(6)}, on_shard=lambda s: (_ for _ in ()).throw(Interrupt()))
    e, f = TinyConv(6), TinyConv(7)
    dirs = run(data, tmp_path, {"e": e, "f": f}, shard_rows=4)
    assert e.rows_seen == 18 - 5 and f.rows_seen == 18  # e resumes its 5-row shards after shard 0
    assert [len(x) for x, _ in iter_feature_chunks(dirs["e"])] == [5, 5, 5, 3]
    assert [len(x) for x, _ in iter_feature_chunks(dirs["f"])] == [4, 4, 4, 4, 2]


def test_unreadable_image_in_a_worker_names_the_file(tmp_path):
    folder = make_folder(tmp_path / "imgs", classes=("a",), per_class=3)
    (folder / "a" / "zz-broken.png").write_bytes(b"garbage")
    d = image_folder(folder, size=16, val_count=0)
    with pytest.raises(RdmxError, match="zz-broken.png"):
        run(d, tmp_path / "cache", {"e": TinyConv(0)}, num_workers=1)
