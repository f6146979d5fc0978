"""Joint laws: class and text features as specified, and what they change in the objective."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from rdmx.compare.base import ReferenceRequest
from rdmx.compare.configs import JointSpec, MMDNystromConfig
from rdmx.compare.joint import combine, resolve_joint
from rdmx.compare.mmd import MMDNystrom
from rdmx.errors import RdmxError
from rdmx.reference.bundle import build_reference


def two_class_data(n=200, seed=0):
    """Both classes share one image distribution: only the joint law can tell them apart."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 4, generator=gen)
    cls = (feats[:, 0] > 0).long()  # class is a function of the image
    return feats, cls


def build(x, cond, joint, **req):
    request = ReferenceRequest(**{"landmarks": 64, "kmeans_subsample": 10_000, "krr_subsample": 10_000, **req})

    def chunks():
        for i in range(0, len(x), 64):
            yield x[i : i + 64], cond[i : i + 64]

    return build_reference(chunks, request, joint=joint, encoder_fingerprint="e", data_fingerprint="d")


def test_class_joint_feature_is_scaled_one_hot():
    params = resolve_joint(JointSpec(kind="class", class_scale=0.5), sigma=3.0, max_class=2)
    assert params == {"kind": "class", "weight": 1.5, "num_classes": 3}
    out = combine(torch.ones(2, 2), torch.tensor([2, 0]), params)
    assert torch.equal(out, torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.5], [1.0, 1.0, 1.5, 0.0, 0.0]]))
    with pytest.raises(RdmxError, match=r"\[0, 3\)"):
        combine(torch.ones(1, 2), torch.tensor([3]), params)
    with pytest.raises(RdmxError, match="conditions are required"):
        combine(torch.ones(1, 2), None, params)


def test_text_joint_feature_is_normalised_and_weighted():
    params = resolve_joint(JointSpec(kind="text", s_txt=2.0), sigma=4.0)
    assert params == {"kind": "text", "weight": 2.0}
    tau = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    out = combine(torch.zeros(2, 3), tau, params)
    assert torch.allclose(out[:, 3:], torch.tensor([[1.2, 1.6], [0.0, -2.0]]))
    assert torch.allclose(out[:, 3:].norm(dim=1), torch.full((2,), 2.0))
    feats = torch.randn(2, 3, requires_grad=True)
    combine(feats, tau, params).sum().backward()
    assert torch.equal(feats.grad, torch.ones(2, 3))  # the condition part carries no gradient


def test_marginal_ignores_conditions():
    x = torch.randn(3, 2)
    assert combine(x, torch.tensor([0, 1, 2]), {"kind": "marginal"}) is x


def test_class_reference_lives_in_the_joint_space_and_matches_brute_force():
    x, cls = two_class_data()
    ref = build(x, cls, JointSpec(kind="class"))
    assert ref.joint["num_classes"] == 2 and ref.joint["weight"] == pytest.approx(ref.sigma)
    assert ref.landmarks.shape == (64, 6) and ref.joint_dim == 6
    # the image sigma is unaffected by the condition
    img_d2 = cdist(x.double().numpy(), x.double().numpy(), "sqeuclidean")
    assert ref.sigma == pytest.approx(np.sqrt(np.median(img_d2[np.triu_indices(200, 1)])), rel=1e-12)
    joint_x = np.concatenate([x.double().numpy(), np.eye(2)[cls.numpy()] * ref.sigma], 1)
    k = np.exp(-cdist(joint_x, joint_x, "sqeuclidean") / (2 * ref.sigma**2))
    assert float(ref.k_rr[0]) == pytest.approx(k.mean(), rel=1e-12)


def test_class_joint_loss_penalises_wrong_labels_the_marginal_cannot_see():
    x, cls = two_class_data(200)
    g, g_cls = two_class_data(100, seed=1)
    joint_ref = build(x, cls, JointSpec(kind="class", class_scale=2.0))
    est = MMDNystrom(MMDNystromConfig(landmarks=64))
    right = float(est.loss(g, joint_ref, g_cls))
    wrong = float(est.loss(g, joint_ref, 1 - g_cls))
    assert wrong > 3 * right
    marginal_ref = build(x, cls, JointSpec())
    assert float(est.loss(g, marginal_ref, g_cls)) == float(est.loss(g, marginal_ref, 1 - g_cls))


def test_text_joint_loss_penalises_mismatched_prompts():
    gen = torch.Generator().manual_seed(2)
    prompts = torch.randn(2, 8, generator=gen)
    x, cls = two_class_data(200)
    tau = prompts[cls] * 3.0  # unnormalised text embeddings: the joint feature normalises them
    ref = build(x, tau, JointSpec(kind="text", s_txt=0.5))
    assert ref.joint["weight"] == pytest.approx(2 * ref.sigma) and ref.joint_dim == 12
    g, g_cls = two_class_data(100, seed=3)
    est = MMDNystrom(MMDNystromConfig(landmarks=64))
    assert float(est.loss(g, ref, prompts[1 - g_cls])) > 2 * float(est.loss(g, ref, prompts[g_cls]))
    with pytest.raises(RdmxError, match="width 9"):
        est.loss(g, ref, torch.ones(100, 5))


def test_bank_estimators_compare_in_the_joint_space():
    from rdmx.compare.base import draw_rows
    from rdmx.compare.configs import MMDExactConfig
    from rdmx.compare.mmd import MMDExact

    x, cls = two_class_data(200)
    ref = build(x, cls, JointSpec(kind="class"), landmarks=0, bank=120)
    assert ref.bank_cond.dtype == torch.long and ref.bank_cond.shape == (120,)
    g, g_cls = two_class_data(30, seed=4)
    est = MMDExact(MMDExactConfig(bank=120))
    got = float(est.loss(g.double(), ref, g_cls, generator=torch.Generator().manual_seed(1)))
    idx = draw_rows(120, 30, torch.Generator().manual_seed(1))
    one_hot = np.eye(2) * ref.sigma
    gj = np.concatenate([g.double().numpy(), one_hot[g_cls.numpy()]], 1)
    rj = np.concatenate([ref.bank[idx].double().numpy(), one_hot[ref.bank_cond[idx].numpy()]], 1)
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * ref.sigma**2))  # noqa: E731
    assert got == pytest.approx(k(gj, gj).mean() - 2 * k(gj, rj).mean() + k(rj, rj).mean(), rel=1e-10)
