"""Fails at import, as a plugin with a missing dependency would."""

import rdmx_this_module_does_not_exist  # noqa: F401
