"""Hook specifications: what a plugin can add to rdmx.

A plugin is a module named by an entry point in the group ``rdmx``::

    [project.entry-points.rdmx]
    example = "rdmx_example.plugin"     # the module that defines the hooks, not the package

That module implements any of the hooks below as plain functions marked ``@hookimpl``::

    from rdmx import ComponentConfig, hookimpl

    class MyConfig(ComponentConfig):        # the options a recipe may set; strict, unknown keys refused
        width: int = 32

    @hookimpl
    def rdmx_register_encoders(register):
        register("my-encoder", "my_package.encoder:build", config=MyConfig,
                 description="one line for `rdmx list`", dim=lambda c: 4 * c.width, resolution=64)

Every ``rdmx_register_<kind>`` hook receives one argument, ``register``, with the signature
``register(name, factory, config=EmptyConfig, description="", **meta)``:

* ``name`` (str): unique per kind across rdmx and every installed plugin. A name that rdmx's
  builtins use stays theirs: the plugin that registers it registers nothing and is reported
  failed. A name two installed plugins register makes both register nothing (disable one).
* ``factory``: a callable, or a ``"module:attr"`` string imported only when a recipe builds
  the component — keep heavy imports (torch, timm, ...) out of the hook module so that
  ``rdmx list`` stays instant. The factory receives the validated config first (and the extra
  arguments each hook below names) and returns the component; returning None or raising is
  reported with the recipe label and the plugin.
* ``config``: a :class:`rdmx.ComponentConfig` subclass validating the component's options.
* ``description``: one line, shown by ``rdmx list``.
* ``**meta``: typed metadata, validated by the kind's model in :mod:`rdmx.meta` (unknown keys
  are an error naming the plugin). Values that depend on options may be functions of the
  config (``dim=lambda c: ...``).

Loading is isolated per plugin: a plugin that fails to import, names an unknown hook
(e.g. ``rdmx_register_encoder``), defines an ``rdmx_*`` function without ``@hookimpl``, or
raises in a hook registers nothing and is reported (``rdmx plugins``, ``rdmx list``, and the
"unknown name" errors of ``rdmx show`` / ``rdmx run``). A plugin that registers nothing at all
is a warning. ``RDMX_STRICT_PLUGINS=1`` turns every failure and warning into an error.
"""

from __future__ import annotations

import pluggy

PROJECT = "rdmx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

KINDS = ("encoders", "estimators", "balancers", "generators", "datasets", "metrics", "prompts", "trackers")
COMMANDS_HOOK = "rdmx_register_commands"


class RdmxSpec:
    """The hooks. Each ``rdmx_register_<kind>`` hook is called once per plugin while rdmx loads
    its plugins (``rdmx list``, ``rdmx show``, ``rdmx run``, ...), before any recipe is read.
    Hooks return nothing; they only call ``register``."""

    @hookspec
    def rdmx_register_encoders(self, register):
        """Register frozen feature extractors.

        :param register: ``register(name, factory, config=..., description=..., **meta)``.
            ``factory(config)`` returns an :class:`rdmx.represent.encoder.Encoder`: images in
            [0, 1] of any size in, ``(B, dim)`` features out, parameters frozen, gradients to
            the input only, everything that changes its features in its ``EncoderSpec``.
            ``meta``: :class:`rdmx.meta.EncoderMeta` — ``dim`` and ``resolution`` (numbers or
            functions of the config) are checked against every built encoder, so they must
            be true; ``weights``, ``weights_available``, ``weights_sources`` drive
            ``rdmx weights``; ``family``, ``checkpoint``, ``pooling``, ``role_hint``,
            ``modality``, ``context_length``, ``remote_code`` describe it.

        Check an implementation with ``rdmx.testing.check_encoder_contract(name, config)``
        and ``rdmx run RECIPE --dry-run``.
        """

    @hookspec
    def rdmx_register_estimators(self, register):
        """Register comparison estimators (distances between feature distributions).

        :param register: as above. ``factory(config)`` returns an
            :class:`rdmx.compare.base.Estimator`. ``meta``: :class:`rdmx.meta.EstimatorMeta`.
        """

    @hookspec
    def rdmx_register_balancers(self, register):
        """Register balancers (per-encoder loss weights).

        :param register: as above. ``factory(config, names)`` returns an
            :class:`rdmx.represent.balancers.Balancer` for the training encoders ``names``
            (their recipe labels). ``meta``: :class:`rdmx.meta.BalancerMeta`
            (``needs_floors=True`` when it reads the real-data floors).
        """

    @hookspec
    def rdmx_register_generators(self, register):
        """Register generators.

        :param register: as above. ``factory(config, info)`` returns an
            :class:`rdmx.train.generator.Generator`; ``info`` (:class:`rdmx.train.generator.DataInfo`)
            gives the sample shape and classes of the recipe's data. ``meta``:
            :class:`rdmx.meta.GeneratorMeta` (weights fields as for encoders, ``resolution``).
        """

    @hookspec
    def rdmx_register_datasets(self, register):
        """Register real data sources.

        :param register: as above. ``factory(config)`` returns an :class:`rdmx.data.RealData`
            (train and val splits of (sample, label), a content fingerprint). ``meta``:
            :class:`rdmx.meta.DatasetMeta` (``kind``, ``classes``, ``sample_shape``).
        """

    @hookspec
    def rdmx_register_metrics(self, register):
        """Register off-objective evaluation metrics (``[[eval.metrics]]`` in a recipe).

        :param register: as above. ``factory(config)`` returns an
            :class:`rdmx.evaluate.base.Metric`. ``meta``: :class:`rdmx.meta.MetricMeta`
            (``requires``: what the metric reads; weights fields).
        """

    @hookspec
    def rdmx_register_prompts(self, register):
        """Register prompt pools: the ordered text conditions of a text-to-image generator.

        :param register: as above. ``factory(config)`` returns a
            :class:`rdmx.data.prompts.PromptPool`. A recipe's ``[prompts]`` block names one; without
            it, the captions of captioned data are the pool. Condition ids index the pool, so the
            generator and the text-joint law read the same prompt. ``meta``:
            :class:`rdmx.meta.PromptsMeta`.
        """

    @hookspec
    def rdmx_register_trackers(self, register):
        """Register experiment trackers, chosen by a recipe's ``[tracking] backend = NAME``.

        :param register: as above. ``factory(config)`` returns an
            :class:`rdmx.track.base.Tracker`; ``config`` holds the ``[tracking]`` table's keys
            other than ``backend`` and ``run_name``. rdmx registers ``mlflow`` (the default)
            and ``none``. ``meta``: :class:`rdmx.meta.TrackerMeta`.
        """

    @hookspec
    def rdmx_register_commands(self, cli):
        """Add commands to the ``rdmx`` command line.

        :param cli: a ``typer.Typer`` app; add commands with ``@cli.command()`` or groups with
            ``cli.add_typer(...)``. Called when rdmx loads its plugins; the commands are mounted
            on ``rdmx`` (``rdmx --help`` lists them). A command name rdmx itself uses (run,
            list, ...) or another plugin uses makes the plugin register nothing. Keep heavy
            imports inside the command functions.
        """
