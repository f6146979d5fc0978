"""rdmx: Representation Distribution Matching for one-step image generators.

A plugin needs two names from here: ``hookimpl`` (marks its hook functions) and
``ComponentConfig`` (base of its config models); ``Seed`` types a seed option. They are
imported on first use, so ``import rdmx`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "hookspec", "ComponentConfig", "Seed"]

_LAZY = {"hookimpl": "rdmx.hookspecs", "hookspec": "rdmx.hookspecs", "ComponentConfig": "rdmx.registry",
         "Seed": "rdmx.registry"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rdmx' has no attribute {name!r}")
