"""Sample exports: class plans (balanced for ADM, one class per grid row), the streamed ADM
``.npz`` (equal to numpy's own, atomic), and labelled grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from rdmx.samples import NpzStream, class_plan, grid_rows, save_grid, spread_classes


def test_class_plan_is_balanced_for_adm_and_row_aligned_when_small():
    plan = class_plan(50_000, 1000)
    assert torch.equal(torch.bincount(plan), torch.full((1000,), 50))
    assert torch.all(plan[1:] >= plan[:-1])  # contiguous runs
    uneven = torch.bincount(class_plan(1234, 100))
    assert uneven.min() == 12 and uneven.max() == 13
    small = class_plan(70, 10, columns=8)  # fewer than 8 per class: one class per row of 8
    assert small[:16].tolist() == [0] * 8 + [1] * 8 and len(set(small.tolist())) == 9
    assert class_plan(64, 1000).unique().tolist() == [0, 125, 250, 375, 500, 625, 750, 875]


def test_grid_rows_take_the_first_samples_of_spread_classes():
    rows = grid_rows(class_plan(50_000, 1000), columns=8, max_rows=32)
    assert len(rows) == 32 and all(len(r) == 8 for r in rows)
    assert [int(r[0]) for r in rows[:2]] == [0, 31 * 50]  # classes 0 and 31 (= 1000 // 32), 50 samples each
    assert spread_classes(10, 10).tolist() == list(range(10)) and spread_classes(1000, 10).tolist()[:3] == [0, 100, 200]


def test_npz_stream_equals_numpy_and_is_atomic(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (11, 5, 6, 3), dtype=np.uint8)
    labels = torch.arange(11) % 3
    with NpzStream(tmp_path / "s.npz", 11, (5, 6, 3), labels) as npz:
        for s in range(0, 11, 4):
            npz.write(x[s : s + 4])
    z = np.load(tmp_path / "s.npz")
    assert np.array_equal(z["arr_0"], x) and z["arr_1"].tolist() == labels.tolist() and z["arr_1"].dtype == np.int64
    np.savez(tmp_path / "ref.npz", arr_0=x)
    assert np.array_equal(np.load(tmp_path / "ref.npz")["arr_0"], z["arr_0"])
    with pytest.raises(ValueError, match="3 rows written, 11 announced"), NpzStream(tmp_path / "t.npz", 11, (5, 6, 3)) as npz:
        npz.write(x[:3])
    with pytest.raises(RuntimeError), NpzStream(tmp_path / "u.npz", 11, (5, 6, 3)) as npz:
        npz.write(x[:3])
        raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="expected uint8"), NpzStream(tmp_path / "v.npz", 2, (5, 6, 3)) as npz:
        npz.write(x[:2].astype(np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz", "s.npz"]  # no partial files


def test_grid_labels_are_readable(tmp_path):
    imgs = torch.rand(16, 3, 8, 8)
    labels = ["tench"] * 8 + ["great white shark"] * 8
    path = save_grid(imgs, tmp_path / "g.png", labels=labels, columns=8, scale=4)
    short = save_grid(imgs, tmp_path / "h.png", labels=["a"] * 16, columns=8, scale=4)
    assert Image.open(path).size[0] - Image.open(short).size[0] == 6 * (len("great white shark") - 1)
