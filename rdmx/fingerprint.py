"""Stable short hashes of JSON-able objects (recipes, encoder specs, datasets)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(obj: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``obj``, hex, truncated to ``length``."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]
