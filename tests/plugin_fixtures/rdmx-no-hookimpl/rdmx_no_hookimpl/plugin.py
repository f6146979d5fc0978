"""The right hook name, but the @hookimpl marker is forgotten."""


def rdmx_register_encoders(register):
    register("no-hookimpl-enc", "rdmx_no_hookimpl.plugin:nothing", dim=8)
