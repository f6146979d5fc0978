"""Never imported by rdmx: the entry point names the package instead of this module."""

from rdmx import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    register("ep-package-enc", "rdmx_ep_package.plugin:nothing", dim=8)
