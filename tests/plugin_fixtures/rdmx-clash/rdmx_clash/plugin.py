"""Registers an encoder under a name another plugin (rdmx-example) already uses."""

from rdmx.hookspecs import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    register("example-hog", "rdmx_clash.plugin:nothing", description="clashes with rdmx-example")
