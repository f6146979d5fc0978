"""A valid hook that never calls register()."""

from rdmx import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    return None
