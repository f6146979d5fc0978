"""Registers a builtin's name (toy-conv) next to a name of its own."""

from rdmx import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    register("clash-builtin-own", "rdmx_clash_builtin.plugin:nothing", dim=8)
    register("toy-conv", "rdmx_clash_builtin.plugin:nothing", dim=8)
