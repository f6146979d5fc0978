"""Write resolved recipes back as TOML (TOML has no null: unset values are omitted)."""

from __future__ import annotations

from typing import Any

import tomli_w


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj if v is not None]
    return obj


def dumps(d: dict[str, Any]) -> str:
    return tomli_w.dumps(_drop_none(d), multiline_strings=False)
