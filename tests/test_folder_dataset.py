"""Image-folder data: layouts, ADM centre crop, split, fingerprint, error messages."""

from __future__ import annotations

import hashlib
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rdmx.data.folder import (
    DIGEST_WINDOW,
    adm_center_crop,
    file_digest,
    image_folder,
    load_image,
    scan_image_folder,
    split_indices,
)
from rdmx.errors import RdmxError


def save_random_png(path, w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


@pytest.fixture
def nested(tmp_path):
    root = tmp_path / "nested"
    for c, cls in enumerate(["zebra", "ant", "moth"]):
        for i in range(4):
            save_random_png(root / cls / f"img{i}.png", 20 + i, 18 + c, seed=10 * c + i)
    save_random_png(root / "moth" / "deeper" / "x.png", 19, 19, seed=99)
    (root / "ant" / "notes.txt").write_text("not an image")
    save_random_png(root / ".hidden" / "h.png", 20, 20, seed=5)
    return root


def test_nested_listing_sorted_classes_and_labels(nested):
    listing = scan_image_folder(nested)
    assert listing.class_names == ("ant", "moth", "zebra")
    expected = sorted(
        [(f"{c}/img{i}.png", k) for k, c in enumerate(["ant", "moth", "zebra"]) for i in range(4)]
        + [("moth/deeper/x.png", 1)]
    )
    assert sorted(zip(listing.files, listing.labels)) == expected


def test_flat_listing_is_unconditional(tmp_path):
    for i in range(3):
        save_random_png(tmp_path / f"{i}.png", 16, 16, seed=i)
    data = image_folder(tmp_path, size=8, val_count=1)
    assert data.num_classes == 0 and data.class_names == ()
    image, label = data.train[0]
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert label.dtype == torch.long and label.item() == -1
    assert len(data.train) == 2 and len(data.val) == 1


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(RdmxError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(RdmxError, match="no images found"):
        scan_image_folder(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    save_random_png(mixed / "a.png", 8, 8, 0)
    save_random_png(mixed / "cls" / "b.png", 8, 8, 1)
    with pytest.raises(RdmxError, match="mixes images"):
        scan_image_folder(mixed)
    bad = tmp_path / "bad"
    save_random_png(bad / "good.png", 8, 8, 0)
    (bad / "broken.png").write_bytes(b"\x89PNG not really")
    data = image_folder(bad, size=4, val_count=0)
    names = [data.train.path(i).name for i in range(len(data.train))]
    with pytest.raises(RdmxError, match="broken.png"):
        data.train[names.index("broken.png")]


def round_half_up(a):
    return np.floor(a + 0.5)  # PIL's fixed-point rounding of each pass to uint8


def box_halve(a):
    """PIL-style separable 2x BOX: horizontal pass, round, vertical pass, round."""
    h, w = a.shape[:2]
    a = round_half_up(a.reshape(h, w // 2, 2, -1).mean(axis=2))
    return round_half_up(a.reshape(h // 2, 2, w // 2, -1).mean(axis=1))


def test_adm_crop_box_halvings_and_centre():
    # (w, h) = (64, 48) to 12: halve while short side >= 24 -> (32, 24) -> (16, 12), no bicubic
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    out = np.asarray(adm_center_crop(Image.fromarray(arr), 12), dtype=np.float64)
    ref = box_halve(box_halve(arr.astype(np.float64)))[:, 2:14]  # left = (16 - 12) // 2
    assert out.shape == (12, 12, 3)
    assert np.array_equal(out, ref)


def test_adm_crop_bicubic_step_matches_antialiased_bicubic():
    # (w, h) = (40, 30) to 16: 30 < 32 so no halving; bicubic to (21, 16), crop left = 2
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    out = np.asarray(adm_center_crop(Image.fromarray(arr), 16), dtype=np.float64)
    x = torch.from_numpy(arr.astype(np.float64)).permute(2, 0, 1)[None]

    def bicubic(t, size):  # one axis at a time, clipped and rounded to uint8 like PIL
        return F.interpolate(t, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 255).round()

    ref = bicubic(bicubic(x, (30, 21)), (16, 21))[0].permute(1, 2, 0).numpy()[:, 2:18]
    assert out.shape == (16, 16, 3)
    assert np.abs(out - ref).max() <= 1.0  # fixed-point filter weights may move a value by one level


def test_load_image_range_and_grey(tmp_path):
    save_random_png(tmp_path / "g.png", 20, 30, seed=3, mode="L")
    rgb = load_image(tmp_path / "g.png", 10)
    grey = load_image(tmp_path / "g.png", 10, channels=1)
    assert rgb.shape == (3, 10, 10) and grey.shape == (1, 10, 10)
    assert 0.0 <= float(rgb.min()) and float(rgb.max()) <= 1.0
    assert torch.equal(rgb[0], grey[0]) and torch.equal(rgb[1], grey[0])
    ref = np.asarray(adm_center_crop(Image.open(tmp_path / "g.png").convert("L"), 10), dtype=np.float32) / 255
    assert torch.allclose(grey[0], torch.from_numpy(ref))


def test_split_is_seeded_disjoint_and_complete():
    tr, va = split_indices(50, val_fraction=0.2, seed=3)
    tr2, va2 = split_indices(50, val_fraction=0.2, seed=3)
    _, va3 = split_indices(50, val_fraction=0.2, seed=4)
    assert len(va) == 10 and np.array_equal(va, va2) and not np.array_equal(va, va3)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(50))
    assert len(split_indices(50, val_count=7)[1]) == 7
    with pytest.raises(RdmxError, match="cannot hold out"):
        split_indices(5, val_count=5)


def test_separate_val_folder_uses_training_class_order(nested, tmp_path):
    val = tmp_path / "val"
    save_random_png(val / "zebra" / "v.png", 20, 20, seed=1)
    data = image_folder(nested, size=8, val_dir=val)
    assert data.num_classes == 3 and len(data.train) == 13 and len(data.val) == 1
    assert data.val[0][1].item() == 2  # zebra is the third sorted training class
    save_random_png(val / "yak" / "v.png", 20, 20, seed=2)
    with pytest.raises(RdmxError, match="yak"):
        image_folder(nested, size=8, val_dir=val)


def test_file_digest_matches_independent_hash(tmp_path):
    for size in (100, DIGEST_WINDOW + 10, 3 * DIGEST_WINDOW + 7):
        data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
        p = tmp_path / f"f{size}"
        p.write_bytes(data)
        h = hashlib.blake2b(digest_size=16)
        h.update(size.to_bytes(8, "little"))
        h.update(data if size <= 2 * DIGEST_WINDOW else data[:DIGEST_WINDOW] + data[-DIGEST_WINDOW:])
        assert file_digest(p) == h.hexdigest()


def test_fingerprint_tracks_content_names_and_preprocessing(nested, tmp_path):
    fp = image_folder(nested, size=8, val_count=3).fingerprint()
    assert image_folder(nested, size=8, val_count=3).fingerprint() == fp
    moved = tmp_path / "moved"
    shutil.copytree(nested, moved)
    assert image_folder(moved, size=8, val_count=3).fingerprint() == fp  # location-free
    assert image_folder(nested, size=16, val_count=3).fingerprint() != fp
    assert image_folder(nested, size=8, val_count=3, seed=1).fingerprint() != fp
    assert image_folder(nested, size=8, val_count=3, channels=1).fingerprint() != fp
    target = moved / "ant" / "img0.png"
    raw = bytearray(target.read_bytes())
    raw[-20] ^= 0xFF  # same size, different content
    target.write_bytes(bytes(raw))
    assert image_folder(moved, size=8, val_count=3).fingerprint() != fp
    shutil.copytree(nested, tmp_path / "renamed")
    (tmp_path / "renamed" / "ant" / "img0.png").rename(tmp_path / "renamed" / "ant" / "img9.png")
    assert image_folder(tmp_path / "renamed", size=8, val_count=3).fingerprint() != fp


def test_registration_builds_real_data(nested):
    from rdmx.data.plugin import register_datasets
    from rdmx.testing import registered_entry

    entry = registered_entry(register_datasets, "test", kind="datasets", name="image-folder")
    assert entry.name == "image-folder" and isinstance(entry.factory, str)
    data = entry.build({"path": str(nested), "size": 8, "val_count": 2})
    assert entry.declared("sample_shape", {"path": str(nested), "size": 8}) == (3, 8, 8)
    assert data.num_classes == 3 and len(data.val) == 2 and data.image_size == 8
    with pytest.raises(Exception, match="extra"):
        entry.build({"path": str(nested), "size": 8, "sizes": 3})


def test_digest_memo_skips_unchanged_files_and_sees_changed_ones(nested, tmp_path, monkeypatch):
    import rdmx.data.folder as folder_mod

    plain = image_folder(nested, size=8, val_count=3).fingerprint()
    memo = tmp_path / "memo"
    assert image_folder(nested, size=8, val_count=3, digest_memo=memo).fingerprint() == plain
    assert len(list(memo.glob("digests-*.json"))) == 1
    real_digest = folder_mod.file_digest
    reads = []
    monkeypatch.setattr(folder_mod, "file_digest", lambda p, size=None: reads.append(p.name) or real_digest(p, size))
    assert image_folder(nested, size=8, val_count=3, digest_memo=memo).fingerprint() == plain
    assert reads == []  # only stat-ed
    target = nested / "ant" / "img1.png"
    raw = bytearray(target.read_bytes())
    raw[-20] ^= 0xFF
    target.write_bytes(bytes(raw))  # same size; make sure the mtime moves even on coarse clocks
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = image_folder(nested, size=8, val_count=3, digest_memo=memo).fingerprint()
    assert reads == ["img1.png"] and changed != plain
    assert changed == image_folder(nested, size=8, val_count=3).fingerprint()


def test_registration_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, rdmx.data.plugin; print(sorted(m for m in ('torch', 'PIL', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_class_labels_name_the_folders_for_display_only(nested, tmp_path):
    from rdmx.train.build import data_info

    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("ant formica, ant\nzebra zebra\nn99 unused\n")
    data = image_folder(nested, size=8, val_count=2, class_labels=mapping)
    assert data.class_names == ("ant", "moth", "zebra") and data.display_names == ("formica", "moth", "zebra")
    assert data_info(data).class_names == ("formica", "moth", "zebra")
    plain = image_folder(nested, size=8, val_count=2)
    assert plain.fingerprint() == data.fingerprint()
    (tmp_path / "m.json").write_text('{"moth": "tiger moth, Arctia"}')
    assert image_folder(nested, size=8, val_count=2, class_labels=tmp_path / "m.json").display_names == ("ant", "tiger moth", "zebra")
    (tmp_path / "other.txt").write_text("n01 tench\n")
    with pytest.raises(RdmxError, match="names none of the class folders"):
        image_folder(nested, size=8, val_count=2, class_labels=tmp_path / "other.txt")
    with pytest.raises(RdmxError, match="cannot read"):
        image_folder(nested, size=8, val_count=2, class_labels=tmp_path / "missing.txt")
