"""A hook name with a typo: rdmx_register_encoder (singular)."""

from rdmx import hookimpl


@hookimpl
def rdmx_register_encoder(register):
    register("misspelled-enc", "rdmx_misspelled_hook.plugin:nothing", dim=8)
