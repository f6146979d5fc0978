"""Joint laws: which feature the distance is computed on.

* marginal: phi(x)
* class:    [phi(x) | w * onehot(c)],       w = class_scale * sigma
* text:     [phi(x) | beta * tau(c)/|tau(c)|], beta = sigma / s_txt

sigma is the image kernel bandwidth. With these weights, two samples of different classes
(or unrelated prompts) sit about sqrt(2) * w apart in the condition coordinates, so the
kernel sees the condition at the scale of the image features and class fidelity is part of
the objective. The resolved parameters are stored in the reference (``ref.joint``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from rdmx.compare.configs import JointSpec
from rdmx.errors import RdmxError

__all__ = ["JointSpec", "resolve_joint", "combine", "joint_dim"]


def resolve_joint(spec: JointSpec, sigma: float, max_class: int | None = None) -> dict[str, Any]:
    """Frozen joint parameters for a reference whose image bandwidth is ``sigma``."""
    if spec.kind == "marginal":
        return {"kind": "marginal"}
    if spec.kind == "text":
        return {"kind": "text", "weight": float(sigma) / spec.s_txt}
    num_classes = spec.num_classes
    if num_classes is None:
        if max_class is None:
            raise RdmxError("a class-joint reference needs class ids in the data or joint.num_classes")
        num_classes = int(max_class) + 1
    return {"kind": "class", "weight": spec.class_scale * float(sigma), "num_classes": int(num_classes)}


def joint_dim(params: dict[str, Any], dim: int, cond_dim: int | None) -> int:
    if params["kind"] == "marginal":
        return dim
    if params["kind"] == "class":
        return dim + params["num_classes"]
    return dim + int(cond_dim or 0)


def combine(feats: torch.Tensor, cond: torch.Tensor | None, params: dict[str, Any]) -> torch.Tensor:
    """The joint feature of image features ``feats`` (N, d) and their conditions."""
    kind = params["kind"]
    if kind == "marginal":
        return feats
    if cond is None:
        raise RdmxError(f"this reference matches the {kind}-joint law: conditions are required")
    if cond.shape[0] != feats.shape[0]:
        raise RdmxError(f"{feats.shape[0]} features but {cond.shape[0]} conditions")
    if kind == "class":
        if cond.ndim != 1 or cond.dtype.is_floating_point:
            raise RdmxError("class-joint conditions must be integer class ids of shape (N,)")
        n = params["num_classes"]
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) >= n):
            raise RdmxError(f"class ids must lie in [0, {n}); got [{int(cond.min())}, {int(cond.max())}]")
        extra = F.one_hot(cond.long().to(feats.device), n).to(feats.dtype) * params["weight"]
    else:
        if cond.ndim != 2:
            raise RdmxError("text-joint conditions must be text embeddings of shape (N, t)")
        tau = cond.to(device=feats.device, dtype=feats.dtype)
        extra = F.normalize(tau, dim=1) * params["weight"]
    return torch.cat([feats, extra.detach()], dim=1)
