"""What an evaluation's numbers depend on besides the generator: its protocol, recorded in
``eval.json`` so that two results can be checked for comparability before they are compared.

:func:`eval_protocol` records the sample counts and seed, the quantisation of samples before
the encoders, every encoder's fingerprint, weights revision and resize rule, the real data and
its row rule, the metric plugins and their options, and (for information) the versions of rdmx
and the libraries. :func:`protocol_differences` lists the fields on which two protocols differ;
``versions`` never makes two results incomparable, it is reported beside them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rdmx.errors import RdmxError
from rdmx.track.base import flatten

PROTOCOL_VERSION = 1
ORDER = ("version", "n", "mmd_n", "seed", "directions", "suite", "quantize", "rff", "precision", "data",
         "reference_rows", "metrics", "prompts", "class_prompts", "text_joint", "encoders")
INFORMATIONAL = ("versions.",)  # recorded, never a reason to refuse a comparison
NOT_PROTOCOL = frozenset({"cache_dir", "device", "batch_size", "workers"})  # metric options that leave values as they are
LIBRARIES = ("torch", "torchvision", "timm", "open_clip_torch", "transformers", "diffusers", "numpy", "scipy")


def library_versions() -> dict[str, str]:
    """rdmx's version and those of the libraries that compute features, where installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("rdmx", *LIBRARIES):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def encoder_record(encoder: Any, role: str) -> dict[str, Any]:
    """An encoder's part of the protocol, from its spec (the fingerprint covers every field)."""
    spec = encoder.spec
    return {"role": role, "fingerprint": spec.fingerprint(), "checkpoint": spec.checkpoint,
            "weights": spec.weights, "revision": spec.revision, "resolution": spec.resolution,
            "resize": spec.resize if spec.resize == "none" else f"{spec.resize}{' antialias' if spec.antialias else ''}",
            "dtype": spec.dtype, "preset_version": spec.preset_version}


def banks(built: Any) -> list[str]:
    """The real sets an encoder was compared against: its evaluation banks' file names, which
    name the encoder and data fingerprints, split, rows and seed (never a machine's paths)."""
    paths = getattr(built, "paths", None) or {}
    return sorted(p.name for k, p in paths.items() if k.endswith(("_bank", "_first")))


def eval_protocol(recipe: Any, eval_config: Any, encoders: Mapping[str, Any], roles: Mapping[str, str],
                  refs: Mapping[str, Any], settings: Mapping[str, Any], metric_blocks: list[dict[str, Any]],
                  **more: Any) -> dict[str, Any]:
    """The protocol of one evaluation (``settings``: the EvalResult's, for the rows and RFF draws
    actually used; ``more``: the caller's own fields, e.g. prompts)."""
    data = sorted({getattr(b, "data_fingerprint", "") for b in refs.values()})
    return {
        "version": PROTOCOL_VERSION,
        "n": settings.get("n", eval_config.n),
        "mmd_n": settings.get("mmd_n"),
        "seed": eval_config.seed,
        "directions": eval_config.directions,
        "suite": list(eval_config.suite),
        "quantize": eval_config.quantize,
        "rff": {"features": settings.get("rff_features"), "seed": settings.get("rff_seed")},
        "precision": settings.get("precision"),
        "data": {"name": recipe.data.name, "fingerprint": data[0] if len(data) == 1 else data},
        "reference_rows": recipe.reference.rows,
        "encoders": {name: {**encoder_record(enc, roles[name]), "banks": banks(refs.get(name))}
                     for name, enc in encoders.items()},
        "metrics": metric_blocks,
        **more,
        "versions": library_versions(),
    }


def protocol_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, value in a, value in b) of every protocol field that differs, in the protocol's
    order, informational ones (``versions``) apart."""
    fa, fb = flatten(dict(a)), flatten(dict(b))
    def rank(key: str) -> tuple[int, str]:  # counts and seed before what follows from them (files are key-sorted)
        top = key.split(".", 1)[0]
        return (ORDER.index(top) if top in ORDER else len(ORDER), key)

    keys = sorted(set(fa) | set(fb), key=rank)
    return [(k, fa.get(k), fb.get(k)) for k in keys
            if fa.get(k) != fb.get(k) and not k.startswith(INFORMATIONAL)]


def version_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    va, vb = dict(a.get("versions") or {}), dict(b.get("versions") or {})
    return [(k, va.get(k), vb.get(k)) for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)]


def read_eval(path: str | Path) -> dict[str, Any]:
    """An ``eval.json`` (or a folder holding one), with its protocol; a clear error otherwise."""
    from rdmx.files import IntegrityError, read_json

    path = Path(path)
    if path.is_dir():
        path = path / "eval.json"
    if not path.is_file():
        raise RdmxError(f"{path}: no such evaluation file (rdmx eval ... --out DIR writes DIR/eval.json)")
    try:
        data = read_json(path)
    except IntegrityError as exc:
        raise RdmxError(str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RdmxError(f"{path}: not a JSON evaluation file ({exc})") from None
    if not isinstance(data, dict) or "summary" not in data:
        raise RdmxError(f"{path}: not an rdmx evaluation file (no summary)")
    if not isinstance((data.get("settings") or {}).get("protocol"), dict):
        raise RdmxError(f"{path}: records no evaluation protocol (written by an rdmx before 0.2); evaluate the "
                        f"checkpoint again to compare it")
    return data


def compare_evals(a_path: str | Path, b_path: str | Path) -> tuple[list[tuple[str, float | None, float | None]],
                                                                   list[tuple[str, Any, Any]]]:
    """(metric, value in A, value in B) rows of two comparable evaluations, and their version
    differences; refuses (naming the first differing field) when their protocols differ."""
    a, b = read_eval(a_path), read_eval(b_path)
    pa, pb = a["settings"]["protocol"], b["settings"]["protocol"]
    diffs = protocol_differences(pa, pb)
    if diffs:
        field, va, vb = diffs[0]
        more = f" (and {len(diffs) - 1} more field{'s' * (len(diffs) > 2)})" if len(diffs) > 1 else ""
        raise RdmxError(f"{a_path} and {b_path} were evaluated under different protocols: {field} = "
                        f"{json.dumps(va, default=str)} vs {json.dumps(vb, default=str)}{more}; their numbers are "
                        f"not comparable")
    sa, sb = a["summary"], b["summary"]
    rows = [(k, sa.get(k), sb.get(k)) for k in sorted(set(sa) | set(sb))]
    for enc in sorted(set(a.get("encoders", {})) | set(b.get("encoders", {}))):
        ea, eb = a["encoders"].get(enc, {}), b["encoders"].get(enc, {})
        rows += [(f"{k}/{enc}", ea.get(k), eb.get(k)) for k in sorted(set(ea) | set(eb))]
    return rows, version_differences(pa, pb)
