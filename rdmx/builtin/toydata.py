"""Builtin real data held in memory: scikit-learn's handwritten digits and the spiral toy."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import TensorDataset

from rdmx.fingerprint import fingerprint
from rdmx.train.generator import DataInfo


class TensorData:
    """Real data as in-memory tensors: ``train``/``val`` datasets of (sample, label)."""

    def __init__(self, name, train_x, train_y, val_x, val_y, class_names, config: dict, **extras):
        self.name = name
        self.train = TensorDataset(train_x, train_y)
        self.val = TensorDataset(val_x, val_y)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.sample_shape = tuple(train_x.shape[1:])
        self.channels = self.sample_shape[0] if len(self.sample_shape) == 3 else 0
        self.image_size = self.sample_shape[-1] if len(self.sample_shape) == 3 else 0
        self._fp = fingerprint({"data": name, **config})
        self.config = dict(config)
        self.extras = extras

    def fingerprint(self) -> str:
        return self._fp

    def info(self) -> DataInfo:
        return DataInfo(self.sample_shape, self.num_classes, self.class_names)


def build_digits(config) -> TensorData:
    """1797 real 8×8 digits, upscaled to ``image_size``; a stratified, seeded train/val split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if config.image_size != 8:
        kw = {"align_corners": False, "antialias": False} if config.resize in ("bilinear", "bicubic") else {}
        x = torch.nn.functional.interpolate(x, size=(config.image_size,) * 2, mode=config.resize, **kw)
    x = x.clamp(0, 1).repeat(1, config.channels, 1, 1)
    y = torch.as_tensor(d.target, dtype=torch.long)
    idx = np.arange(len(y))
    tr, va = train_test_split(idx, test_size=config.val_fraction, random_state=config.seed, stratify=d.target)
    tr, va = torch.as_tensor(np.sort(tr)), torch.as_tensor(np.sort(va))
    return TensorData(
        "digits", x[tr], y[tr], x[va], y[va], [str(i) for i in range(10)], config.model_dump()
    )


def spiral_curve(t: np.ndarray, turns: float, r0: float, r1: float) -> np.ndarray:
    """Noiseless spiral points for t in [0, 1]: r = r0 + r1·t, θ = turns·2π·t."""
    theta = turns * 2 * math.pi * t
    r = r0 + r1 * t
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)


def spiral_points(n: int, rng: np.random.Generator, turns: float, r0: float, r1: float, noise: float) -> np.ndarray:
    t = rng.uniform(0.0, 1.0, size=n)
    return spiral_curve(t, turns, r0, r1) + noise * rng.standard_normal((n, 2))


def spiral_embedding(dim: int, seed: int) -> np.ndarray:
    """A random orthonormal ``dim × 2`` matrix (QR of a Gaussian matrix)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, 2)))
    return q * np.sign(np.diag(r))


def build_spiral(config) -> TensorData:
    """The paper's 2-turn spiral, embedded in ``dim`` dimensions by a random orthonormal map."""
    rng = np.random.default_rng(config.seed)
    args = (config.turns, config.r0, config.r1, config.noise)
    train2 = spiral_points(config.n_train, rng, *args)
    val2 = spiral_points(config.n_val, rng, *args)
    emb = spiral_embedding(config.dim, config.embed_seed)
    tx = torch.as_tensor(train2 @ emb.T, dtype=torch.float32)
    vx = torch.as_tensor(val2 @ emb.T, dtype=torch.float32)
    return TensorData(
        "spiral", tx, -torch.ones(len(tx), dtype=torch.long), vx, -torch.ones(len(vx), dtype=torch.long),
        [], config.model_dump(), embedding=emb,
    )
