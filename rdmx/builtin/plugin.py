"""The builtin plugin: registers rdmx's own components through the public hooks.

Only torch-free modules are imported here (config models and names); factories are
``"module:attr"`` strings imported when a component is built.
"""

from __future__ import annotations

from rdmx.hookspecs import hookimpl


@hookimpl
def rdmx_register_encoders(register):
    from rdmx.builtin.registrations import register_encoders

    register_encoders(register)


@hookimpl
def rdmx_register_estimators(register):
    from rdmx.compare.plugin import register_estimators

    register_estimators(register)


@hookimpl
def rdmx_register_balancers(register):
    from rdmx.represent.balancer_plugin import register_balancers

    register_balancers(register)


@hookimpl
def rdmx_register_generators(register):
    from rdmx.builtin.registrations import register_generators

    register_generators(register)


@hookimpl
def rdmx_register_datasets(register):
    from rdmx.builtin.registrations import register_datasets

    register_datasets(register)


@hookimpl
def rdmx_register_metrics(register):
    from rdmx.builtin.registrations import register_metrics
    from rdmx.evaluate.plugin import register_metrics as register_eval_metrics

    register_metrics(register)
    register_eval_metrics(register)
