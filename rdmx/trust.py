"""Settings that run code need the person running the command, never a recipe alone.

A component's config field marked ``json_schema_extra={"runs_code": True}`` (a full unpickle of a
weights file, a model repository's own Python) takes effect only when the command line says so:
``rdmx --trust-code ...`` or ``RDMX_TRUST_CODE=1``. A recipe is a shared document; without that,
building the component is refused in one line naming the setting and where it is, before anything
runs. ``rdmx show`` lists such settings.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from rdmx.errors import RdmxError

ENV = "RDMX_TRUST_CODE"


def code_settings(config: BaseModel | None) -> list[str]:
    """Names of the fields of ``config`` that run code and are switched on."""
    if config is None:
        return []
    out = []
    for name, field in type(config).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("runs_code") and getattr(config, name, False):
            out.append(name)
    return out


def trusted() -> bool:
    return os.environ.get(ENV, "") not in ("", "0")


def check(config: BaseModel | None, where: str) -> None:
    """Refuse a config that switches on code-running settings unless the command line trusts it."""
    names = code_settings(config)
    if names and not trusted():
        settings = ", ".join(f"{where}.{n} = true" for n in names)
        raise RdmxError(f"{settings}: this setting runs code from a file or a model repository, which a recipe "
                        f"alone cannot switch on; if you trust it, run the command with --trust-code (or "
                        f"{ENV}=1)")
