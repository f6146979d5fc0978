"""Captioned images and prompt pools: pairing, formats, split, fingerprint, and no silent drops."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from rdmx.data.captions import captioned_folder, read_pairs
from rdmx.data.folder import load_image
from rdmx.data.prompts import prompt_pool, read_prompts
from rdmx.errors import RdmxError


def png(path, seed, w=20, h=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for i in range(6):
        png(root / f"im{i}.png", i)
    png(root / "sub" / "deep.png", 9)
    return root


def jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def table(folder, tmp_path, drop=(), extra=(), name="caps.jsonl"):
    files = [f"im{i}.png" for i in range(6)] + ["sub/deep.png"]
    rows = [{"file": f, "caption": f"caption of {f}"} for f in files if f not in drop]
    return jsonl(tmp_path / name, rows + list(extra))


def test_jsonl_pairs_labels_are_caption_ids(folder, tmp_path):
    data = captioned_folder(folder, table(folder, tmp_path), size=8, val_count=2)
    assert data.captioned and data.num_classes == 0
    assert len(data.train) == 5 and len(data.val) == 2
    for split in ("train", "val"):
        ds, caps = getattr(data, split), data.captions[split]
        assert len(caps) == len(ds)
        for i in range(len(ds)):
            image, label = ds[i]
            assert label.dtype == torch.long and int(label) == i
            assert caps[i] == f"caption of {ds.files[i]}"  # the caption belongs to that image
            torch.testing.assert_close(image, load_image(folder / ds.files[i], 8))
    assert not set(data.train.files) & set(data.val.files)


def test_csv_table_and_all_pairing(folder, tmp_path):
    csv = tmp_path / "caps.csv"
    lines = ["file,caption"] + [f"im{i}.png,first {i}" for i in range(6)] + ["sub/deep.png,deep one"]
    csv.write_text("\n".join(lines + ["im0.png,second 0", 'im1.png,"with, comma"']) + "\n")
    first = read_pairs(folder, csv)
    assert first.files.count("im0.png") == 1 and first.captions[first.files.index("im0.png")] == "first 0"
    every = read_pairs(folder, csv, pairing="all")
    assert [c for f, c in zip(every.files, every.captions) if f == "im0.png"] == ["first 0", "second 0"]
    assert "with, comma" in every.captions
    data = captioned_folder(folder, csv, size=8, pairing="all", val_count=2, seed=3)
    # the split is over images: both captions of one image land on the same side
    assert not set(data.train.files) & set(data.val.files)
    assert len(data.train) + len(data.val) == 9


def test_coco_captions_read_directly(tmp_path):
    root = tmp_path / "train2014"
    ids = [42, 7, 19]
    for i in ids:
        png(root / f"COCO_train2014_{i:012d}.jpg".replace(".jpg", ".png"), i)
    coco = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.png"} for i in ids],
        "annotations": [
            {"image_id": 42, "id": 1, "caption": " A dog. "},
            {"image_id": 7, "id": 2, "caption": "A cat."},
            {"image_id": 42, "id": 3, "caption": "Another dog."},
            {"image_id": 19, "id": 4, "caption": "A bird."},
        ],
    }
    path = tmp_path / "captions_train2014.json"
    path.write_text(json.dumps(coco))
    pairs = read_pairs(root, path)
    # ordered by image id, first caption per image, stripped
    assert pairs.captions == ["A cat.", "A bird.", "A dog."]
    assert pairs.files[0] == "COCO_train2014_000000000007.png"
    assert read_pairs(root, path, pairing="all").captions == ["A cat.", "A bird.", "A dog.", "Another dog."]
    data = captioned_folder(root, path, size=8, val_path=root, val_captions=path)
    assert data.captions["train"] == data.captions["val"] == ("A cat.", "A bird.", "A dog.")


@pytest.mark.parametrize("problem, match", [
    ("no_caption", r"im3\.png has no caption"),
    ("empty", r"im2\.png \(.*caps\.jsonl:3\) has an empty caption"),
    ("missing", r"gone\.png \(.*caps\.jsonl:8\) is listed but missing"),
])
def test_every_problem_is_one_error_naming_the_file(folder, tmp_path, problem, match):
    if problem == "no_caption":
        path = table(folder, tmp_path, drop=("im3.png",))
    elif problem == "empty":
        rows = [{"file": f"im{i}.png", "caption": "" if i == 2 else f"c{i}"} for i in range(6)]
        path = jsonl(tmp_path / "caps.jsonl", rows + [{"file": "sub/deep.png", "caption": "d"}])
    else:
        path = table(folder, tmp_path, extra=[{"file": "gone.png", "caption": "lost"}])
    with pytest.raises(RdmxError, match=match):
        captioned_folder(folder, path, size=8, val_count=1)


def test_skip_counts_what_it_skipped_and_changes_the_fingerprint(folder, tmp_path):
    clean = captioned_folder(folder, table(folder, tmp_path, name="clean.jsonl"), size=8, val_count=1)
    rows = [{"file": f"im{i}.png", "caption": "  " if i == 2 else f"caption of im{i}.png"} for i in range(5)]
    rows += [{"file": "sub/deep.png", "caption": "caption of sub/deep.png"}, {"file": "nope.png", "caption": "x"}]
    bad = jsonl(tmp_path / "bad.jsonl", rows)  # im5 uncaptioned, im2 empty, nope.png missing
    with pytest.raises(RdmxError, match=r"and 2 more problem"):
        captioned_folder(folder, bad, size=8, val_count=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = captioned_folder(folder, bad, size=8, val_count=1, on_problem="skip")
    msg = " ".join(str(w.message) for w in caught)
    assert "1 image(s) without a caption" in msg and "1 empty caption(s)" in msg and "1 listed file(s) missing" in msg
    assert len(data.train) + len(data.val) == 5
    assert data.identity()["skipped"]["train"] == {"no_caption": 1, "empty_caption": 1, "missing_file": 1}
    assert data.fingerprint() != clean.fingerprint()


def test_fingerprint_covers_captions_and_pixels(folder, tmp_path):
    a = captioned_folder(folder, table(folder, tmp_path), size=8, val_count=1).fingerprint()
    assert captioned_folder(folder, table(folder, tmp_path), size=8, val_count=1).fingerprint() == a
    rows = [json.loads(line) for line in (tmp_path / "caps.jsonl").read_text().splitlines()]
    rows[0]["caption"] = "a different caption"
    assert captioned_folder(folder, jsonl(tmp_path / "c2.jsonl", rows), size=8, val_count=1).fingerprint() != a
    png(folder / "im4.png", 123)
    assert captioned_folder(folder, table(folder, tmp_path), size=8, val_count=1).fingerprint() != a


def test_bad_inputs_are_clear(folder, tmp_path):
    with pytest.raises(RdmxError, match="does not exist"):
        captioned_folder(folder, tmp_path / "none.jsonl", size=8)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"file": "im0.png", "caption": "x"}\n{nope\n')
    with pytest.raises(RdmxError, match=r"broken\.jsonl, line 2: invalid JSON"):
        captioned_folder(folder, broken, size=8)
    nokey = jsonl(tmp_path / "nokey.jsonl", [{"image": "im0.png", "caption": "x"}])
    with pytest.raises(RdmxError, match="needs a 'file' field"):
        captioned_folder(folder, nokey, size=8)
    with pytest.raises(RdmxError, match="both val_path and val_captions"):
        captioned_folder(folder, table(folder, tmp_path), size=8, val_path=folder)


def test_prompt_files_every_format(tmp_path):
    (tmp_path / "p.txt").write_text("a red cube\n\n  a blue ball  \n")
    jsonl(tmp_path / "p.jsonl", [{"prompt": "one", "tag": "x"}, {"prompt": "two"}])
    (tmp_path / "p.csv").write_text("prompt,id\nthree,1\nfour,2\n")
    (tmp_path / "list.json").write_text(json.dumps(["five", "six"]))
    coco = {"images": [], "annotations": [{"image_id": 3, "caption": "c3"}, {"image_id": 1, "caption": "c1"},
                                          {"image_id": 3, "caption": "c3b"}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert read_prompts(tmp_path / "p.txt") == ["a red cube", "a blue ball"]
    assert read_prompts(tmp_path / "p.jsonl") == ["one", "two"]
    assert read_prompts(tmp_path / "p.csv") == ["three", "four"]
    assert read_prompts(tmp_path / "list.json") == ["five", "six"]
    assert read_prompts(tmp_path / "coco.json") == ["c1", "c3"]
    pool = prompt_pool([str(tmp_path / "p.jsonl"), str(tmp_path / "p.txt")], [1, 3])
    assert pool.prompts == ("one", "two") + ("a red cube", "a blue ball") * 3
    assert pool.fingerprint() != prompt_pool(str(tmp_path / "p.jsonl")).fingerprint()


def test_empty_prompts_error_or_skip(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, {"prompt": " "}, {"prompt": None}])
    with pytest.raises(RdmxError, match=r"p\.jsonl:2: empty prompt \(and 1 more\)"):
        read_prompts(path)
    with pytest.warns(UserWarning, match="skipped 2 empty prompt"):
        assert read_prompts(path, on_empty="skip") == ["ok"]
    with pytest.raises(RdmxError, match="2 file\\(s\\) but 3 repeat"):
        prompt_pool([str(path), str(path)], [1, 2, 3])


def test_recipe_blocks_for_prompts_and_the_text_encoder_are_validated():
    import tomllib

    from rdmx.errors import RecipeError
    from rdmx.recipe import validate_recipe
    from tests.helpers import ROOT

    raw = tomllib.loads((ROOT / "recipes" / "quickstart.toml").read_text())
    bad = {**raw, "prompts": {"name": "prompt-fil", "path": "p.txt"},
           "joint": {"kind": "text", "text_encoder": {"name": "siglip2-txt"}}}
    with pytest.raises(RecipeError) as err:
        validate_recipe(bad, "r.toml")
    msg = str(err.value)
    assert "r.toml: prompts.name: unknown prompt 'prompt-fil' (did you mean: prompt-file?)" in msg
    assert "joint.text_encoder.name: unknown encoder 'siglip2-txt'" in msg
    ok = validate_recipe({**raw, "prompts": {"name": "prompt-file", "path": "p.txt", "repeat": [1]},
                          "joint": {"kind": "text", "s_txt": 2.0}}, "r.toml")
    assert ok.recipe.joint.text_encoder.name == "siglip2-text"  # the default text tower
    d = ok.to_dict()
    assert d["prompts"]["repeat"] == [1] and d["joint"]["text_encoder"]["name"] == "siglip2-text"
    with pytest.raises(RecipeError, match=r"prompts.repeats: unknown key \(did you mean: repeat"):
        validate_recipe({**raw, "prompts": {"name": "prompt-file", "path": "p.txt", "repeats": 2}}, "r.toml")
