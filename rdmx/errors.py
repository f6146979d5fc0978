"""User-facing errors: the CLI prints these as one clear message, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RdmxError(Exception):
    """A mistake the user can fix (bad recipe, missing weights, mismatched bundle...)."""


class RecipeError(RdmxError):
    """A recipe is invalid; the message names the recipe path of the problem."""


class PluginError(RdmxError):
    """A plugin failed to load or registered something invalid."""


class WeightsMissingError(RdmxError):
    """A preset's pretrained weights are not in the local cache."""


class BundleMismatchError(RdmxError):
    """A reference bundle does not match the encoder or data in use."""


def close_matches(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' (did you mean: a, b?)' hint, or '' when nothing is close."""
    found = difflib.get_close_matches(str(word), list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(found)}?)" if found else ""
