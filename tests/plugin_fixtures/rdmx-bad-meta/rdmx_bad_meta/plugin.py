"""Registration metadata with an unknown key and a string where a number belongs."""

from rdmx import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    register("bad-meta-enc", "rdmx_bad_meta.plugin:nothing", dim="128", colour="red")
