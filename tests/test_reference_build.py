"""build_references: features -> bundles, floors and banks, all cached by fingerprint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rdmx.reference.bundle as bundle_mod
import rdmx.reference.floors as floors_mod
from rdmx.compare.base import ReferenceRequest
from rdmx.compare.configs import JointSpec, MMDNystromConfig
from rdmx.compare.mmd import MMDNystrom
from rdmx.data.folder import image_folder
from rdmx.errors import RdmxError
from rdmx.reference.build import bank_rows, build_references
from rdmx.reference.bundle import build_reference
from rdmx.reference.extract import FeatureSet
from rdmx.testing import tiny_conv


def TinyConv(seed: int, dim: int = 5):  # noqa: N802 - used like the class it builds
    """A random conv encoder; counts the images it has encoded."""
    return tiny_conv(seed, dim, width=4)


def make_folder(root, per_class=15):
    rng = np.random.default_rng(1)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shift = 60 if c == "dog" else 0  # the classes differ in brightness
            a = rng.integers(0, 196, (13 + i % 4, 15, 3)) + shift
            Image.fromarray(a.astype(np.uint8)).save(root / c / f"{i:02d}.png")
    return root


REQUEST = ReferenceRequest(landmarks=6, kmeans_iters=5, kmeans_subsample=100, sigma_subsample=100, krr_subsample=100)
ESTIMATOR = MMDNystrom(MMDNystromConfig(landmarks=6, kmeans_iters=5, kmeans_subsample=100, sigma_subsample=100,
                                        krr_subsample=100))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_folder(make_folder(tmp_path_factory.mktemp("imgs")), size=16, val_count=8)


def direct_features(enc, dataset):
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.stack([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        return enc(images), labels


def build(data, cache, **kw):
    kw = {"train_names": ["a"], "floors": (1, 10_000), "eval_rows": 12, "progress": False,
          "shard_rows": 7, "batch_size": 4, **kw}
    encoders = {"a": TinyConv(0), "b": TinyConv(1, dim=3)}
    return encoders, build_references(data, encoders, REQUEST, cache_dir=cache, estimator=ESTIMATOR, **kw)


def gauss(x, y, sigma):
    return torch.exp(-torch.cdist(x, y) ** 2 / (2 * sigma**2))


def test_bundle_floor_and_banks_match_independent_computations(data, tmp_path):
    _, refs = build(data, tmp_path)
    a, b = refs["a"], refs["b"]
    train_a, train_labels = direct_features(TinyConv(0), data.train)
    val_a, _ = direct_features(TinyConv(0), data.val)

    # the bundle equals one built from in-memory features in the same chunks
    chunks = lambda: ((train_a[i : i + 7], None) for i in range(0, len(train_a), 7))  # noqa: E731
    mem = build_reference(chunks, REQUEST, encoder_fingerprint="x", data_fingerprint="y")
    assert a.reference.rows == len(data.train) == 22
    assert a.reference.sigma == pytest.approx(mem.sigma, rel=1e-5)
    assert torch.allclose(a.reference.landmarks, mem.landmarks, atol=1e-5)
    assert torch.allclose(a.reference.alpha, mem.alpha, rtol=1e-3, atol=1e-4)

    # one draw of all val rows: the floor is the float64 MMD^2 of the whole val set (permutation-free)
    ref = a.reference
    v, z, sig = val_a.double(), ref.landmarks.double(), ref.sigma
    expected = gauss(v, v, sig).mean() - 2 * (gauss(v, z, sig) @ ref.alpha[0].double()).mean() + ref.k_rr[0]
    assert a.floor == pytest.approx(float(expected), rel=1e-4, abs=1e-6)

    # banks: the same seeded rows for every encoder, clipped to the rows available
    idx = bank_rows(22, 12, 0, "train")
    assert len(set(idx.tolist())) == 12
    assert torch.allclose(a.train_bank, train_a[idx], atol=1e-5)
    assert torch.equal(a.train_bank_labels, train_labels[idx]) and torch.equal(b.train_bank_labels, a.train_bank_labels)
    assert a.val_bank.shape == (8, 5) and b.val_bank.shape == (8, 3) and b.train_bank.shape == (12, 3)
    assert b.reference is None and b.floor is None and b.role == "heldout" and a.role == "train"


def test_second_run_reuses_everything(data, tmp_path, monkeypatch):
    _, first = build(data, tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(bundle_mod, "build_reference", forbidden)
    monkeypatch.setattr(floors_mod, "estimate_floor", forbidden)
    encoders, second = build(data, tmp_path)
    assert encoders["a"].rows_seen == encoders["b"].rows_seen == 0  # no extraction
    assert second["a"].floor == first["a"].floor
    for k, t in first["a"].reference.tensors().items():
        assert torch.equal(t, getattr(second["a"].reference, k))
    assert torch.equal(first["b"].val_bank, second["b"].val_bank)


def test_new_request_rebuilds_bundle_without_extraction(data, tmp_path):
    _, first = build(data, tmp_path)
    encoders = {"a": TinyConv(0), "b": TinyConv(1, dim=3)}
    other = ReferenceRequest(landmarks=3, kmeans_iters=5, kmeans_subsample=100, sigma_subsample=100, krr_subsample=100)
    refs = build_references(data, encoders, other, cache_dir=tmp_path, train_names=["a"], floors=None,
                            eval_rows=12, progress=False, shard_rows=7)
    assert encoders["a"].rows_seen == 0
    assert refs["a"].reference.landmarks.shape[0] == 3 and first["a"].reference.landmarks.shape[0] == 6
    assert refs["a"].floor is None


def test_class_joint_uses_labels_and_text_joint_is_refused(data, tmp_path):
    _, refs = build(data, tmp_path, joint=JointSpec(kind="class"), floors=None)
    ref = refs["a"].reference
    assert ref.joint["kind"] == "class" and ref.joint["num_classes"] == 2
    assert ref.landmarks.shape[1] == 5 + 2
    with pytest.raises(RdmxError, match="caption"):
        build(data, tmp_path, joint=JointSpec(kind="text"))
    with pytest.raises(RdmxError, match="not in the battery"):
        build(data, tmp_path, train_names=["c"])


def run_ranks(worker_args, world=2, timeout=180):
    """Run this file as ``world`` processes (rank, world, *worker_args); assert all succeed.

    Subprocesses rather than multiprocessing.spawn: spawn would re-import this module by name,
    and an installed top-level ``tests`` package (torch-fidelity ships one) shadows ours."""
    logs = [open(Path(worker_args[-1]).parent / f"rank{r}.log", "w+") for r in range(world)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(world), *map(str, worker_args)],
                              stdout=logs[r], stderr=subprocess.STDOUT, env=env) for r in range(world)]
    codes = [p.wait(timeout=timeout) for p in procs]
    for log in logs:
        log.seek(0)
    assert codes == [0] * world, "\n".join(log.read()[-3000:] for log in logs)


def _dist_build(rank, world, init_file, folder, cache):
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        d = image_folder(folder, size=16, val_count=8)
        encoders, refs = build(d, cache)
        torch.save({"floor": refs["a"].floor, "alpha": refs["a"].reference.alpha, "bank": refs["b"].val_bank,
                    "rows_seen": encoders["a"].rows_seen}, f"{cache}/out-{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_bitwise(data, tmp_path):
    """Shards dealt round-robin to 2 ranks give bit-identical features, bundle, floor and banks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, one = build(data, tmp_path / "one")
    finally:
        torch.set_num_threads(threads)
    run_ranks([tmp_path / "init", data.train.listing.root, tmp_path / "two"])
    for rank in (0, 1):
        out = torch.load(tmp_path / "two" / f"out-{rank}.pt")
        assert out["floor"] == one["a"].floor
        assert torch.equal(out["alpha"], one["a"].reference.alpha)
        assert torch.equal(out["bank"], one["b"].val_bank)
    # train 22 rows in shards of 7: rank 0 has shards 0, 2 (14 rows), rank 1 shards 1, 3 (8 rows);
    # val 8 rows: rank 0 has 7, rank 1 has 1
    assert [torch.load(tmp_path / "two" / f"out-{r}.pt")["rows_seen"] for r in (0, 1)] == [21, 9]
    for split in ("train", "val"):
        a = FeatureSet.open(one["a"].paths[f"{split}_features"]).load_all()
        b = FeatureSet.open(tmp_path / "two" / one["a"].paths[f"{split}_features"].relative_to(tmp_path / "one")).load_all()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


if __name__ == "__main__":  # one rank of run_ranks
    _dist_build(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:])
