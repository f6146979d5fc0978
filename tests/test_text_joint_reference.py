"""The text-joint reference: (image, caption) pairs, SigLIP2 text tower, β = σ_img / s_txt,
proven against a float64 brute force of the joint feature and the Nyström quantities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.linalg import solve

from rdmx.compare.configs import JointSpec, MMDNystromConfig
from rdmx.compare.mmd import MMDNystrom
from rdmx.data.captions import captioned_folder
from rdmx.errors import RdmxError
from rdmx.plugins import get_plugins
from rdmx.reference.build import build_references
from rdmx.reference.bundle import NYSTROM_RIDGE
from rdmx.reference.floors import estimate_floor
from rdmx.reference.text import embed_texts, text_cache_path
from rdmx.testing import tiny_conv, tiny_tokenizer

COLOURS = ("red", "blue", "green", "black")
THINGS = ("cube", "ball", "cat", "tree", "boat")
N_TRAIN, N_VAL = 26, 8


def caption(i: int) -> str:
    return f"a {COLOURS[i % 4]} {THINGS[(i // 4) % 5]} number {i}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(N_TRAIN + N_VAL):
        a = rng.integers(0, 200, (14, 12, 3)) + 50 * (i % 2)
        Image.fromarray(a.astype(np.uint8)).save(root / f"{i:03d}.png")
        rows.append({"file": f"{i:03d}.png", "caption": caption(i)})
    (root / "caps.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return captioned_folder(root, root / "caps.jsonl", size=12, val_count=N_VAL, seed=1)


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    tok = tiny_tokenizer(tmp_path_factory.mktemp("tok"), [caption(i) for i in range(64)])
    return get_plugins().get("encoders", "siglip2-text").build({"tiny": True, "tokenizer": str(tok)})


class Counting(torch.nn.Module):
    """Wraps a text encoder and counts the strings it encodes."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    fingerprint = property(lambda self: self.inner.fingerprint)
    dim = property(lambda self: self.inner.dim)

    def forward(self, texts):
        self.calls += len(texts)
        return self.inner(texts)


ESTIMATOR = MMDNystrom(MMDNystromConfig(landmarks=8, kmeans_iters=0, kmeans_subsample=1000, sigma_subsample=1000,
                                        krr_subsample=1000, sigma_scale=0.25))
JOINT = JointSpec(kind="text", s_txt=1.0)


def build(data, tmp_path, text, joint=JOINT, **kw):
    enc = tiny_conv(3, 5, width=4)
    refs = build_references(data, {"e": enc}, ESTIMATOR.request(), cache_dir=tmp_path, joint=joint,
                            estimator=ESTIMATOR, floors=(3, 6), eval_rows=10, progress=False, text_encoder=text, **kw)
    return enc, refs["e"]


def brute_joint(data, enc, text, split="train", s_txt=1.0):
    """float64 [φ | β·τ] of every row of a split, σ_img and β, computed directly."""
    ds = getattr(data, split)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        phi = enc(images).double().numpy()
        tau = text(list(data.captions[split])).double().numpy()
    tau = tau / np.linalg.norm(tau, axis=1, keepdims=True)
    d2 = ((phi[:, None] - phi[None]) ** 2).sum(-1)
    sigma = float(np.sqrt(np.median(d2[np.triu_indices(len(phi), 1)]))) * 0.25
    beta = sigma / s_txt
    return np.concatenate([phi, beta * tau], 1), sigma, beta, tau


def test_bundle_equals_float64_brute_force(data, text_encoder, tmp_path):
    enc, built = build(data, tmp_path, text_encoder)
    ref = built.reference
    joint, sigma, beta, tau = brute_joint(data, enc, text_encoder)
    assert ref.joint == {"kind": "text", "weight": pytest.approx(beta, rel=1e-6)}
    assert ref.sigma == pytest.approx(sigma, rel=1e-6) and ref.rows == N_TRAIN
    assert ref.dim == 5 and ref.cond_dim == tau.shape[1] and ref.joint_dim == 5 + tau.shape[1]
    # landmarks (k-means with 0 iterations) are rows of the brute-force joint feature itself
    z = ref.landmarks.double().numpy()
    gap = np.sqrt(((z[:, None] - joint[None]) ** 2).sum(-1)).min(1)
    assert gap.max() < 1e-5
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * sigma**2))  # noqa: E731
    mu = k(z, joint).mean(1)
    alpha = solve(k(z, z) + NYSTROM_RIDGE * np.eye(len(z)), mu, assume_a="pos")
    np.testing.assert_allclose(ref.alpha[0].double().numpy(), alpha, rtol=2e-4, atol=1e-6 * np.abs(alpha).max())
    assert float(ref.k_rr[0]) == pytest.approx(k(joint, joint).mean(), rel=1e-9)
    # the floor pairs each validation image with its own (validation) caption
    val_joint, _, _, val_tau = brute_joint(data, enc, text_encoder, "val")
    val_feats = torch.from_numpy(val_joint[:, :5]).float()
    want = estimate_floor(ESTIMATOR, ref, val_feats, torch.from_numpy(val_tau).float(), draws=3, n=6, seed=0)
    assert built.floor == pytest.approx(want, rel=1e-4)
    torch.testing.assert_close(built.captions["val"].double(), torch.from_numpy(val_tau), rtol=1e-5, atol=1e-6)


def test_the_pairing_matters(data, text_encoder, tmp_path):
    """The same images with their captions shuffled make another reference."""
    _, paired = build(data, tmp_path, text_encoder)
    shuffled = captioned_folder(data.train.root, data.train.root / "caps.jsonl", size=12, val_count=N_VAL, seed=1)
    perm = np.random.default_rng(5).permutation(N_TRAIN)
    shuffled.captions = {"train": tuple(shuffled.captions["train"][i] for i in perm), "val": shuffled.captions["val"]}
    shuffled._fingerprint = "shuffled"
    _, other = build(shuffled, tmp_path, text_encoder)
    assert paired.reference.sigma == pytest.approx(other.reference.sigma)  # σ_img depends on images only
    assert not torch.allclose(paired.reference.alpha, other.reference.alpha, rtol=1e-3)


def test_caption_embeddings_are_cached_by_fingerprint(data, text_encoder, tmp_path):
    counting = Counting(text_encoder)
    build(data, tmp_path, counting)
    first = counting.calls
    assert first == len(set(data.captions["train"])) + len(set(data.captions["val"]))
    assert text_cache_path(tmp_path, text_encoder.fingerprint, data.captions["train"]).is_file()
    build(data, tmp_path, counting)
    assert counting.calls == first  # everything reused: bundle, floor and τ tables
    table = embed_texts(counting, ["x cube", "a red cube number 1", "x cube"], cache_dir=tmp_path)
    assert counting.calls == first + 2  # distinct strings only
    torch.testing.assert_close(table[0], table[2])
    torch.testing.assert_close(table.norm(dim=1), torch.ones(3))
    embed_texts(counting, ["x cube", "a red cube number 1", "x cube"], cache_dir=tmp_path)
    assert counting.calls == first + 2


def test_text_joint_needs_captions_and_a_text_encoder(data, text_encoder, tmp_path):
    from rdmx.data.folder import image_folder

    plain = image_folder(data.train.root, size=12, val_count=4)
    with pytest.raises(RdmxError, match="needs a caption for every real image"):
        build(plain, tmp_path, text_encoder)
    with pytest.raises(RdmxError, match="needs a text encoder"):
        build(data, tmp_path, None)


def test_a_damaged_caption_table_is_recomputed_not_used(data, text_encoder, tmp_path, capfd):
    counting = Counting(text_encoder)
    texts = ["x cube", "a red cube number 1"]
    good = embed_texts(counting, texts, cache_dir=tmp_path).clone()
    path = text_cache_path(tmp_path, text_encoder.fingerprint, texts)
    blob = bytearray(path.read_bytes())
    blob[-2] ^= 0x01
    path.write_bytes(bytes(blob))
    again = embed_texts(counting, texts, cache_dir=tmp_path)
    assert "does not match its checksum" in capfd.readouterr().err and counting.calls == 4
    assert torch.equal(again, good)
