"""Evaluation never imports the training objective; registration modules stay torch-free."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import rdmx.evaluate

EVALUATE = pathlib.Path(rdmx.evaluate.__file__).parent
FORBIDDEN = ("rdmx.compare", "rdmx.train")


def _imports(path: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def test_no_module_names_the_training_objective():
    offenders = {
        p.name: sorted(m for m in _imports(p) if m.startswith(FORBIDDEN))
        for p in EVALUATE.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) >= 8  # the scan really saw the package


def _loaded_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print('\\n'.join(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_importing_all_of_evaluate_loads_no_training_module():
    modules = sorted(f"rdmx.evaluate.{p.stem}" for p in EVALUATE.glob("*.py") if p.stem != "__init__")
    loaded = _loaded_after(modules)
    assert set(modules) <= loaded
    assert sorted(m for m in loaded if m.startswith(FORBIDDEN)) == []


def test_registration_and_context_modules_are_torch_free():
    loaded = _loaded_after(["rdmx.evaluate.plugin", "rdmx.evaluate.base"])
    assert "rdmx.evaluate.plugin" in loaded and "torch" not in loaded
