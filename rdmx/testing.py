"""Helpers for testing rdmx components and plugins (rdmx's own tests and third-party plugins)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rdmx.registry import Entry


def registered_entries(hook: Callable, plugin: str, kind: str = "encoders") -> dict[str, Entry]:
    """The entries one plugin hook registers, without going through entry points."""
    got: dict[str, Entry] = {}

    def register(name, factory, config, description="", **meta):
        got[name] = Entry(kind, name, factory, config, description, plugin, "0", meta)

    hook(register)
    return got


def registered_entry(hook: Callable, plugin: str, kind: str = "encoders", name: str | None = None) -> Entry:
    """One entry a plugin hook registers: ``name``, or the only/last one."""
    entries = registered_entries(hook, plugin, kind)
    return entries[name] if name is not None else list(entries.values())[-1]


def isolate_weight_caches(tmp_path: Path, monkeypatch) -> Path:
    """Point the Hugging Face, torch-hub and XDG caches at empty folders under ``tmp_path``."""
    for var in ("HF_HUB_CACHE", "RDMX_DREAMSIM_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path
