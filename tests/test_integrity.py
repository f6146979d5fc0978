"""Every file rdmx reads back is verified: damaged ones are refused or rebuilt, never used."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from rdmx.files import (
    IntegrityError,
    atomic_write,
    clean_stale_temps,
    load_tensors,
    load_torch,
    read_sealed_json,
    save_tensors,
    save_torch,
    write_sealed_json,
)
from rdmx.reference.extract import MANIFEST, FeatureSet, shard_name
from rdmx.train.legacy_checkpoint import load_checkpoint, save_checkpoint
from tests.test_reference_build import build, data  # noqa: F401 - the module-scoped image-folder fixture


def flip(path, offset, count=1):
    blob = bytearray(path.read_bytes())
    for i in range(count):
        blob[offset + i] ^= 0x10
    path.write_bytes(bytes(blob))


def data_offset(path):
    """First byte of a safetensors file's tensor data (after the 8-byte length and the JSON header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


# -- the helpers ------------------------------------------------------------------------
def test_sealed_json_detects_edits_and_truncation(tmp_path):
    p = write_sealed_json(tmp_path / "f.json", {"floor": 0.25, "rows": 5120})
    assert read_sealed_json(p) == {"floor": 0.25, "rows": 5120}
    obj = json.loads(p.read_text())
    obj["floor"] = 123.0
    p.write_text(json.dumps(obj))
    with pytest.raises(IntegrityError, match=r"f\.json: content does not match its checksum.*a floor.*rebuild"):
        read_sealed_json(p, what="a floor", remedy="rebuild")
    p.write_text('{"floor": 0.2')
    with pytest.raises(IntegrityError, match="not readable JSON"):
        read_sealed_json(p)
    p.write_text('{"floor": 0.2}')
    with pytest.raises(IntegrityError, match="carries no checksum"):
        read_sealed_json(p)


def test_tensors_detect_one_flipped_bit_anywhere_in_the_data(tmp_path):
    t = {"features": torch.randn(64, 16), "labels": torch.arange(64)}
    p = save_tensors(tmp_path / "b.safetensors", t, {"split": "val"})
    back, meta = load_tensors(p)
    assert meta == {"split": "val"} and all(torch.equal(back[k], t[k]) for k in t)
    start, end = data_offset(p), p.stat().st_size
    for offset in (start, (start + end) // 2, end - 1):
        save_tensors(p, t, {"split": "val"})
        blob = bytearray(p.read_bytes())
        blob[offset] ^= 0x01  # a single bit
        p.write_bytes(bytes(blob))
        with pytest.raises(IntegrityError, match="does not match its checksum"):
            load_tensors(p)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(IntegrityError, match="not a readable safetensors file"):
        load_tensors(p)


def test_torch_object_detects_flips_and_is_weights_only(tmp_path):
    obj = {"step": 3, "nan": float("nan"), "model": {"w": torch.randn(32, 32), "b": torch.zeros(32)}, "rng": torch.get_rng_state()}
    p = save_torch(tmp_path / "c.pt", obj)
    back = load_torch(p)
    assert back["step"] == 3 and torch.equal(back["model"]["w"], obj["model"]["w"])
    raw = p.read_bytes()
    pos = raw.find(obj["model"]["w"].numpy().tobytes()[:16])  # inside the tensor data of the zip
    assert pos > 0
    flip(p, pos + 5)
    with pytest.raises(IntegrityError, match="content does not match its checksum"):
        load_torch(p)
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(IntegrityError, match="not a torch file rdmx wrote"):
        load_torch(p)
    p.write_bytes(b"")
    with pytest.raises(IntegrityError, match="is empty"):
        load_torch(p)
    class Payload:  # what a crafted file carries: an object whose unpickling would run code
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, p)
    with pytest.raises(IntegrityError) as exc:
        load_torch(p)
    assert "a pickle payload); refused: rdmx never runs code" in str(exc.value)
    assert "weights_only=False" not in str(exc.value)


def test_atomic_write_leaves_nothing_on_failure_and_stale_temps_are_cleaned(tmp_path):
    def boom(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.json", boom)
    assert list(tmp_path.iterdir()) == []
    # a temp file of a dead writer (its pid is gone) and one of a live writer (this process)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".shard-00001.safetensors.tmp-{dead.stdout.strip()}-0a1b2c3d"
    live = tmp_path / f".summary.json.tmp-{os.getpid()}-0a1b2c3d"
    stale.write_text("x")
    live.write_text("x")
    assert clean_stale_temps(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


# -- checkpoints ------------------------------------------------------------------------
def test_checkpoint_with_flipped_bytes_is_refused_with_the_way_out(tmp_path):
    gen = torch.nn.Linear(64, 64)
    opt = torch.optim.AdamW(gen.parameters())
    gen(torch.randn(2, 64)).sum().backward()
    opt.step()
    p = tmp_path / "last.pt"
    save_checkpoint(p, step=7, generator=gen, optimizer=opt, balancer=None, fingerprint="fp", run_id=None)
    assert load_checkpoint(p, "fp")["step"] == 7
    pos = p.read_bytes().find(gen.weight.detach().numpy().tobytes()[:16])
    flip(p, pos + 64, count=64)
    with pytest.raises(IntegrityError, match=r"last\.pt: content does not match its checksum.*--fresh"):
        load_checkpoint(p, "fp")


# -- the reference cache: damaged pieces are rebuilt, alone -----------------------------
def test_damaged_bank_floor_and_bundle_are_rebuilt_not_used(data, tmp_path, capfd):  # noqa: F811
    _, first = build(data, tmp_path)
    a = first["a"]
    val_bank, alpha = a.val_bank.clone(), a.reference.alpha.clone()  # (loaded tensors may map the files)
    flip(a.paths["val_bank"], data_offset(a.paths["val_bank"]) + 3, count=64)
    floor = json.loads(a.paths["floor"].read_text())
    floor["floor"] = 123.0
    a.paths["floor"].write_text(json.dumps(floor))
    flip(a.paths["reference"] / "reference.safetensors", data_offset(a.paths["reference"] / "reference.safetensors") + 1)
    encoders, second = build(data, tmp_path)
    err = capfd.readouterr().err
    assert err.count("warning:") == 3 and "rebuilding it" in err
    assert second["a"].floor == first["a"].floor
    assert torch.equal(second["a"].val_bank, val_bank)
    assert torch.equal(second["a"].reference.alpha, alpha)
    assert encoders["a"].rows_seen == 0  # rebuilt from the cached features, nothing re-extracted
    assert encoders["b"].rows_seen == 0  # the untouched encoder: nothing at all


def test_damaged_or_missing_feature_shards_are_extracted_again_alone(data, tmp_path, capfd):  # noqa: F811
    _, first = build(data, tmp_path)
    a = first["a"]
    train_dir = a.paths["train_features"]
    flip(train_dir / shard_name(1), data_offset(train_dir / shard_name(1)) + 2)  # rows 7..13
    (train_dir / shard_name(3)).unlink()  # rows 21..21, while the manifest says complete
    for p in [a.paths["reference"] / MANIFEST, a.paths["floor"], a.paths["train_bank"]]:
        p.unlink()  # something must be rebuilt from the train features, so they are checked
    encoders, second = build(data, tmp_path)
    err = capfd.readouterr().err
    assert "shard-00001.safetensors: tensor data does not match its checksum" in err
    assert "shard-00003.safetensors: missing although its manifest says complete" in err
    assert encoders["a"].rows_seen == 7 + 1  # only the two damaged shards
    assert torch.equal(second["a"].reference.alpha, first["a"].reference.alpha)
    assert torch.equal(second["a"].train_bank, first["a"].train_bank)


def test_truncated_feature_manifest_is_recovered_from_the_shards(data, tmp_path, capfd):  # noqa: F811
    _, first = build(data, tmp_path)
    a = first["a"]
    val_dir = a.paths["val_features"]
    (val_dir / MANIFEST).write_text((val_dir / MANIFEST).read_text()[:30])
    a.paths["floor"].unlink()
    encoders, second = build(data, tmp_path)
    assert "manifest.json: not readable JSON" in capfd.readouterr().err
    assert encoders["a"].rows_seen == 0
    assert FeatureSet.open(val_dir).manifest["shard_rows"] == 7
    assert second["a"].floor == first["a"].floor


def test_rebuild_recomputes_outputs_from_cached_features(data, tmp_path, monkeypatch):  # noqa: F811
    import rdmx.reference.bundle as bundle_mod

    _, first = build(data, tmp_path)
    calls = []
    real = bundle_mod.build_reference
    monkeypatch.setattr(bundle_mod, "build_reference", lambda *a, **k: calls.append(1) or real(*a, **k))
    encoders, second = build(data, tmp_path, rebuild=True)
    assert calls == [1] and encoders["a"].rows_seen == encoders["b"].rows_seen == 0
    assert second["a"].floor == first["a"].floor


def test_checkpoint_contents_that_cannot_be_restored_are_one_clear_message(tmp_path):
    from rdmx.errors import RdmxError
    from rdmx.train.legacy_checkpoint import restore_generator, restore_training

    gen = torch.nn.Linear(4, 4)
    opt = torch.optim.AdamW(gen.parameters())
    good = {"step": 1, "generator": gen.state_dict(), "optimizer": opt.state_dict(), "balancer": None,
            "torch_rng": torch.get_rng_state()}
    assert restore_training(good, "c.pt", generator=gen, optimizer=opt, balancer=None) == 1
    cases = {
        "do not fit this recipe's generator": {**good, "generator": torch.nn.Linear(4, 5).state_dict()},
        "non-finite generator weights": {**good, "generator": {k: v * float("nan") for k, v in gen.state_dict().items()}},
        "has no optimizer state": {**good, "optimizer": None},
        "its torch_rng state cannot be restored": {**good, "torch_rng": torch.zeros(3, dtype=torch.uint8)},
        "its optimizer state cannot be restored": {**good, "optimizer": {"state": {}, "param_groups": []}},
    }
    for message, ckpt in cases.items():
        with pytest.raises(RdmxError, match=message):
            restore_training(ckpt, "c.pt", generator=gen, optimizer=opt, balancer=None)
    with pytest.raises(RdmxError, match="c.pt: its generator weights do not fit"):
        restore_generator(torch.nn.Linear(4, 5), good, "c.pt")


def test_unreadable_image_in_a_worker_is_one_line_naming_the_file(tmp_path):
    from PIL import Image

    from rdmx.data.folder import image_folder
    from rdmx.errors import RdmxError
    from rdmx.reference.extract import extract_features
    from rdmx.testing import tiny_conv

    for i in range(6):
        Image.new("RGB", (12, 12), (i * 20, 0, 0)).save(tmp_path / f"{i}.png")
    for i in (2, 3, 4):  # whichever lands in the train split
        (tmp_path / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    d = image_folder(tmp_path, size=12, val_count=1)
    with pytest.raises(RdmxError) as info:
        extract_features({"a": tiny_conv(0, 3, 2)}, d.train, cache_dir=tmp_path / "c", data_fingerprint="d",
                         split="train", batch_size=2, num_workers=2, progress=False)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    assert text.startswith("cannot read image") and text.split(":")[0].endswith((".png"))
