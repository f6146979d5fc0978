"""rdmx's own components, registered through the public hooks exactly like third-party plugins.

Each area is its own plugin object so that one failing area cannot hide the others. Only
torch-free modules are imported here (config models and names); factories are
``"module:attr"`` strings imported when a component is built.
"""

from __future__ import annotations

from rdmx.hookspecs import hookimpl


class Toys:
    """Toy data (digits, spiral), small generators, toy encoders, the spiral metric."""

    @hookimpl
    def rdmx_register_datasets(self, register):
        from rdmx.builtin.registrations import register_datasets

        register_datasets(register)

    @hookimpl
    def rdmx_register_generators(self, register):
        from rdmx.builtin.registrations import register_generators

        register_generators(register)

    @hookimpl
    def rdmx_register_encoders(self, register):
        from rdmx.builtin.registrations import register_encoders

        register_encoders(register)

    @hookimpl
    def rdmx_register_metrics(self, register):
        from rdmx.builtin.registrations import register_metrics

        register_metrics(register)


class Data:
    """Real image folders (flat or class-nested, ADM centre crop), captioned images, prompt pools."""

    @hookimpl
    def rdmx_register_datasets(self, register):
        from rdmx.data.plugin import register_datasets

        register_datasets(register)

    @hookimpl
    def rdmx_register_prompts(self, register):
        from rdmx.data.plugin import register_prompts

        register_prompts(register)


class Estimators:
    """The comparison axis: mmd-nystrom, mmd-exact, mmd-rff, fd, sw, drifting."""

    @hookimpl
    def rdmx_register_estimators(self, register):
        from rdmx.compare.plugin import register_estimators

        register_estimators(register)


class Balancers:
    """uniform, fixed, and the paper's proportional Lagrangian controller."""

    @hookimpl
    def rdmx_register_balancers(self, register):
        from rdmx.represent.balancer_plugin import register_balancers

        register_balancers(register)


class Metrics:
    """Off-objective evaluation metrics (SW_r, MMDr, FD)."""

    @hookimpl
    def rdmx_register_metrics(self, register):
        from rdmx.evaluate.plugin import register_metrics

        register_metrics(register)


class Tracking:
    """Experiment trackers: mlflow (the default) and none."""

    @hookimpl
    def rdmx_register_trackers(self, register):
        from rdmx.track.plugin import register_trackers

        register_trackers(register)


BUILTINS = {"builtin.toys": Toys, "builtin.data": Data, "builtin.estimators": Estimators, "builtin.balancers": Balancers,
            "builtin.metrics": Metrics,
            "builtin.tracking": Tracking}
