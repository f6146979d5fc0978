"""Imports fine but raises while registering; the encoder it registered first must not leak."""

from rdmx.hookspecs import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    register("half-registered", "rdmx_broken_register.plugin:nothing", description="must not appear")
    raise RuntimeError("registration exploded on purpose")
